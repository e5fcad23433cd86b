"""Transcript -> command event, or a reason why not.

A transcript is a command only when the recognizer is confident (average log-probability,
no-speech probability), it starts with the wake phrase when one is configured, and the
command matcher (perceptd.daemon.commands: the same one typed commands go through) accepts
its text: the action and its object must both agree with one command event, so "turn on the
fan" is nothing and "volume down" is never volume_up.
"""

from __future__ import annotations

from dataclasses import dataclass

from perceptd.daemon.commands import CommandMatch
from perceptd.daemon.commands import CommandMatcher as TextCommandMatcher
from perceptd.daemon.commands.matcher import normalise
from perceptd.daemon.events.config import EventConfig
from perceptd.daemon.messages import SPEECH_VERDICTS
from perceptd.daemon.speech.config import SpeechConfig
from perceptd.daemon.speech.engine import Transcript

REASONS = SPEECH_VERDICTS  # accepted, or why not
__all__ = ["PROMPT_MODES", "CommandMatcher", "Verdict", "build_initial_prompt", "command_prompts",
           "normalise", "recognizer_prompt", "vocabulary_prompt"]
PROMPT_MODES = ("commands", "vocabulary", "none")


@dataclass(frozen=True)
class Verdict:
    text: str  # normalised, wake phrase stripped: what goes to the text stage
    reason: str  # one of REASONS
    event: str | None = None  # best-matching command (also when rejected: explains why)
    similarity: float | None = None  # its score in [0, 1] (the command matcher's)
    margin: float | None = None  # score lead over the runner-up command
    runner_up: str | None = None
    match: CommandMatch | None = None  # the command matcher's full answer (explanation)

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


def vocabulary_prompt(events: list[EventConfig], wake_phrase: str | None, per_event: int = 2) -> str:
    """The wake phrase, then per command the words of its first action and its first
    `per_event` objects ("Turn, lights, light, play, music, song, stop, ..."): the words
    without the sentences, so the decoder knows them but is not pulled toward whole commands
    ("turn down the fan" stays the fan). Particles ("on", "up") are left out."""
    from perceptd.daemon.commands import lexicon as lx

    def content(w: str) -> bool:
        return w not in lx.FILLERS and w not in lx.EXACT

    words: list[str] = []
    for e in events:
        if e.kind != "command" or "text" not in e.modalities:
            continue
        acts = [w for a in (e.actions or [])[:1] for w in a.split() if content(w)]
        objs = [o for o in (e.objects or []) if content(o)][:per_event]
        words += [w for w in acts + objs if w not in words]
    if not words:
        return wake_phrase or ""
    vocab = ", ".join(words).capitalize() + "."
    return f"{wake_phrase}, {vocab}" if wake_phrase else vocab


def recognizer_prompt(mode: str, events: list[EventConfig], wake_phrase: str | None) -> str:
    """The decoding bias `speech.prompt` names: the command sentences, their action and object
    words, or nothing ("" = no initial_prompt)."""
    if mode == "commands":
        return build_initial_prompt(events, wake_phrase)
    if mode == "vocabulary":
        return vocabulary_prompt(events, wake_phrase)
    if mode == "none":
        return wake_phrase or ""
    raise ValueError(f"unknown speech prompt mode {mode!r} (known: {', '.join(PROMPT_MODES)})")


class CommandMatcher:
    """ASR checks and the wake phrase, then the shared command matcher on the transcript."""

    def __init__(self, cfg: SpeechConfig, events: list[EventConfig]) -> None:
        self.cfg = cfg
        self.events = events
        self.wake = normalise(cfg.wake_phrase) if cfg.wake_phrase else ""
        self.commands = [e.name for e in events if e.kind == "command" and "text" in e.modalities]
        self._matcher: TextCommandMatcher | None = None
        self._text_model: object | None = None

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

    def matcher_for(self, models) -> TextCommandMatcher:
        """The ModelSet's own command matcher (the one typed commands use: built and warmed at
        load, so the first spoken command does not pay ~0.2 s embedding the lexicon); else one
        on its text model, rebuilt when a reload swaps it."""
        shared = getattr(models, "commands", None)
        if isinstance(shared, TextCommandMatcher):
            return shared
        if self._matcher is None or self._text_model is not models.text:
            self._matcher = TextCommandMatcher(self.events, models.text.embed)
            self._text_model = models.text
        return self._matcher

    def match(self, text: str, models) -> Verdict:
        """The command matcher's verdict on normalised text (no ASR figures)."""
        if not self.commands:
            return Verdict(text, "no_match")
        m = self.matcher_for(models).match(text)
        ranked = sorted(m.scores.items(), key=lambda kv: -kv[1])
        best = m.event or m.best
        score = m.scores.get(best) if best else None
        runner = next((n for n, _ in ranked if n != best), None)
        margin = round(score - m.scores[runner], 4) if score is not None and runner else None
        return Verdict(text, m.reason, best, score, margin, runner, m)
