"""The bundle a daemon serves, and the hot swap to another one.

`load()` verifies and loads the configured bundle at start (a `current` that will not load falls
back to `previous`).  `reload()` runs on the control thread: it verifies the selected bundle at
once (a bad one is refused in the reply) and loads and warms the new ModelSet in a background
thread, then switches the reference between batches; the old sessions are released as soon as
the last batch drops them.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from perceptd.daemon.bundle import Bundle, BundleError, resolve_bundle, verify_bundle
from perceptd.daemon.errors import Refused
from perceptd.daemon.inference.models import ModelRef, ModelSet
from perceptd.daemon.priority import lower_priority

if TYPE_CHECKING:
    from perceptd.daemon.config.root import BundleConfig

log = logging.getLogger(__name__)


class ReloadRefused(Refused):
    """A reload that is not done: the bundle does not verify, or a swap is in progress."""


class Problems(Protocol):
    """Where a refused bundle is reported (health and status show it until it clears)."""

    def report(self, message: str, key: str = "other") -> None: ...
    def clear(self, key: str) -> None: ...
    def discard(self, key: str) -> bool: ...


def release_memory() -> None:
    """After a swap, hand the heap the old ModelSet used back to the OS (glibc keeps freed
    arenas otherwise), so memory returns to one bundle instead of creeping up.  The ModelSet
    itself has no reference cycles: it is freed when the last batch using it ends, without a
    gc.collect() that would hold the interpreter (and every stage) for tens of ms."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # ctypes releases the GIL: stages keep running
    except (OSError, AttributeError):  # not glibc
        pass


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class BundleSwapper:
    """Owns the ModelRef the stages read; counts swaps and keeps the last reload's state."""

    def __init__(self, selection: Callable[[], BundleConfig], loader: Callable[[Bundle], ModelSet],
                 problems: Problems, on_swapped: Callable[[], None], *,
                 lower_priority: bool) -> None:
        self._selection = selection  # the config's bundle section (a SIGHUP may change it)
        self._loader = loader
        self._problems = problems
        self._on_swapped = on_swapped  # publish health (the swap cleared a bundle error)
        self._lower_priority = lower_priority  # nice the loading thread (no ORT pool inherits it)
        self._lock = threading.Lock()
        self.ref: ModelRef | None = None
        self.swaps = 0
        self.last_swap: dict[str, Any] | None = None
        self.state: dict[str, Any] | None = None  # the last reload: loading|swapped|refused

    def current(self) -> ModelSet:
        assert self.ref is not None
        return self.ref.current()

    def load(self) -> None:
        """Verify and load the configured bundle (the slow part of a start).

        A `current` that does not verify or load (a rollback or promotion to a bundle that never
        served) falls back to `previous`, with an ERROR log and a health error that stays until
        a good bundle is swapped in, instead of a start that fails (a restart loop under
        `Restart=on-failure`).  A pinned version, or no usable `previous`, still fails the start."""
        b = self._selection()
        path = resolve_bundle(b.dir, b.version)
        try:
            self.ref = ModelRef(self._loader(verify_bundle(path)))
            return
        except Exception as exc:
            prev = b.dir / "previous"
            if b.version != "current" or not prev.exists() or prev.resolve() == path:
                raise
            error = _first_line(exc)
        log.error("event=bundle_fallback current=%s previous=%s error=%r detail='current does not "
                  "load; serving previous'", path, prev.resolve(), error)
        self.ref = ModelRef(self._loader(verify_bundle(resolve_bundle(b.dir, "previous"))))
        self._problems.report(f"bundle {path.name} (current) refused at start: {error}; serving "
                              f"previous {self.current().version}", key="bundle")

    def reload(self) -> dict[str, Any]:
        """Verify now (a bad bundle raises ReloadRefused); load and swap in the background.

        Hashing a bundle takes ~0.2 s of the caller's (control) thread: the common no-change
        reload and reloads during a swap answer without it, so a client spamming `reload`
        cannot stall it."""
        b = self._selection()
        serving = self.current()
        try:
            path = resolve_bundle(b.dir, b.version)
            if path == serving.bundle.path:
                self._problems.clear("bundle")  # the selection is back on the bundle that serves
                return {"ok": True, "model_version": serving.version, "swapped": False,
                        "detail": f"already serving {path.name}"}
            if self._lock.locked():
                raise ReloadRefused("a bundle swap is in progress; reload again when it is done")
            bundle = verify_bundle(path)
        except BundleError as exc:
            log.error("event=bundle_refused stage=verify error=%r detail='the running bundle stays'",
                      str(exc))
            self.state = {"version": None, "path": str(b.dir / b.version), "state": "refused",
                          "error": f"bundle refused: {exc}"}
            self._problems.report(f"bundle refused: {exc}", key="bundle")
            raise ReloadRefused(f"bundle refused: {exc}") from None
        if bundle.version == serving.version:
            detail = (f"same bundle version as the one serving ({bundle.version}, manifest "
                      f"version of {path.name}); nothing swapped")
            log.warning("event=reload_noop path=%s version=%s detail='same manifest version as the "
                        "serving bundle %s'", path, bundle.version, serving.bundle.path)
            return {"ok": True, "model_version": bundle.version, "swapped": False, "detail": detail}
        self.state = {"version": bundle.version, "path": str(path), "state": "loading", "error": None}
        threading.Thread(target=self._swap, args=(bundle,), name="swap", daemon=True).start()
        return {"ok": True, "model_version": bundle.version, "swapping": True}

    def _swap(self, bundle: Bundle) -> None:
        """Load and warm up the whole new ModelSet off the hot path, then switch the reference
        between batches; the old sessions are released as soon as the last batch drops them."""
        with self._lock:
            if bundle.version == self.current().version:
                if self.state and self.state.get("version") == bundle.version:
                    self.state = {**self.state, "state": "swapped"}
                return  # a burst of reloads: an earlier one already swapped to it
            if self._lower_priority:
                lower_priority(10, "swap")  # loading yields the cores to the live stages
            t0 = time.monotonic()
            try:
                new = self._loader(bundle)
            except Exception as exc:  # noqa: BLE001 - the old models keep serving
                error = _first_line(exc)
                log.error("event=swap_refused version=%s path=%s error=%r", bundle.version,
                          bundle.path, error)
                self.state = {"version": bundle.version, "path": str(bundle.path),
                              "state": "refused", "error": f"refused at load: {error}"}
                self._problems.report(f"bundle {bundle.version} refused at load: {error}", key="bundle")
                return
            t_swap = time.monotonic_ns()
            assert self.ref is not None  # a swap follows a start
            old_version = self.ref.swap(new).version  # the old ModelSet is not kept
            self.swaps += 1
            self.last_swap = {"from": old_version, "to": new.version, "t_ns": t_swap,
                              "load_s": round(time.monotonic() - t0, 3)}
            self.state = {"version": new.version, "path": str(bundle.path), "state": "swapped",
                          "error": None}
            self._problems.discard("bundle")  # published just below
            log.info("event=swapped from=%s to=%s load_s=%.2f", old_version, new.version,
                     time.monotonic() - t0)
            self._on_swapped()
        time.sleep(1.0)  # the batches in flight at the swap drop the old models by then
        release_memory()
