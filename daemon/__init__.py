"""Long-running process: sources, pipeline, fusion, events, control, health (no torch)."""
