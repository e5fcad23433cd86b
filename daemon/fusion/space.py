"""Compile the declared events into the fusion head's query tensors, calibrated on the device.

Calibration: for each event and modality, the event's best-prompt cosine is measured over a
background set of that modality (neutral sentences; the class-name vectors every image or
sound is a mixture of) and standardised, so thresholds mean the same thing for every event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from perceptd.daemon.bundle import Bundle
from perceptd.daemon.config.events import EventConfig

MODALITIES = ("vision", "face", "audio", "text")
_FACE_BACKGROUND = "vision"  # a face vector competes with what images otherwise look like


@dataclass(frozen=True)
class EventSpace:
    """Everything the head needs about the events, in config order."""

    names: tuple[str, ...]
    queries: np.ndarray  # [E,P,D] prompt embeddings, zero-padded
    prompt_mask: np.ndarray  # [E,P]
    allowed: np.ndarray  # [E,M]
    calib: np.ndarray  # [E,M,2] background (mu, sigma)
    affine: np.ndarray  # [E,2] fine-tuned (scale, bias); (1, 0) when untrained
    competes: np.ndarray  # [E,E] 1 where two events are rivals (same group), 0 on the diagonal
    floor: np.ndarray  # [E] raw cosine an event must reach (-1: none)
    margin: np.ndarray  # [E] raw cosine by which it must beat its best rival
    required: np.ndarray  # [E,M] modalities that must be present for the event to fire

    def index(self, name: str) -> int:
        return self.names.index(name)


def top_prompts(space: EventSpace, vecs: np.ndarray, prompt_texts: list[list[str]],
                k: int) -> list[list[tuple[str, float]]]:
    """Per text vector ([N,D]), the `k` nearest declared prompts as (prompt, cosine), best first.

    What a command matched, in the user's own wording; the daemon's text top and `probe` show it.
    `prompt_texts` are the events' prompts in config order (the rows of `space.queries`).
    """
    sims = np.einsum("nd,epd->nep", vecs, space.queries)
    sims = np.where(space.prompt_mask[None] > 0, sims, -np.inf)
    out = []
    for s in sims:
        flat = np.argsort(-s, axis=None)[:k]
        out.append([(prompt_texts[e][p], float(s[e, p]))
                    for e, p in (np.unravel_index(i, s.shape) for i in flat)])
    return out


def _load_npy(bundle: Bundle, relname: str) -> np.ndarray | None:
    if relname not in bundle.manifest.get("files", {}):
        return None
    return np.load(bundle.path / relname, allow_pickle=False).astype(np.float32)


def backgrounds(bundle: Bundle) -> dict[str, np.ndarray]:
    """Background vectors per modality from the bundle (text ones always exist)."""
    pre = bundle.preprocessing("fusion")
    out: dict[str, np.ndarray] = {}
    for modality, relname in pre["background"].items():
        arr = _load_npy(bundle, relname)
        if arr is not None:
            out[modality] = arr
    out.setdefault("vision", out["text"])
    out.setdefault("audio", out["text"])
    out["face"] = out[_FACE_BACKGROUND]
    return out


def _pad_prompts(per_event: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    p = max(len(q) for q in per_event)
    d = per_event[0].shape[1]
    queries = np.zeros((len(per_event), p, d), np.float32)
    mask = np.zeros((len(per_event), p), np.float32)
    for i, q in enumerate(per_event):
        queries[i, : len(q)] = q
        mask[i, : len(q)] = 1.0
    return queries, mask


def _calibrate(queries: np.ndarray, mask: np.ndarray, bg: dict[str, np.ndarray],
               min_sigma: float) -> np.ndarray:
    calib = np.zeros((queries.shape[0], len(MODALITIES), 2), np.float32)
    for m, name in enumerate(MODALITIES):
        sims = np.einsum("nd,epd->enp", bg[name], queries)
        sims = np.where(mask[:, None, :] > 0, sims, -np.inf).max(-1)  # [E,N]
        calib[:, m, 0] = sims.mean(-1)
        calib[:, m, 1] = np.maximum(sims.std(-1), min_sigma)
    return calib


def _affine(bundle: Bundle, names: list[str]) -> np.ndarray:
    aff = np.tile(np.array([[1.0, 0.0]], np.float32), (len(names), 1))
    if "calibration.json" in bundle.manifest.get("files", {}):
        table = json.loads((bundle.path / "calibration.json").read_text(encoding="utf-8"))
        for i, n in enumerate(names):
            if n in table:
                aff[i] = table[n]
    return aff


def compile_events(events: list[EventConfig], embed, bundle: Bundle) -> EventSpace:
    """`embed(list[str]) -> [N,D]` is the text model; events come from the config."""
    if not events:
        raise ValueError("no events configured")
    per_event = [embed(list(e.prompts)) for e in events]
    queries, mask = _pad_prompts(per_event)
    allowed = np.array(
        [[1.0 if m in e.modalities else 0.0 for m in MODALITIES] for e in events], np.float32
    )
    min_sigma = float(bundle.preprocessing("fusion").get("min_sigma", 0.02))
    calib = _calibrate(queries, mask, backgrounds(bundle), min_sigma)
    names = [e.name for e in events]
    groups = [e.effective_group for e in events]
    competes = np.array(
        [[1.0 if gi is not None and gi == gj and i != j else 0.0 for j, gj in enumerate(groups)]
         for i, gi in enumerate(groups)], np.float32)
    floor = np.array([e.effective_floor for e in events], np.float32)
    required = np.array(
        [[1.0 if m in e.effective_required else 0.0 for m in MODALITIES] for e in events], np.float32
    )
    margin = np.array([e.effective_margin for e in events], np.float32)
    return EventSpace(tuple(names), queries, mask, allowed, calib, _affine(bundle, names),
                      competes, floor, margin, required)
