"""Long-running process: sources, pipeline, fusion, events, control, health (no torch)."""

__version__ = "0.1.0"  # the distribution's version (perceptd.__version__ re-exports it)
