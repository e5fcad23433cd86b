"""Thread priorities: background work (recognition, model loading, bulk vision) yields the CPU
to the latency-critical path (capture, commands, fusion, publishing).

Linux gives every thread its own nice value (a native thread id is a PRIO_PROCESS target), and
threads a thread creates inherit it, so niceing the thread that starts a compute pool nices the
pool.  Best effort: where it is not supported it does nothing, and a failure is logged once.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)


def lower_priority(nice: int, what: str = "thread") -> None:
    """Make the calling thread `nice` steps nicer (at most 19); 0 does nothing."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:
        log.warning("event=nice_failed what=%s nice=%d error=%s", what, nice, exc)
