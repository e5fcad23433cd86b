"""Identifier patterns shared by config, messages and control (no imports: no cycles)."""

EVENT_NAME = r"^[a-z][a-z0-9_]{0,63}$"
