"""Event snapshots: the camera frames current when an event starts, kept in a bounded store."""
