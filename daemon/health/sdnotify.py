"""systemd notify protocol over $NOTIFY_SOCKET (a datagram socket); a no-op without it."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address = ("\0" + addr[1:]) if addr.startswith("@") else addr
        self._sock: socket.socket | None = None
        self.failures = 0
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            # never block: a manager that stopped reading must not wedge our stop() or watchdog
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def __call__(self, message: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(message.encode(), self.address)
        except OSError as exc:  # systemd gone or socket full: never fatal
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning("event=sd_notify_failed error=%s failures=%d", exc, self.failures)

    def watchdog_interval_s(self) -> float | None:
        """Half of WatchdogSec (systemd's advice), or None when the watchdog is off."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 2e6
