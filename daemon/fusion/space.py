"""Compile the declared events into the fusion head's constant tensors, on the device.

* queries: the prompts' embeddings; calibration: each event's best-prompt cosine over a
  background set of every modality (mu, sigma), for the shared-space vector path;
* class relevance and coverage (daemon/fusion/relevance.py): which ImageNet and AudioSet
  classes mean the event, the evidence that decides vision and audio;
* from_matcher: command events take their text evidence from the command matcher;
* combine: how the event's modalities add up (config `combine`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from perceptd.daemon.bundle import Bundle
from perceptd.daemon.events.config import COMBINE_MODES, EventConfig
from perceptd.daemon.fusion import relevance

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
    margin: np.ndarray  # [E] log-odds by which it must beat its best rival
    required: np.ndarray  # [E,M] modalities that must be present for the event to fire
    rel_vision: np.ndarray  # [E,1000] ImageNet classes that mean the event (0/1)
    rel_audio: np.ndarray  # [E,521] AudioSet classes that mean the event (0/1)
    coverage: np.ndarray  # [E,M] how well each classifier can see the event (0 for face, text)
    from_matcher: np.ndarray  # [E] 1: text evidence comes from the command matcher
    combine: np.ndarray  # [E,3] one-hot over COMBINE_MODES
    class_names: tuple[dict[str, tuple[str, ...]], ...] = ()  # per event: modality -> classes

    def index(self, name: str) -> int:
        return self.names.index(name)

    def per_event(self, pairs: tuple[tuple[str, float], ...]) -> np.ndarray:
        """(event name, value) pairs -> [E] in this vocabulary's order (0 where absent)."""
        out = np.zeros(len(self.names), np.float32)
        for name, value in pairs:
            if name in self.names:
                out[self.names.index(name)] = value
        return out


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
        out.append([(prompt_texts[e][p], min(1.0, max(-1.0, float(s[e, p]))))  # float noise
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


def _class_space(bundle: Bundle, bg: dict[str, np.ndarray], queries: np.ndarray,
                 mask: np.ndarray, allowed: np.ndarray
                 ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]]:
    """Per classifier modality: (relevance [E,C], coverage [E], similarity [E,C], labels).
    `bg` are the loaded backgrounds: a classifier's background is its class vectors."""
    pre = bundle.preprocessing("fusion")
    files = bundle.manifest.get("files", {})
    out = {}
    for modality in ("vision", "audio"):
        labels = bundle.labels(modality)
        if pre["background"].get(modality) not in files or not labels:
            continue  # no class vectors in this bundle (its background fell back to text)
        vecs = bg[modality]
        sims = [relevance.prompt_similarity(vecs, queries, mask)]
        # vision: also the plain names (crisp) and the descriptions' kinds ("dog breed ...")
        for key in ("vision_class_names", "vision_class_kinds") if modality == "vision" else ():
            extra = _load_npy(bundle, pre[key]) if pre.get(key) else None
            if extra is not None:
                sims.append(relevance.prompt_similarity(extra, queries, mask))
        children = None
        if modality == "audio" and pre.get("audio_hierarchy"):
            doc = json.loads(bundle.file(pre["audio_hierarchy"]).read_text(encoding="utf-8"))
            children = doc["nodes"]
        active = allowed[:, MODALITIES.index(modality)] > 0
        rel = relevance.relevance(sims, labels, relevance.SPREAD[modality], children, active)
        sim = np.maximum.reduce([t.max(1) for t in sims])
        out[modality] = (rel, relevance.coverage(sim), sim, labels)
    return out


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
    bg = backgrounds(bundle)
    calib = _calibrate(queries, mask, bg, min_sigma)
    names = [e.name for e in events]
    groups = [e.effective_group for e in events]
    competes = np.array(
        [[1.0 if gi is not None and gi == gj and i != j else 0.0 for j, gj in enumerate(groups)]
         for i, gi in enumerate(groups)], np.float32)
    required = np.array(
        [[1.0 if m in e.effective_required else 0.0 for m in MODALITIES] for e in events], np.float32
    )
    margin = np.zeros(len(events), np.float32)  # rivals: the best one's log-odds, no extra lead
    n = len(events)
    classes = _class_space(bundle, bg, queries, mask, allowed)
    rel_v = classes["vision"][0] if "vision" in classes else np.zeros((n, 1000), np.float32)
    rel_a = classes["audio"][0] if "audio" in classes else np.zeros((n, 521), np.float32)
    cov = np.zeros((n, len(MODALITIES)), np.float32)
    for modality, (_rel, c, _sim, _labels) in classes.items():
        cov[:, MODALITIES.index(modality)] = c
    for i, e in enumerate(events):
        for modality in e.class_evidence_off:
            cov[i, MODALITIES.index(modality)] = 0.0
    from_matcher = np.array([1.0 if e.kind == "command" else 0.0 for e in events], np.float32)
    combine = np.array([[1.0 if e.combine == m else 0.0 for m in COMBINE_MODES]
                        for e in events], np.float32)
    class_names = tuple(
        {m: tuple(relevance.top_classes(rel[i:i + 1], sim[i:i + 1], labels)[0])
         for m, (rel, _c, sim, labels) in classes.items()} for i in range(n))
    return EventSpace(tuple(names), queries, mask, allowed, calib, _affine(bundle, names),
                      competes, margin, required, rel_v, rel_a, cov, from_matcher, combine,
                      class_names)
