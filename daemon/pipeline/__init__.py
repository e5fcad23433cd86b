"""Pipeline plumbing: bounded queues between stages (capture, preprocess, inference, fusion)."""

from perceptd.daemon.pipeline.queues import BoundedQueue, Policy, QueueStats

__all__ = ["BoundedQueue", "Policy", "QueueStats"]
