"""Errors a user can act on: the CLI prints their message as one line, no traceback.

`UserError` is defined at the bottom of the daemon (daemon/errors.py), which raises it too
(a bad probe input, CURVE keys); the CLI side imports it from here."""

from perceptd.daemon.errors import UserError

__all__ = ["UserError"]
