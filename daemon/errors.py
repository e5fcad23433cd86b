"""Errors every room of the daemon may raise, at the bottom of the import graph."""

from __future__ import annotations


class Refused(Exception):
    """A well-formed request the daemon will not do (an unknown label, a bad bundle, a reload
    during a swap); str() is the one-line reason a client sees.  The control server answers
    it with `{"ok": false, "error": str(exc)}`."""


class UserError(Exception):
    """Bad input from the user (file, flag, value); the message names it.  The CLI prints it as
    one line, no traceback (`perceptd.errors` re-exports it for the CLI side)."""

    exit_code = 1
