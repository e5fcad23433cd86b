"""`perceptd bench --robustness`: how stable the bundle's decisions are under perturbed input.

For every clean input (the sample photos, the sample sounds, paraphrased commands) the fused
score of each event is computed through the deployed ONNX bundle exactly as `probe` does (one
modality present).  Each perturbation is applied and the same is done again:

- top event kept: the share of inputs whose highest-scoring event is unchanged;
- score drift: |perturbed - clean| fused score of the clean top event (mean and max);
- for images also the ImageNet top-1 label kept, for audio the AudioSet top-1 label kept.

Perturbations a device meets (brightness/contrast, blur, JPEG quality down to 20, small
rotations, sensor noise; white/pink noise at 20/10/5 dB SNR, gain, clipping; typos, casing,
extra words) and FGSM on the vision encoder through the PyTorch path (models/vision.py) at
eps 1/255 and 4/255: the step that most lowers the clean top event's best prompt similarity.
A figure to watch across retrains, not a gate.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from perceptd.daemon.fusion.space import MODALITIES
from perceptd.daemon.inference.models import ModelSet

REPO = Path(__file__).resolve().parent.parent
SR = 16_000

PHRASES = [
    "switch the lights on", "could you turn off the lamp", "put some music on", "stop the song",
    "make it louder", "turn it down a bit", "navigate to the office", "call my mother",
    "make it warmer in here", "kill the music", "lights off please", "play my favourite playlist",
    "directions to the nearest petrol station", "ring my wife", "there is a cat on the sofa",
    "someone is at the front door",
]


@dataclass
class Row:
    modality: str
    perturbation: str
    inputs: int = 0
    kept: int = 0
    drifts: list[float] = field(default_factory=list)
    label_kept: int | None = None
    decision_kept: int = 0  # the clean top event fires (score >= threshold_on) in both or neither

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("drifts")
        d["top_event_kept"] = self.kept / self.inputs if self.inputs else float("nan")
        d["decision_kept_rate"] = self.decision_kept / self.inputs if self.inputs else float("nan")
        d["drift_mean"] = float(np.mean(self.drifts)) if self.drifts else float("nan")
        d["drift_max"] = float(np.max(self.drifts)) if self.drifts else float("nan")
        d["label_kept_rate"] = (self.label_kept / self.inputs) if self.label_kept is not None else None
        return d


# --------------------------------------------------------------------------- scoring


def fused_scores(m: ModelSet, modality: str, vec: np.ndarray) -> np.ndarray:
    x = np.zeros((len(MODALITIES), vec.shape[-1]), np.float32)
    mask = np.zeros(len(MODALITIES), np.float32)
    x[MODALITIES.index(modality)] = vec
    mask[MODALITIES.index(modality)] = 1
    return m.fusion.fuse(x[None], mask[None], m.space).scores[0]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def image_vec(m: ModelSet, bgr: np.ndarray) -> tuple[np.ndarray, int]:
    out = m.vision.infer(m.vision.preprocess(bgr)[None])
    return out.embed[0], int(np.argmax(out.probs[0]))


def prepared_vec(m: ModelSet, rgb224: np.ndarray) -> tuple[np.ndarray, int]:
    out = m.vision.infer(rgb224[None])
    return out.embed[0], int(np.argmax(out.probs[0]))


def audio_vec(m: ModelSet, pcm: np.ndarray) -> tuple[np.ndarray, int]:
    patches = m.audio.patches(pcm)
    if len(patches) == 0:
        patches = m.audio.patches(np.concatenate([pcm, np.zeros(SR, np.float32)]))
    out = m.audio.infer(patches)
    return _unit(out.embed.mean(0)), int(np.argmax(out.scores.mean(0)))


def text_vec(m: ModelSet, text: str) -> tuple[np.ndarray, None]:
    return m.text.embed([text])[0], None


# --------------------------------------------------------------------------- perturbations


def _clip_u8(a: np.ndarray) -> np.ndarray:
    return np.clip(a, 0, 255).astype(np.uint8)


def rotate(img: np.ndarray, deg: float) -> np.ndarray:
    h, w = img.shape[:2]
    mat = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    return cv2.warpAffine(img, mat, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(enc, cv2.IMREAD_COLOR)


def image_perturbations(seed: int = 0) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    rng = np.random.default_rng(seed)

    def noise(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
        return lambda im: _clip_u8(im + rng.normal(0, sigma, im.shape))

    return {
        "brightness +40": lambda im: _clip_u8(im.astype(np.int16) + 40),
        "brightness -40": lambda im: _clip_u8(im.astype(np.int16) - 40),
        "contrast x0.5": lambda im: _clip_u8((im.astype(np.float32) - 128) * 0.5 + 128),
        "contrast x1.5": lambda im: _clip_u8((im.astype(np.float32) - 128) * 1.5 + 128),
        "blur sigma 1": lambda im: cv2.GaussianBlur(im, (0, 0), 1),
        "blur sigma 2": lambda im: cv2.GaussianBlur(im, (0, 0), 2),
        "blur sigma 4": lambda im: cv2.GaussianBlur(im, (0, 0), 4),
        "JPEG quality 50": lambda im: jpeg(im, 50),
        "JPEG quality 30": lambda im: jpeg(im, 30),
        "JPEG quality 20": lambda im: jpeg(im, 20),
        "rotate 5 deg": lambda im: rotate(im, 5),
        "rotate -10 deg": lambda im: rotate(im, -10),
        "rotate 15 deg": lambda im: rotate(im, 15),
        "sensor noise sigma 5": noise(5),
        "sensor noise sigma 10": noise(10),
        "sensor noise sigma 20": noise(20),
    }


def active_power(pcm: np.ndarray, frame: int = 400) -> float:
    """Mean power of the frames within 20 dB of the loudest (the sound, not its silent padding)."""
    n = len(pcm) // frame
    if n == 0:
        return float(np.mean(pcm**2)) + 1e-12
    p = (pcm[: n * frame].reshape(n, frame) ** 2).mean(1)
    return float(p[p >= p.max() * 0.01].mean()) + 1e-12


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return (x / x.std()).astype(np.float32)


def audio_perturbations(seed: int = 0) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    rng = np.random.default_rng(seed)

    def with_noise(kind: str, snr_db: float) -> Callable[[np.ndarray], np.ndarray]:
        def apply(pcm: np.ndarray) -> np.ndarray:
            n = len(pcm)
            base = rng.standard_normal(n).astype(np.float32) if kind == "white" else pink(n, rng)
            scale = np.sqrt(active_power(pcm) / 10 ** (snr_db / 10))
            return np.clip(pcm + scale * base, -1, 1).astype(np.float32)

        return apply

    def clip_at(frac: float) -> Callable[[np.ndarray], np.ndarray]:
        return lambda pcm: np.clip(pcm, -frac * np.abs(pcm).max(), frac * np.abs(pcm).max()) / frac

    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for kind in ("white", "pink"):
        for snr in (20, 10, 5):
            out[f"{kind} noise {snr} dB SNR"] = with_noise(kind, snr)
    out["gain -20 dB"] = lambda pcm: (pcm * 0.1).astype(np.float32)
    out["gain +12 dB (clips)"] = lambda pcm: np.clip(pcm * 3.98, -1, 1).astype(np.float32)
    out["hard clip at 30% of peak"] = lambda pcm: clip_at(0.3)(pcm).astype(np.float32)
    out["hard clip at 10% of peak"] = lambda pcm: clip_at(0.1)(pcm).astype(np.float32)
    return out


KEYS = "qwertyuiopasdfghjklzxcvbnm"


def typo(text: str, rng: random.Random, edits: int) -> str:
    chars = list(text)
    for _ in range(edits):
        idx = [i for i, c in enumerate(chars) if c.isalpha()]
        if not idx:
            break
        i = rng.choice(idx)
        op = rng.choice(["swap", "delete", "double", "replace"])
        if op == "swap" and i + 1 < len(chars):
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif op == "delete":
            del chars[i]
        elif op == "double":
            chars.insert(i, chars[i])
        else:
            k = KEYS.find(chars[i].lower())
            chars[i] = KEYS[(k + rng.choice([-1, 1])) % len(KEYS)] if k >= 0 else chars[i]
    return "".join(chars)


def text_perturbations(seed: int = 0) -> dict[str, Callable[[str], str]]:
    rng = random.Random(seed)
    return {
        "1 typo": lambda t: typo(t, rng, 1),
        "2 typos": lambda t: typo(t, rng, 2),
        "UPPER CASE": str.upper,
        "Title Case": str.title,
        "trailing '!'": lambda t: t + "!",
        "'please' added": lambda t: f"please {t}",
        "'hey, could you ... now'": lambda t: f"hey, could you {t} now",
        "filler 'um, so, like'": lambda t: f"um, so, like, {t}",
    }


# --------------------------------------------------------------------------- FGSM


class Fgsm:
    """One signed-gradient step on the 224x224 RGB input of the PyTorch vision encoder, lowering
    the best prompt similarity of the clean top event (an untargeted attack on the decision)."""

    def __init__(self, m: ModelSet) -> None:
        import torch

        from perceptd.models.vision import load_vision_encoder

        emb = np.load(m.bundle.path / "vision_class_embeddings.npy", allow_pickle=False)
        self.torch = torch
        self.model = load_vision_encoder(torch.from_numpy(emb.astype(np.float32))).eval()
        self.queries = torch.from_numpy(np.asarray(m.space.queries, np.float32))
        self.prompt_mask = torch.from_numpy(np.asarray(m.space.prompt_mask, np.float32))

    def attack(self, rgb224: np.ndarray, event: int, eps255: float, steps: int = 1) -> np.ndarray:
        """FGSM (steps=1), or its iterated form (BIM): `steps` steps of eps/steps, each kept
        within eps of the clean image; the result is rounded to uint8 as the daemon feeds it."""
        torch = self.torch
        x0 = torch.from_numpy(rgb224[None].astype(np.float32))
        x = x0.clone()
        for _ in range(steps):
            x.requires_grad_(True)
            _, _, embed = self.model(x)
            sims = (self.queries[event] @ embed[0]).masked_fill(self.prompt_mask[event] <= 0, -1e9)
            (grad,) = torch.autograd.grad(sims.max(), x)
            x = x.detach() - (eps255 / steps) * grad.sign()  # descend the similarity
            x = torch.minimum(torch.maximum(x, x0 - eps255), x0 + eps255).clamp(0, 255)
        return x[0].round().to(torch.uint8).numpy()


# --------------------------------------------------------------------------- runs


def _eval(rows: list[Row], modality: str, name: str, m: ModelSet, clean: list[tuple[np.ndarray, int | None]],
          perturbed: list[tuple[np.ndarray, int | None]], thresholds: np.ndarray) -> None:
    row = Row(modality, name, label_kept=0 if clean and clean[0][1] is not None else None)
    for (cv, cl), (pv, pl) in zip(clean, perturbed, strict=True):
        cs, ps = fused_scores(m, modality, cv), fused_scores(m, modality, pv)
        top = int(np.argmax(cs))
        row.inputs += 1
        row.kept += int(np.argmax(ps) == top)
        row.decision_kept += int((cs[top] >= thresholds[top]) == (ps[top] >= thresholds[top]))
        row.drifts.append(abs(float(ps[top] - cs[top])))
        if row.label_kept is not None:
            row.label_kept += int(cl == pl)
    rows.append(row)


def run_images(m: ModelSet, rows: list[Row], th: np.ndarray, fgsm: bool, log: Callable[[str], None]) -> None:
    photos = sorted((REPO / "samples" / "images").glob("*.jpg"))
    imgs = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in photos]
    clean = [image_vec(m, im) for im in imgs]
    for name, fn in image_perturbations().items():
        _eval(rows, "vision", name, m, clean, [image_vec(m, fn(im)) for im in imgs], th)
        log(f"vision {name}")
    if not fgsm:
        return
    attack = Fgsm(m)
    prepared = [m.vision.preprocess(im) for im in imgs]
    clean_p = [prepared_vec(m, p) for p in prepared]
    tops = [int(np.argmax(fused_scores(m, "vision", v))) for v, _ in clean_p]
    for eps, steps in ((1, 1), (4, 1), (4, 4)):
        adv = [attack.attack(p, t, eps, steps) for p, t in zip(prepared, tops, strict=True)]
        kind = "FGSM" if steps == 1 else f"iterated FGSM, {steps} steps,"
        _eval(rows, "vision", f"{kind} eps {eps}/255 (PyTorch grad, ONNX eval)", m, clean_p,
              [prepared_vec(m, a) for a in adv], th)
        log(f"vision {kind} {eps}/255")


def _siren(seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    f = 1100 + 400 * np.sin(2 * np.pi * 0.5 * t)
    return (0.5 * np.sin(2 * np.pi * np.cumsum(f) / SR)).astype(np.float32)


def run_audio(m: ModelSet, rows: list[Row], th: np.ndarray, log: Callable[[str], None]) -> None:
    from perceptd.daemon.sources.wavfile import load_audio

    clips = [load_audio(p) for p in sorted((REPO / "samples" / "audio").glob("*.wav"))
             if p.stem != "silence"] + [_siren()]
    clean = [audio_vec(m, c) for c in clips]
    for name, fn in audio_perturbations().items():
        _eval(rows, "audio", name, m, clean, [audio_vec(m, fn(c)) for c in clips], th)
        log(f"audio {name}")


def run_text(m: ModelSet, rows: list[Row], th: np.ndarray, log: Callable[[str], None]) -> None:
    clean = [text_vec(m, t) for t in PHRASES]
    for name, fn in text_perturbations().items():
        _eval(rows, "text", name, m, clean, [text_vec(m, fn(t)) for t in PHRASES], th)
        log(f"text {name}")


METHOD = """
Each clean input goes through the deployed ONNX bundle as `perceptd probe` does (one modality present,
fused by the ONNX head): **top event kept** is the share of inputs whose highest fused event is
unchanged by the perturbation, **fires/stays quiet as clean** the share whose clean top event is still
on the same side of its `threshold_on` (what the daemon would do), **drift** the absolute change of the
clean top event's fused score (0-1). Inputs: the 8 sample photos, the 4 spoken sample commands + a
synthetic siren, 16 paraphrased commands and sentences. Noise SNR is measured against the power of the
active (non-silent) part of each clip. FGSM: one signed-gradient step through the PyTorch
EfficientNet-Lite0 (models/vision.py) on the 224x224 uint8 input, lowering the clean top event's best
prompt similarity (also iterated: 4 steps of 1/255 within 4/255); the perturbed image is then scored
by the ONNX bundle.
"""


def markdown(rows: list[Row], env: dict[str, Any], seconds: float) -> str:
    lines = [
        "# Robustness of the bundle's decisions to perturbed input",
        "",
        f"Generated {env['date']} by `{env['command']}` on {env['machine']['cpu']} "
        f"({env['machine']['cores']} cores), bundle {env['bundle']}; {seconds:.0f} s. A figure to watch "
        "across retrains, not a pass/fail gate.",
        "",
        " ".join(METHOD.split()),
        "",
        "| modality | perturbation | inputs | top event kept | fires/stays quiet as clean | drift mean "
        "| drift max | top label kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r.as_dict()
        label = f"{d['label_kept_rate']:.0%}" if d["label_kept_rate"] is not None else "-"
        lines.append(f"| {r.modality} | {r.perturbation} | {r.inputs} | {d['top_event_kept']:.0%} | "
                     f"{d['decision_kept_rate']:.0%} | {d['drift_mean']:.3f} | {d['drift_max']:.3f} | "
                     f"{label} |")
    lines += ["", "Top label: ImageNet top-1 for vision, AudioSet top-1 for audio.", ""]
    return "\n".join(lines)


def main(config_path: Path, json_out: str | None = None, md_out: Path | None = None,
         fgsm: bool = True, log: Callable[[str], None] = print) -> list[Row]:
    from perceptd.bench.common import environment
    from perceptd.daemon.bundle import resolve_bundle, verify_bundle
    from perceptd.daemon.config import load_config
    from perceptd.daemon.inference.models import load_models
    from perceptd.daemon.inference.session import SessionOptions

    t0 = time.monotonic()
    cfg = load_config(config_path)
    bundle = verify_bundle(resolve_bundle(cfg.bundle.dir, cfg.bundle.version))
    m = load_models(bundle, cfg.events, SessionOptions("cpu", 2), with_face=False)
    rows: list[Row] = []
    by_name = {e.name: e.threshold_on for e in cfg.events}
    th = np.array([by_name[n] for n in m.space.names], np.float32)
    run_images(m, rows, th, fgsm, log)
    run_audio(m, rows, th, log)
    run_text(m, rows, th, log)
    env = {**environment(), "bundle": bundle.version}
    seconds = time.monotonic() - t0
    md_out = md_out or REPO / "docs" / "robustness.md"
    md_out.parent.mkdir(parents=True, exist_ok=True)
    md_out.write_text(markdown(rows, env, seconds))
    payload = {"environment": env, "rows": [r.as_dict() for r in rows]}
    Path(json_out or md_out.with_suffix(".json")).write_text(json.dumps(payload, indent=1))
    log(f"wrote {md_out}")
    return rows
