"""One shot through the ONNX bundle (never PyTorch), fused like the daemon (`perceptd probe`,
printed by perceptd/probe_cli.py; tests and benches call `run_probe`).

Per modality the top labels (and face boxes), the speech segments VAD finds with what the
recognizer heard in each and the command event it yields, and every configured event with its
fused score and modality weights; `to_json` gives one object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from perceptd.daemon.bundle import resolve_bundle, verify_bundle
from perceptd.daemon.commands.evidence import command_logodds
from perceptd.daemon.config import Config
from perceptd.daemon.errors import UserError
from perceptd.daemon.fusion.space import MODALITIES, top_prompts
from perceptd.daemon.inference.models import ModelSet, load_models
from perceptd.daemon.inference.session import SessionOptions
from perceptd.daemon.inference.vad import detect_segments
from perceptd.daemon.sources.base import SourceError
from perceptd.daemon.sources.wavfile import load_audio


@dataclass
class ProbeResult:
    modalities: dict[str, Any] = field(default_factory=dict)
    faces: list[dict[str, Any]] = field(default_factory=list)
    speech_segments: list[dict[str, Any]] = field(default_factory=list)
    speech_engine: dict[str, Any] = field(default_factory=dict)
    events: dict[str, Any] = field(default_factory=dict)
    x: np.ndarray = field(default_factory=lambda: np.zeros((len(MODALITIES), 384), np.float32))
    mask: np.ndarray = field(default_factory=lambda: np.zeros(len(MODALITIES), np.float32))
    probs_vision: np.ndarray | None = None  # the classifiers' probabilities (class evidence)
    probs_audio: np.ndarray | None = None  # per class, its highest window in the file
    text_evidence: np.ndarray | None = None  # the command matcher's log-odds per event


def _row(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else a[None]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def check_input_file(path: str | Path, option: str) -> Path:
    """One clear line for a path that cannot be an input, before any model loads."""
    import os

    p = Path(path)
    if not p.exists():
        raise UserError(f"{option} {p}: no such file")
    if p.is_dir():
        raise UserError(f"{option} {p}: is a folder, not a file")
    if not os.access(p, os.R_OK):
        raise UserError(f"{option} {p}: permission denied")
    return p


def probe_image(m: ModelSet, path: Path, top: int, res: ProbeResult,
                face_min_score: float = 0.9) -> None:
    check_input_file(path, "--image")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our line, no [ WARN ]
    try:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. a header claiming more pixels than OpenCV allows
        raise UserError(f"{path}: not a readable image ({str(exc).strip().splitlines()[-1]})") from None
    if img is None:
        raise UserError(f"{path}: not a readable image")
    out = m.vision.infer(m.vision.preprocess(img)[None])
    res.modalities["vision"] = {"top": [[lab, p] for lab, p in m.vision.top_k(out.probs[0], top)]}
    res.x[MODALITIES.index("vision")] = out.embed[0]
    res.probs_vision = out.probs[0]
    res.mask[MODALITIES.index("vision")] = 1
    if m.face is not None:
        faces = m.face.detect(img)
        res.faces = [{"box": [round(float(v), 1) for v in f.box], "score": float(f.score)}
                     for f in faces]
        faces = [f for f in faces if f.score >= face_min_score]  # evidence, as in the daemon
        if faces:
            res.modalities["face"] = {"top": [["face", float(max(f.score for f in faces))]],
                                      "count": len(faces)}
            res.x[MODALITIES.index("face")] = m.face_anchor
            res.mask[MODALITIES.index("face")] = 1


def probe_audio(m: ModelSet, path: Path, top: int, res: ProbeResult) -> np.ndarray:
    try:
        pcm = load_audio(path)
    except SourceError as exc:
        raise UserError(str(exc)) from None
    res.speech_segments = [{"start": round(s, 3), "end": round(e, 3)}
                           for s, e in detect_segments(pcm, m.vad)]
    patches = m.audio.patches(pcm)
    if len(patches) == 0:  # shorter than one 0.975 s window: pad with silence
        pad = np.zeros(16_000, np.float32)
        patches = m.audio.patches(np.concatenate([pcm, pad]))
    out = m.audio.infer(patches)
    mean_scores = out.scores.mean(0)
    res.modalities["audio"] = {
        "top": [[lab, p] for lab, p in m.audio.top_k(mean_scores, top)[0]],
        "windows": len(patches),
    }
    res.x[MODALITIES.index("audio")] = _unit(out.embed.mean(0))
    res.probs_audio = out.scores.max(0)  # was it heard anywhere in the file
    res.mask[MODALITIES.index("audio")] = 1
    return pcm


def probe_text(m: ModelSet, text: str, cfg: Config, top: int, res: ProbeResult) -> None:
    if not text.strip():
        raise UserError("--text: empty text")
    v = m.text.embed([text])[0]
    prompts = [list(e.prompts) for e in cfg.events]
    nearest = top_prompts(m.space, v[None], prompts, top)[0]
    res.modalities["text"] = {"text": text, "top": [[lab, p] for lab, p in nearest]}
    res.x[MODALITIES.index("text")] = v
    res.text_evidence = m.space.per_event(command_logodds(m, text))
    res.mask[MODALITIES.index("text")] = 1


def probe_speech(m: ModelSet, cfg: Config, pcm: np.ndarray, res: ProbeResult) -> None:
    """Transcribe each speech segment and judge it as the daemon would; a recognised
    command is fused with the file's audio vector to show the event it yields."""
    from perceptd.daemon.speech.offline import recognise
    from perceptd.daemon.speech.stage import load_engine

    for seg in res.speech_segments:
        seg.update(text=None, command=None)
    engine, reason = load_engine(cfg.speech, cfg.events)
    res.speech_engine = {"engine": engine.name if engine else None, "reason": reason or None}
    if engine is None:
        return
    from perceptd.daemon.speech.matcher import CommandMatcher

    results = recognise(pcm, m, engine, CommandMatcher(cfg.speech, cfg.events), cfg.audio)
    res.speech_segments = []
    for r in results:
        t, v = r.transcript, r.verdict
        seg = {"start": round(r.start_s, 3), "end": round(r.end_s, 3), "text": t.text,
               "avg_logprob": t.avg_logprob, "no_speech_prob": t.no_speech_prob,
               "verdict": v.reason, "similarity": v.similarity, "margin": v.margin,
               "asr_ms": round(r.asr_ms, 1), "command": None}
        if v.accepted:
            seg["command"] = _command_event(m, cfg, res, v)
        res.speech_segments.append(seg)


def _command_event(m: ModelSet, cfg: Config, res: ProbeResult, verdict) -> dict[str, Any]:
    """The accepted command fused with this file's audio (as the daemon's timeline would)."""
    x, mask = res.x.copy(), res.mask.copy()
    x[MODALITIES.index("text")] = m.text.embed([verdict.text])[0]
    mask[MODALITIES.index("text")] = 1
    te = m.space.per_event(command_logodds(m, verdict.text))
    r = m.fusion.fuse(x[None], mask[None], m.space, _row(res.probs_vision), _row(res.probs_audio),
                      te[None])
    i = m.space.index(verdict.event)
    ev = next(e for e in cfg.events if e.name == verdict.event)
    return {"event": verdict.event, "text": verdict.text, "score": float(r.scores[0, i]),
            "fires": bool(r.scores[0, i] >= ev.threshold_on),
            "weights": {mod: float(r.weights[0, i, j]) for j, mod in enumerate(MODALITIES)
                        if r.weights[0, i, j] > 0}}


def fuse(m: ModelSet, cfg: Config, res: ProbeResult) -> None:
    r = m.fusion.fuse(res.x[None], res.mask[None], m.space, _row(res.probs_vision),
                      _row(res.probs_audio), _row(res.text_evidence))
    thresholds = {e.name: e.threshold_on for e in cfg.events}
    for i, name in enumerate(m.space.names):
        weights = {mod: float(r.weights[0, i, j]) for j, mod in enumerate(MODALITIES)
                   if r.weights[0, i, j] > 0}
        res.events[name] = {
            "score": float(r.scores[0, i]),
            "weights": weights,
            "modality_scores": {mod: float(r.modality_scores[0, i, MODALITIES.index(mod)])
                                for mod in weights},
            "fires": bool(r.scores[0, i] >= thresholds[name]),
        }


def run_probe(cfg: Config, image: str | None, audio: str | None, text: str | None,
              top: int = 5, models: ModelSet | None = None,
              speech: bool = True) -> tuple[ProbeResult, ModelSet]:
    if not (image or audio or text):
        raise UserError("give at least one of --image, --audio, --text")
    if image:
        check_input_file(image, "--image")
    if audio:
        check_input_file(audio, "--audio")
    if models is None:
        bundle = verify_bundle(resolve_bundle(cfg.bundle.dir, cfg.bundle.version))
        models = load_models(bundle, cfg.events, SessionOptions(cfg.runtime.device, 2))
    res = ProbeResult(x=np.zeros((len(MODALITIES), 384), np.float32),
                      mask=np.zeros(len(MODALITIES), np.float32))
    if image:
        probe_image(models, Path(image), top, res, cfg.vision.face_min_score)
    if audio:
        pcm = probe_audio(models, Path(audio), top, res)
        if speech:
            probe_speech(models, cfg, pcm, res)
    if text is not None:
        probe_text(models, text, cfg, top, res)
    fuse(models, cfg, res)
    return res, models


def to_json(res: ProbeResult, m: ModelSet) -> dict[str, Any]:
    ranking = sorted(res.events, key=lambda n: -res.events[n]["score"])
    return {
        "model_version": m.version,
        "providers": m.providers(),
        "modalities": res.modalities,
        "faces": res.faces,
        "speech_segments": res.speech_segments,
        "speech_engine": res.speech_engine,
        "events": res.events,
        "ranking": ranking,
    }
