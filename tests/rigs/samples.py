"""Labelled samples from real media through the real bundle (what the daemon would log).

Photos from samples/images are cropped, flipped and re-lit so every sample is a different
frame; some get an audio window from samples/audio beside them.  Vectors come from the
bundle's ONNX encoders (the daemon's own wrappers), scores from its ONNX fusion head.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from perceptd.daemon.fusion.space import MODALITIES
from perceptd.daemon.inference.models import ModelSet
from perceptd.daemon.samples.record import Sample, encoder_fingerprint, new_sample_id
from perceptd.daemon.samples.store import SampleStore
from perceptd.daemon.sources.wavfile import load_audio

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "samples" / "images"
AUDIO = REPO / "samples" / "audio"


def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    s = rng.uniform(0.55, 1.0)
    ch, cw = int(h * s), int(w * s)
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = img[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    lit = crop.astype(np.float32) * rng.uniform(0.75, 1.25) + rng.uniform(-15, 15)
    return np.ascontiguousarray(np.clip(lit, 0, 255).astype(np.uint8))


def audio_windows(m: ModelSet, wav: Path) -> tuple[np.ndarray, np.ndarray, list, np.ndarray]:
    """Per 0.96 s window: shared-space vector, 1024-d embedding, top labels, probabilities."""
    out = m.audio.infer(m.audio.patches(load_audio(wav)))
    return out.embed, out.embeddings, m.audio.top_k(out.scores, 3), out.scores


def make_samples(m: ModelSet, plan: dict[str, tuple[int, list[str]]], *, seed: int = 0,
                 audio: dict[str, list[str]] | None = None, trigger: str = "label",
                 wall_ns: Callable[[str, int], int] | None = None) -> list[Sample]:
    """plan: image stem -> (count, labels).  audio: wav stem -> extra labels; every other
    sample of an image gets a window of one of those WAVs (round robin).  wall_ns(stem, i):
    when view i of that image was logged (wall clock ns; default: now), e.g. views shown at
    distinct times so that the time-block split has independent blocks."""
    rng = np.random.default_rng(seed)
    fp = encoder_fingerprint(m.bundle.manifest)
    wavs = [(stem, labels, *audio_windows(m, AUDIO / f"{stem}.wav"))
            for stem, labels in (audio or {}).items()]
    out: list[Sample] = []
    k = 0
    for stem, (count, labels) in plan.items():
        img = cv2.imread(str(IMAGES / f"{stem}.jpg"), cv2.IMREAD_COLOR)
        vis = m.vision.infer(np.stack([m.vision.preprocess(augment(img, rng)) for _ in range(count)]))
        for i in range(count):
            x = np.zeros((len(MODALITIES), 384), np.float32)
            mask = np.zeros(len(MODALITIES), np.float32)
            x[0], mask[0] = vis.embed[i], 1.0
            tops = {"vision": [[lab, p] for lab, p in m.vision.top_k(vis.probs[i], 3)]}
            sources = {"vision": "cam_a" if i % 2 == 0 else "cam_b"}
            ae = ap = None
            sample_labels = dict.fromkeys(labels, 1)
            if wavs and i % 2 == 1:
                w_stem, w_labels, emb, embeddings, wtops, wprobs = wavs[k % len(wavs)]
                j = int(rng.integers(0, len(emb)))
                x[2], mask[2] = emb[j], 1.0
                ae = embeddings[j]
                ap = wprobs[j]
                tops["audio"] = [[lab, p] for lab, p in wtops[j]]
                sources["audio"] = "mic0"
                sample_labels.update(dict.fromkeys(w_labels, 1))
                k += 1
            if not sample_labels:
                sample_labels = {"none": 1}
            scores = m.fusion.fuse(x[None], mask[None], m.space, vis.probs[i][None],
                                   None if ap is None else ap[None]).scores[0]
            wall = time.time_ns() if wall_ns is None else int(wall_ns(stem, i))
            out.append(Sample(
                id=new_sample_id(wall), created_ns=wall, t_capture_ns=time.monotonic_ns(),
                trigger=trigger, event=None, score=None, model_version=m.version, encoder_fp=fp,
                events=tuple(m.space.names), scores=scores, x=x, mask=mask, modality_names=MODALITIES,
                sources=sources, t_modalities={}, tops=tops, vision_features=vis.features[i],
                audio_embeddings=ae, vision_probs=vis.probs[i], audio_probs=ap, labels=sample_labels,
            ))
    return out


def add_to_store(store: SampleStore, samples: list[Sample]) -> None:
    for s in samples:
        reason = store.put(s)
        assert reason is None, reason


def store_dated_views(cfg, bundle_path: Path, plan: dict[str, tuple[int, list[str]]],
                      audio: dict[str, list[str]], every_s: int, seed: int = 1) -> None:
    """Labelled views of the photos in `plan`, shown in turn one every `every_s` seconds over
    the last day, into the config's sample store: independent time blocks for the retrain gate
    (a teaching scenario that can pass it)."""
    from perceptd.daemon.bundle import verify_bundle
    from perceptd.daemon.inference.models import load_models
    from perceptd.daemon.inference.session import SessionOptions

    models = load_models(verify_bundle(bundle_path), cfg.events, SessionOptions("cpu", 1), with_face=False)
    start = time.time_ns() - 24 * 3600 * 10**9

    def shown_at(stem: str, i: int) -> int:
        return start + (i * len(plan) + list(plan).index(stem)) * every_s * 10**9

    with SampleStore(cfg.samples.dir, writer=True) as store:
        add_to_store(store, make_samples(models, plan, seed=seed, audio=audio, wall_ns=shown_at))
