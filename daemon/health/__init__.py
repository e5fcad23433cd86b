"""Lifecycle state, health messages, metrics."""
