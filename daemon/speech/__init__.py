"""Spoken commands: speech segments -> on-device recognition -> confident, unambiguous commands."""
