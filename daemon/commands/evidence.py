"""A command match as fusion evidence: the matcher's per-command scores as log-odds.

The fusion head takes a command event's text evidence from here (``text_evidence`` input),
so typed and spoken commands are decided by one matcher, and the head still explains and
combines them like every other modality.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

MAX_LOGODDS = 6.0


def logodds(p: float) -> float:
    p = min(max(float(p), 1e-4), 1 - 1e-4)
    return max(-MAX_LOGODDS, min(MAX_LOGODDS, math.log(p / (1 - p))))


def scores_to_logodds(scores: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    return tuple((name, logodds(p)) for name, p in scores.items())


def command_logodds(models, text: str) -> tuple[tuple[str, float], ...]:
    """Per command event, the log-odds that `text` is that command (empty: no matcher)."""
    matcher = getattr(models, "commands", None)
    if matcher is None:
        return ()
    return scores_to_logodds(matcher.match(text).scores)
