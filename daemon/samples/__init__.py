"""On-device samples: triggers, crash-safe store, optional encryption (no torch here)."""
