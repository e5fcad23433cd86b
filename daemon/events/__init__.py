"""Event decoding: scores over time -> start / update / end phases."""
