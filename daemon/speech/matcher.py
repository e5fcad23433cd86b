"""Transcript -> command event, or a reason why not.

A transcript is a command only when the recognizer is confident (average log-probability,
no-speech probability) and its text sits clearly closest to one command event in the shared
text space: the best prompt cosine must reach a floor (the speech floor or the event's own
`min_similarity`, whichever is higher) and lead every other command event by a margin.
This is a semantic match on the same MiniLM vectors and event queries the fusion head uses,
not string similarity: "turn on the fan" is far from every prompt when only lights exist,
and "volume down" is judged against "volume up" by the margin.

Text is normalised first (lower case, no punctuation): prompts are written that way, and a
recognizer's "Turn the volume down." otherwise loses cosine to its full stop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from perceptd.daemon.config.events import EventConfig
from perceptd.daemon.messages import SPEECH_VERDICTS
from perceptd.daemon.speech.config import SpeechConfig
from perceptd.daemon.speech.engine import Transcript

REASONS = SPEECH_VERDICTS  # accepted, or why not
_NOT_WORD = re.compile(r"[^\w\s']+")


def normalise(text: str) -> str:
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


@dataclass(frozen=True)
class Verdict:
    text: str  # normalised, wake phrase stripped: what goes to the text stage
    reason: str  # one of REASONS
    event: str | None = None  # best-matching command (also when rejected: explains why)
    similarity: float | None = None  # its best prompt cosine
    margin: float | None = None  # lead over the runner-up command
    runner_up: str | None = None

    @property
    def accepted(self) -> bool:
        return self.reason == "accepted"

    def to_dict(self) -> dict:
        return {"text": self.text, "accepted": self.accepted, "reason": self.reason,
                "event": self.event, "similarity": self.similarity, "margin": self.margin,
                "runner_up": self.runner_up}


def command_prompts(events: list[EventConfig]) -> list[list[str]]:
    return [list(e.prompts) for e in events if e.kind == "command" and "text" in e.modalities]


def build_initial_prompt(events: list[EventConfig], wake_phrase: str | None,
                         max_words: int = 120) -> str:
    """The wake phrase and the command prompts, round-robin over events so that every
    command is represented when the word budget cuts (Whisper keeps ~220 prompt tokens)."""
    per_event = command_prompts(events)
    ordered = [p[i] for i in range(max((len(p) for p in per_event), default=0))
               for p in per_event if i < len(p)]
    out: list[str] = [wake_phrase] if wake_phrase else []
    words = sum(len(s.split()) for s in out)
    for phrase in ordered:
        n = len(phrase.split())
        if words + n > max_words:
            break
        out.append(phrase)
        words += n
    return ", ".join(out)


class CommandMatcher:
    """Judges transcripts against the command events of the live ModelSet's EventSpace."""

    def __init__(self, cfg: SpeechConfig, events: list[EventConfig]) -> None:
        self.cfg = cfg
        self.wake = normalise(cfg.wake_phrase) if cfg.wake_phrase else ""
        self.commands = [e.name for e in events if e.kind == "command" and "text" in e.modalities]

    def strip_wake(self, text: str) -> str | None:
        """The text after the wake phrase, or None when it does not start with it."""
        if not self.wake:
            return text
        if text == self.wake or text.startswith(self.wake + " "):
            return text[len(self.wake):].strip()
        return None

    def judge(self, tr: Transcript, models) -> Verdict:
        text = normalise(tr.text)
        rest = self.strip_wake(text)
        if rest is None:
            return Verdict(text, "no_wake_phrase")
        if not rest:
            return Verdict(rest, "empty")
        if tr.no_speech_prob is not None and tr.no_speech_prob > self.cfg.max_no_speech_prob:
            return Verdict(rest, "no_speech")
        if tr.avg_logprob is None or tr.avg_logprob < self.cfg.min_avg_logprob:
            return Verdict(rest, "low_confidence")
        return self.match(rest, models)

    def match(self, text: str, models) -> Verdict:
        """Semantic match of normalised text against the command events (no ASR figures)."""
        if not self.commands:
            return Verdict(text, "no_match")
        space = models.space
        idx = [space.index(n) for n in self.commands]
        v = models.text.embed([text])[0]
        sims = np.einsum("d,epd->ep", v, space.queries[idx])
        best = np.where(space.prompt_mask[idx] > 0, sims, -np.inf).max(-1)  # [C]
        order = np.argsort(-best)
        win = int(order[0])
        sim = float(best[win])
        runner = int(order[1]) if len(order) > 1 else None
        margin = sim - float(best[runner]) if runner is not None else 2.0
        floor = max(self.cfg.min_similarity, float(space.floor[idx[win]]))
        reason = ("no_match" if sim < floor else
                  "ambiguous" if margin < self.cfg.min_margin else "accepted")
        return Verdict(text, reason, self.commands[win], round(sim, 4), round(margin, 4),
                       self.commands[runner] if runner is not None else None)
