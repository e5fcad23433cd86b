"""Benchmarks: every figure is measured side by side in one run, written as JSON + a plot."""
