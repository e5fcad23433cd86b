"""Errors a user can act on: the CLI prints their message as one line, no traceback."""


class UserError(Exception):
    """Bad input from the user (file, flag, value); the message names it."""

    exit_code = 1
