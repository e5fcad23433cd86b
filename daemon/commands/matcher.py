"""Text (typed or transcribed) -> command event, or a reason why not: one matcher for both.

A command is an action on an object, and both must agree. Each command event declares (or
derives from its prompts) three phrase lists:

* `actions` ("turn on", "switch on") and `objects` ("lights", "lamp"): the utterance must
  contain one phrase of each;
* `cues` ("too dark", "brighter") and the prompts themselves: phrases that ask for the
  command on their own; every word of one must be present.

Words are compared in the MiniLM text space one word at a time (the encoder embeds each
unseen word once; a cache keeps them), so "tunes" finds "music" and "hear" finds "listen",
while "television" stays far from "lights". Particles and function words ("on"/"off",
"up"/"down", "to", "it") are compared exactly, because the text space puts "turn on" and
"turn off" next to each other. A phrase's evidence is its weakest word's similarity.

Then the phrase must be a request made now: a question ("are the lights on"), a negation
("don't turn on the lights"), a statement ("the lights are on": actions and objects no longer
count, nor cues with a particle such as "lights on"; "it's too dark" still does), another
time or a condition ("yesterday", "when I get home"), someone else as the subject, or a
verb in the past ("I turned on the lights") issue nothing, unless the matched cue itself
holds the word ("can't hear"). A word naming another device ("oven", "tv") that the
command's own words do not explain vetoes it.

The evidence e in [0, 1] becomes a probability-like score sigmoid(k (e - floor)); the best
event is accepted when it reaches the floor and leads every rival by a margin.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from perceptd.daemon.commands import lexicon as lx
from perceptd.daemon.events.config import EventConfig

_NOT_WORD = re.compile(r"[^\w\s']+")
WORD_FLOOR = 0.70  # a word's cosine to a declared word that counts as the same word
ONE_WORD_CUE = 0.9  # a cue of one word ("darker") is not found by a neighbour ("dark")
OTHER_FLOOR = 0.72  # a word this close to another device vetoes a command that does not explain it
MARGIN = 0.05  # evidence lead of the accepted event over the best rival
SLOPE = 25.0  # evidence -> score steepness
_OPENERS = frozenset({"hey", "ok", "okay", "so", "well", "oh", "um", "uh", "and", "but", "please", "now"})


def normalise(text: str) -> str:
    """Lower case, no punctuation but apostrophes, single spaces (prompts are written so)."""
    return " ".join(_NOT_WORD.sub(" ", text.lower().replace("\u2019", "'")).split())


def tokens(text: str) -> list[str]:
    """Normalised words with a recognizer's homophones mapped ("lites", "turn of the lights")."""
    words = [lx.HOMOPHONES.get(w, w) for w in normalise(text).split()]
    return ["off" if w == "of" and i and words[i - 1] in lx.OFF_AFTER else w
            for i, w in enumerate(words)]


def _phrase_words(phrase: str) -> tuple[str, ...]:
    out: list[str] = []
    for w in tokens(phrase):
        if w in lx.FILLERS or lx._NUMBER.match(w) or w in out:
            continue
        out.append(w)
    return tuple(out)


def _is_content(w: str) -> bool:
    return w not in lx.FILLERS and w not in lx.EXACT and not lx._NUMBER.match(w)


@dataclass(frozen=True)
class CommandMatch:
    text: str  # normalised text that was judged
    event: str | None  # the accepted command event, None when rejected
    reason: str  # "accepted" | "no_match" | "ambiguous"
    best: str | None  # best candidate even when rejected (explanation)
    scores: dict[str, float]  # per command event: probability-like score in [0, 1]
    detail: dict[str, object] = field(default_factory=dict)  # matched phrases, similarities, gates

    @property
    def accepted(self) -> bool:
        return self.reason == "accepted"


@dataclass
class _Command:
    name: str
    actions: list[tuple[str, ...]]
    objects: list[tuple[str, ...]]
    cues: list[tuple[str, ...]]
    words: frozenset[str]  # every word of its phrases


def _phrases(items: list[str] | None) -> list[tuple[str, ...]]:
    out = []
    for p in items or []:
        w = _phrase_words(p)
        if w and w not in out:
            out.append(w)
    return out


class CommandMatcher:
    """Judges normalised text against the command events (those with the text modality)."""

    def __init__(self, events: list[EventConfig], embed: Callable[[list[str]], np.ndarray]) -> None:
        self.embed = embed
        self.commands: list[_Command] = []
        for e in events:
            if e.kind != "command" or "text" not in e.modalities:
                continue
            cues = _phrases(list(e.cues or []) + list(e.prompts))
            acts, objs = _phrases(e.actions), _phrases(e.objects)
            words = frozenset(w for ps in (acts, objs, cues) for p in ps for w in p)
            self.commands.append(_Command(e.name, acts, objs, cues, words))
        self.names = [c.name for c in self.commands]
        vocab = sorted({w for c in self.commands for w in c.words})
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}
        self.content = np.array([_is_content(w) for w in vocab], bool)
        self.past = np.array([w.endswith("ed") for w in vocab], bool)
        dim = 384
        self.cache: dict[str, np.ndarray] = {}
        content_words = [w for w in vocab if _is_content(w)]
        other = [w for w in lx.OTHER_THINGS]
        vecs = self._embed_words(content_words + other)
        dim = vecs.shape[1] if len(vecs) else dim
        self.vocab_vecs = np.zeros((len(vocab), dim), np.float32)
        for w in content_words:
            self.vocab_vecs[self.index[w]] = self.cache[w]
        self.other_vecs = np.stack([self.cache[w] for w in other]) if other else np.zeros((0, dim))
        # per command: phrase -> vocab indices (for the vectorised phrase scores)
        self._idx = [{k: [np.array([self.index[w] for w in p]) for p in getattr(c, k)]
                      for k in ("actions", "objects", "cues")} for c in self.commands]
        self._mask = [np.array([w in c.words for w in vocab], bool) for c in self.commands]

    # ------------------------------------------------------------------ word vectors

    def _embed_words(self, words: list[str]) -> np.ndarray:
        new = [w for w in dict.fromkeys(words) if w not in self.cache]
        if new:
            if len(self.cache) > 20_000:
                self.cache.clear()
            for w, v in zip(new, np.asarray(self.embed(new), np.float32), strict=True):
                self.cache[w] = v / max(float(np.linalg.norm(v)), 1e-9)
        return np.stack([self.cache[w] for w in words]) if words else np.zeros((0, 384), np.float32)

    # ------------------------------------------------------------------ matching

    def match(self, text: str) -> CommandMatch:
        return self.match_many([text])[0]

    def match_many(self, texts: list[str]) -> list[CommandMatch]:
        toks = [tokens(t) for t in texts]
        self._embed_words([w for ts in toks for w in ts if _is_content(w)])
        return [self._judge(ts) for ts in toks]

    def _sims(self, ts: list[str]) -> np.ndarray:
        """[V, n] similarity of every vocabulary word to every token."""
        v, n = len(self.vocab), len(ts)
        sims = np.zeros((v, n), np.float32)
        for j, w in enumerate(ts):
            if w in self.index:
                sims[self.index[w], j] = 1.0
            if not _is_content(w):
                continue
            col = self.vocab_vecs @ self.cache[w]
            col[~self.content] = 0.0
            if w.endswith("ed") and len(w) > 4:  # "turned": a report, not a request
                col[~self.past] = 0.0
            sims[:, j] = np.maximum(sims[:, j], col)
        return sims

    def _judge(self, ts: list[str]) -> CommandMatch:
        text = " ".join(ts)
        if not self.commands or not ts:
            return CommandMatch(text, None, "no_match", None, dict.fromkeys(self.names, 0.0),
                                {"why": "empty" if not ts else "no command events"})
        sims = self._sims(ts)
        best_sim = sims.max(1)
        best_pos = sims.argmax(1)
        content = [j for j, w in enumerate(ts) if _is_content(w)]
        other = (self.other_vecs @ np.stack([self.cache[ts[j]] for j in content]).T).max(0) \
            if content and len(self.other_vecs) else np.zeros(len(content))
        gates = self._gates(ts)
        past = {w for w in ts if w.endswith("ed") and len(w) > 4 and _is_content(w) and w not in self.index
                and float((self.vocab_vecs[self.content] @ self.cache[w]).max(initial=0.0)) >= WORD_FLOOR}
        if past:  # "I turned on the lights": a report, not a request
            gates["past"] = past
        raw, ev, details = [], [], []
        for ci, c in enumerate(self.commands):
            got = {}
            blocked_cue: list[str] = []
            for kind, plist in self._idx[ci].items():
                if not plist:
                    got[kind] = (0.0, None)
                    continue
                scores = [float(best_sim[ix].min()) for ix in plist]
                if kind == "cues":  # a one-word cue decides alone: it must be heard as itself
                    scores = [sc if len(ix) > 1 or sc >= ONE_WORD_CUE else min(sc, WORD_FLOOR - 0.05)
                              for sc, ix in zip(scores, plist, strict=True)]
                    # the best cue that no uncovered gate blocks, else the best
                    blocks = [[g for g, ws in gates.items() if not ws & set(p)
                               and (g != "statement" or lx.PARTICLES & set(p))] for p in c.cues]
                    free = [sc if not b else -1.0 for sc, b in zip(scores, blocks, strict=True)]
                    k = int(np.argmax(free)) if max(free) >= WORD_FLOOR else int(np.argmax(scores))
                    blocked_cue = blocks[k]
                else:
                    k = int(np.argmax(scores))
                got[kind] = (scores[k], k)
            slot = min(got["actions"][0], got["objects"][0]) if c.actions else 0.0
            if slot >= WORD_FLOOR:  # action and object must be heard in different words
                slot = self._distinct(sims, ci, c, got)
            cue = got["cues"][0]
            blocked_slot = list(gates)
            foreign = [ts[j] for j, o in zip(content, other, strict=True)
                       if o >= OTHER_FLOOR and sims[self._mask[ci], j].max(initial=0.0) < WORD_FLOOR]
            e_slot = 0.0 if blocked_slot or foreign else slot
            e_cue = 0.0 if blocked_cue or foreign else cue
            r = max(slot, cue)
            e = max(e_slot, e_cue)
            raw.append(r)
            ev.append(e if e >= WORD_FLOOR else min(e if e > 0 else r, WORD_FLOOR - 0.02))
            d: dict[str, object] = {"evidence": round(float(ev[-1]), 3), "raw": round(float(r), 3)}
            for kind in ("actions", "objects", "cues"):
                s, k = got[kind]
                if k is not None:
                    phrase = getattr(c, kind)[k]
                    d[kind[:-1]] = {"phrase": " ".join(phrase), "sim": round(s, 3),
                                    "heard": [ts[int(best_pos[self.index[w]])] for w in phrase]}
            if r >= WORD_FLOOR and e < WORD_FLOOR:
                d["rejected_by"] = sorted(set(blocked_slot if slot >= cue else blocked_cue)) + \
                    [f"other_thing:{w}" for w in foreign]
            details.append(d)
        ev_arr = np.array(ev)
        scores = {n: _score(float(x)) for n, x in zip(self.names, ev_arr, strict=True)}
        order = np.argsort(-ev_arr)
        top = int(order[0])
        best = self.names[int(np.argmax(raw))] if max(raw) > 0 else None
        detail: dict[str, object] = {"gates": sorted(gates), "per_event": dict(zip(self.names, details,
                                                                                   strict=True))}
        if ev_arr[top] < WORD_FLOOR:
            return CommandMatch(text, None, "no_match", best, scores, detail)
        best = self.names[top]
        runner = float(ev_arr[order[1]]) if len(order) > 1 else 0.0
        if runner >= WORD_FLOOR and ev_arr[top] - runner < MARGIN:
            detail["runner_up"] = self.names[int(order[1])]
            capped = {n: min(s, 0.49) for n, s in scores.items()}
            return CommandMatch(text, None, "ambiguous", best, capped, detail)
        capped = {n: (s if n == best else min(s, 0.49)) for n, s in scores.items()}
        if len(order) > 1:
            detail["runner_up"] = self.names[int(order[1])]
        return CommandMatch(text, best, "accepted", best, capped, detail)

    def _distinct(self, sims: np.ndarray, ci: int, c: _Command, got: dict) -> float:
        """min(action, object) with no token serving as both ("noise" is no sound + quieter)."""
        best_pos = sims.argmax(1)
        a_pos = {int(best_pos[i]) for i in self._idx[ci]["actions"][got["actions"][1]]}
        o_pos = {int(best_pos[i]) for i in self._idx[ci]["objects"][got["objects"][1]]}
        shared = a_pos & o_pos
        if not shared:
            return min(got["actions"][0], got["objects"][0])
        keep = np.ones(sims.shape[1], bool)
        keep[list(shared)] = False
        rest = sims[:, keep].max(1) if keep.any() else np.zeros(sims.shape[0], np.float32)

        def best(kind: str, table: np.ndarray) -> float:
            return max(float(table[ix].min()) for ix in self._idx[ci][kind])

        a, o = got["actions"][0], got["objects"][0]
        return max(min(a, best("objects", rest)), min(best("actions", rest), o))

    @staticmethod
    def _gates(ts: list[str]) -> dict[str, set[str]]:
        """Why this is not a request now -> the words that say so."""
        gates: dict[str, set[str]] = {}
        first = next((w for w in ts if w not in _OPENERS), "")
        k = ts.index(first) if first else 0
        exclaim = first == "what" and k + 1 < len(ts) and ts[k + 1] in ("a", "an")  # "what a song"
        if first in lx.QUESTION_START and not exclaim:
            gates["question"] = {first}
        for name, words in (("negation", lx.NEGATION), ("statement", lx.COPULA),
                            ("other_time", lx.OTHER_TIME), ("other_subject", lx.OTHER_SUBJECT)):
            hit = {w for w in ts if w in words}
            if hit:
                gates[name] = hit
        return gates


def _score(e: float) -> float:
    return round(1.0 / (1.0 + math.exp(-SLOPE * (e - WORD_FLOOR))), 4)
