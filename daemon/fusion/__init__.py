"""Fusion on the shared space: compile declared events, run the ONNX fusion head."""
