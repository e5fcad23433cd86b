"""One handler per control request type: command, status, label, reload, shadow.

Each handler answers on the control thread at once; the work it starts runs elsewhere (a command
is queued for the text stage, a bundle swap loads in its own thread).  A handler that will not
do a request raises `perceptd.daemon.errors.Refused` (the server replies `ok: false`).  What the
handlers reach is named by the small Protocols below, so this module imports no stage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from perceptd.daemon.control.requests import CommandRequest, LabelRequest, ShadowRequest
from perceptd.daemon.control.server import HandlerRegistry
from perceptd.daemon.errors import Refused


class CommandInbox(Protocol):
    def submit(self, text: str, origin: str) -> int: ...  # queued; returns its capture time (ns)


class Labels(Protocol):
    """The sample logger's control-thread side; refusals raise a `Refused`."""

    def known_label(self, event: str) -> bool: ...
    def capture(self, event: str) -> str: ...  # log the current context labelled `event`
    def label(self, sample_id: str, event: str) -> None: ...


class Reloader(Protocol):
    def reload(self) -> dict[str, Any]: ...


class Shadows(Protocol):
    """The shadow of a candidate bundle (daemon/shadow.py); refusals raise a `Refused`."""

    def start(self, version: str, minutes: float | None = None) -> dict[str, Any]: ...
    def stop(self) -> dict[str, Any]: ...
    def report(self) -> dict[str, Any] | None: ...


class ControlHandlers:
    def __init__(self, commands: CommandInbox, labels: Labels, reloader: Reloader,
                 status: Callable[[], dict[str, Any]], shadow: Shadows | None = None) -> None:
        self._commands = commands
        self._labels = labels
        self._reloader = reloader
        self._status = status
        self._shadow = shadow

    def register(self, reg: HandlerRegistry) -> HandlerRegistry:
        reg.register("command", self.command)
        reg.register("status", self.status)
        reg.register("reload", self.reload)
        reg.register("label", self.label)
        reg.register("shadow", self.shadow)
        return reg

    def command(self, req: CommandRequest) -> dict[str, Any]:
        t = self._commands.submit(req.text, "control")
        return {"ok": True, "queued": True, "t_capture_ns": t}

    def status(self, _req: object) -> dict[str, Any]:
        return {"ok": True, **self._status()}

    def label(self, req: LabelRequest) -> dict[str, Any]:
        """Label a logged sample, or (sample "now") log the current context with the label."""
        if not self._labels.known_label(req.event):
            raise Refused(f"unknown event {req.event!r} (not in the configuration)")
        if req.sample == "now":
            sid = self._labels.capture(req.event)
        else:
            sid = req.sample
            self._labels.label(sid, req.event)
        return {"ok": True, "sample": sid, "event": req.event}

    def reload(self, _req: object) -> dict[str, Any]:
        return self._reloader.reload()

    def shadow(self, req: ShadowRequest) -> dict[str, Any]:
        """Start a shadow (`version`), stop it (`stop`), or report on it (neither)."""
        if self._shadow is None:
            raise Refused("shadow is not available in this daemon")
        if req.stop and req.version is not None:
            raise Refused("shadow: give either version (start) or stop, not both")
        if req.stop:
            return self._shadow.stop()
        if req.version is not None:
            return self._shadow.start(req.version, req.minutes)
        return {"ok": True, "shadow": self._shadow.report()}
