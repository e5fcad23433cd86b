"""Accuracy on real, licensed media: are the events right?

Runs the ONNX bundle exactly as the daemon does (the audio stage's 0.96 s windows, one fusion
row per window or photo, the event decoder's hysteresis for background audio) over the media
that `scripts/fetch_media.py` extracts from packages at set-up (media/manifest.json, sources
and licences in samples/LICENSES.md).  Reported:

* sounds: per default event precision, recall, F1 over clips, and the confusion matrix
  (true class x events fired);
* photos: the same for the vision events;
* fused pairs: a photo and a sound in one fusion row, where the modalities agree and where they
  contradict;
* prompt-only sound events (declared by prompt alone in a test vocabulary): how many clips fire
  their own event and no other;
* background audio (room tone, speech, TV-like): false fires per hour through the decoder;
* the fusion tick's cost with the default vocabulary.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perceptd.bench.common import environment, write_json

REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO / "media"
SR = 16_000
HOP_S = 0.48

# sound class (media label) -> the default event it must raise; every other class raises none
SOUND_EVENTS = {
    "dog": "dog_barking", "cat": "cat_present", "speech": "speech", "music": "music_playing",
    "doorbell": "doorbell", "alarm": "alarm_sounding", "glass_breaking": "glass_breaking",
    "vehicle": "vehicle_nearby", "baby": "baby_crying",
}
# recordings that really hold a second event (checked by ear and by the tagger's top labels)
ALSO_RIGHT = {
    "tuxpaint_firetruck.wav": {"vehicle_nearby"},  # a fire engine passing: vehicle and siren
    "scratch_motorcyclepassing.wav": {"alarm_sounding"},  # a motorcycle passing with its siren
}
# photos whose scene label does not say what the default vocabulary means
IMAGE_OVERRIDES = {
    "skimage_rocket.jpg": None,  # a rocket on its launch pad: no vehicle_nearby for a home
}
# photo scene -> the default event it must raise
IMAGE_EVENTS = {"cat": "cat_present", "dog": "dog_present", "vehicle": "vehicle_nearby",
                "person": "person_present"}
# sound events declared by prompt alone (no training), one per class of the media set
PROMPT_ONLY = {
    "dog": ["a dog barking"], "cat": ["a cat meowing"], "cow": ["a cow mooing"],
    "horse": ["a horse neighing"], "duck": ["a duck quacking"], "chicken": ["a rooster crowing"],
    "pig": ["a pig oinking"], "sheep": ["a sheep bleating"], "bird": ["birds chirping"],
    "doorbell": ["the doorbell rings"], "alarm": ["an alarm is going off"],
    "glass_breaking": ["glass shattering"], "dishes": ["dishes clattering"],
    "water": ["running water"], "toilet_flush": ["a toilet flushing"],
    "laughter": ["people laughing"], "music": ["music playing"], "speech": ["a person speaking"],
    "vehicle": ["a car engine"], "door": ["a door slamming"], "baby": ["a baby crying"],
}
# background kinds -> events that are right there (speech is speech, TV-like has music)
BACKGROUND_ALLOWED = {"room_tone": set(), "speech": {"speech"}, "music": {"music_playing"},
                      "tv": {"speech", "music_playing"}}


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str
    probs: np.ndarray  # [W,521] per 0.96 s window
    embed: np.ndarray  # [W,384]


def manifest() -> dict[str, Any]:
    path = MEDIA / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: run scripts/setup.sh (it fetches the evaluation media)")
    return json.loads(path.read_text(encoding="utf-8"))


def load_wav(path: Path) -> np.ndarray:
    from perceptd.daemon.sources.wavfile import load_audio

    return load_audio(path)


def audio_windows(m, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The audio stage's windows: [W,521] probabilities and [W,384] vectors."""
    patches = m.audio.patches(pcm)
    if len(patches) == 0:
        patches = m.audio.patches(np.concatenate([pcm, np.zeros(SR, np.float32)]))
    out = m.audio.infer(patches)
    return out.scores, out.embed


def image_row(m, path: Path, face_min_score: float = 0.9) -> dict[str, Any]:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(path)
    out = m.vision.infer(m.vision.preprocess(img)[None])
    faces = [f for f in (m.face.detect(img) if m.face is not None else [])
             if f.score >= face_min_score]
    return {"probs": out.probs[0], "embed": out.embed[0], "faces": len(faces),
            "top": m.vision.top_k(out.probs[0], 3)}


def fuse_rows(m, vision: dict[str, Any] | None, clip: Clip | None) -> np.ndarray:
    """[W,E] scores: one row per audio window (or one row), as the fusion stage builds them."""
    from perceptd.daemon.fusion.space import MODALITIES

    n = len(clip.probs) if clip is not None else 1
    x = np.zeros((n, len(MODALITIES), 384), np.float32)
    mask = np.zeros((n, len(MODALITIES)), np.float32)
    pv = pa = None
    if vision is not None:
        x[:, 0], mask[:, 0] = vision["embed"], 1
        pv = np.repeat(vision["probs"][None], n, 0)
        if vision["faces"]:
            x[:, 1], mask[:, 1] = m.face_anchor, 1
    if clip is not None:
        x[:, 2], mask[:, 2] = clip.embed, 1
        pa = clip.probs
    return m.fusion.fuse(x, mask, m.space, pv, pa).scores


def _image_want(path: Path, label: str) -> str | None:
    if path.name in IMAGE_OVERRIDES:
        return IMAGE_OVERRIDES[path.name]
    return IMAGE_EVENTS.get(label)


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4),
            "tp": tp, "fp": fp, "fn": fn}


def per_event(cases: list[dict[str, Any]], events: list[str]) -> dict[str, dict[str, float]]:
    """cases: {"want": event or None, "fired": [events]} -> per event P/R/F1."""
    out = {}
    for e in events:
        tp = sum(1 for c in cases if c["want"] == e and e in c["fired"])
        fn = sum(1 for c in cases if c["want"] == e and e not in c["fired"])
        fp = sum(1 for c in cases
                 if c["want"] != e and e in c["fired"] and e not in c.get("also", ()))
        out[e] = prf(tp, fp, fn)
    return out


def confusion(cases: list[dict[str, Any]], events: list[str]) -> dict[str, Any]:
    classes = sorted({c["label"] for c in cases})
    cols = [*events, "none"]
    mat = np.zeros((len(classes), len(cols)), int)
    for c in cases:
        i = classes.index(c["label"])
        for e in c["fired"] or ["none"]:
            mat[i, cols.index(e)] += 1
    return {"rows": classes, "cols": cols, "counts": mat.tolist(),
            "clips": {k: sum(1 for c in cases if c["label"] == k) for k in classes}}


def _fired(scores: np.ndarray, names: tuple[str, ...], thresholds: dict[str, float],
           allowed: set[str]) -> list[str]:
    best = scores.max(0)
    return [n for i, n in enumerate(names) if n in allowed and best[i] >= thresholds[n]]


def _events_with(cfg, modality: str) -> list[str]:
    return [e.name for e in cfg.events if e.kind == "state" and modality in e.modalities]


def evaluate_sounds(m, cfg, clips: list[Clip]) -> dict[str, Any]:
    thr = {e.name: e.threshold_on for e in cfg.events}
    events = _events_with(cfg, "audio")
    cases = []
    for c in clips:
        scores = fuse_rows(m, None, c)
        fired = _fired(scores, m.space.names, thr, set(events))
        cases.append({"file": str(c.path.relative_to(REPO)), "label": c.label,
                      "want": SOUND_EVENTS.get(c.label), "fired": fired,
                      "also": sorted(ALSO_RIGHT.get(c.path.name, ())),
                      "top": [[lab, round(p, 3)] for lab, p in m.audio.top_k(c.probs.max(0), 3)[0]]})
    return {"events": per_event(cases, events), "confusion": confusion(cases, events),
            "cases": cases}


def evaluate_images(m, cfg, images: list[tuple[Path, str, dict[str, Any]]]) -> dict[str, Any]:
    thr = {e.name: e.threshold_on for e in cfg.events}
    events = sorted(set(_events_with(cfg, "vision")) | set(_events_with(cfg, "face")),
                    key=[e.name for e in cfg.events].index)
    cases = []
    for path, label, row in images:
        scores = fuse_rows(m, row, None)
        cases.append({"file": str(path.relative_to(REPO)), "label": label,
                      "want": _image_want(path, label), "fired": _fired(scores, m.space.names, thr,
                                                                      set(events)),
                      "faces": row["faces"],
                      "top": [[lab, round(p, 3)] for lab, p in row["top"]]})
    return {"events": per_event(cases, events), "confusion": confusion(cases, events),
            "cases": cases}


def evaluate_pairs(m, cfg, images, clips: list[Clip]) -> dict[str, Any]:
    """Every photo of a scene with a default event x every sound clip of a class with one:
    the expected events are the union where the two agree or are unrelated; a contradiction is
    a photo that shows nothing of the sound's event (or the reverse)."""
    thr = {e.name: e.threshold_on for e in cfg.events}
    events = [e.name for e in cfg.events if e.kind == "state"]
    cat_like = [i for i in images if i[1] in ("cat", "dog", "vehicle", "food", "kitchenware",
                                               "landscape", "room", "object")]
    rng = np.random.default_rng(0)
    pick = [cat_like[i] for i in rng.permutation(len(cat_like))[:24]]
    sounds = [c for c in clips if c.label in ("cat", "dog", "vehicle")]
    agree = contra = 0
    cases = []
    for path, label, row in pick:
        for c in sounds:
            scores = fuse_rows(m, row, c)
            fired = _fired(scores, m.space.names, thr, set(events))
            want = {w for w in (_image_want(path, label), SOUND_EVENTS.get(c.label)) if w}
            want |= ALSO_RIGHT.get(c.path.name, set())
            kind = "agree" if _image_want(path, label) == SOUND_EVENTS.get(c.label) else "contradict"
            agree += kind == "agree"
            contra += kind == "contradict"
            cases.append({"image": path.name, "image_label": label, "sound": c.path.name,
                          "sound_label": c.label, "kind": kind, "want": sorted(want),
                          "fired": fired, "right": set(fired) == want})
    by_kind = {k: {"cases": sum(1 for c in cases if c["kind"] == k),
                   "right": sum(1 for c in cases if c["kind"] == k and c["right"])}
               for k in ("agree", "contradict")}
    return {"by_kind": by_kind, "cases": cases}


def evaluate_prompt_only(m, cfg, clips: list[Clip]) -> dict[str, Any]:
    """A test vocabulary of sound events declared by prompt alone, one per media class."""
    from perceptd.daemon.events.config import EventConfig
    from perceptd.daemon.fusion.space import compile_events

    classes = sorted({c.label for c in clips} & set(PROMPT_ONLY))
    evs = [EventConfig(name=f"heard_{k}", prompts=PROMPT_ONLY[k], modalities=["audio"],
                       threshold_on=0.7, threshold_off=0.5) for k in classes]
    space = compile_events(evs, m.text.embed, m.bundle)
    from perceptd.daemon.fusion.space import MODALITIES

    cases = []
    for c in clips:
        if c.label not in classes:
            continue
        n = len(c.probs)
        x = np.zeros((n, len(MODALITIES), 384), np.float32)
        mask = np.zeros((n, len(MODALITIES)), np.float32)
        x[:, 2], mask[:, 2] = c.embed, 1
        best = m.fusion.fuse(x, mask, space, None, c.probs).scores.max(0)
        fired = [e.name for i, e in enumerate(evs) if best[i] >= e.threshold_on]
        cases.append({"file": c.path.name, "label": c.label, "fired": fired,
                      "want": f"heard_{c.label}", "right": fired == [f"heard_{c.label}"]})
    own = {k: {"clips": sum(1 for c in cases if c["label"] == k),
               "right": sum(1 for c in cases if c["label"] == k and c["right"])} for k in classes}
    right = sum(c["right"] for c in cases)
    return {"classes": len(classes), "clips": len(cases), "right": right,
            "fraction_right": round(right / max(1, len(cases)), 4), "per_class": own,
            "events": per_event(cases, [e.name for e in evs]),
            "confusion": confusion(cases, [e.name for e in evs]),
            "classes_declared": {f"heard_{k}": PROMPT_ONLY[k] for k in classes},
            "relevant_classes": {evs[i].name: list(space.class_names[i].get("audio", ()))
                                 for i in range(len(evs))}, "cases": cases}


def evaluate_background(m, cfg, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Each background file streamed window by window through the event decoders."""
    from perceptd.daemon.events.decoder import EventDecoder

    events = [e for e in cfg.events if e.kind == "state" and "audio" in e.modalities]
    idx = [m.space.index(e.name) for e in events]
    seconds = 0.0
    fires: dict[str, int] = {e.name: 0 for e in events}
    wrong: dict[str, int] = {e.name: 0 for e in events}
    per_file = []
    for ent in entries:
        pcm = load_wav(REPO / ent["path"])
        seconds += len(pcm) / SR
        probs, embed = audio_windows(m, pcm)
        scores = fuse_rows(m, None, Clip(Path(ent["path"]), ent.get("kind", ""), probs, embed))
        allowed = BACKGROUND_ALLOWED.get(ent.get("kind", ""), set())
        decs = {e.name: EventDecoder(e) for e in events}
        starts: dict[str, int] = {}
        for w in range(len(scores)):
            t = int((w * HOP_S + 0.96) * 1e9)
            for e, i in zip(events, idx, strict=True):
                tr = decs[e.name].step(float(scores[w, i]), t)
                if tr is not None and tr.phase == "start":
                    starts[e.name] = starts.get(e.name, 0) + 1
        for name, k in starts.items():
            fires[name] += k
            if name not in allowed:
                wrong[name] += k
        per_file.append({"file": ent["path"], "kind": ent.get("kind"), "starts": starts})
    hours = seconds / 3600
    return {"seconds": round(seconds, 1), "false_fires": sum(wrong.values()),
            "false_fires_per_hour": round(sum(wrong.values()) / max(hours, 1e-9), 2),
            "false_fires_by_event": {k: v for k, v in wrong.items() if v},
            "starts_by_event": {k: v for k, v in fires.items() if v}, "files": per_file}


def fusion_tick_cost(m, repeat: int = 2000) -> dict[str, float]:
    """The head on a full row (every modality present), as one tick of one camera evaluates."""
    from perceptd.daemon.fusion.space import MODALITIES
    from perceptd.daemon.fusion.timeline import ModalityOutput, Row
    from perceptd.daemon.pipeline.fusion_stage import row_evidence

    rng = np.random.default_rng(0)
    outs = []
    for mod, n in (("vision", 1000), ("face", 0), ("audio", 521), ("text", 0)):
        v = rng.normal(size=384).astype(np.float32)
        outs.append(ModalityOutput(mod, "cam", 0, v / np.linalg.norm(v),
                                   probs=rng.dirichlet(np.ones(n)).astype(np.float32) if n else None,
                                   commands=(("lights_on", 2.0),) if mod == "text" else ()))
    row = Row("cam", np.stack([o.vector for o in outs]), np.ones(len(MODALITIES), np.float32),
              tuple(outs))
    samples = []
    for i in range(repeat + 50):
        t0 = time.perf_counter()
        pv, pa, te = row_evidence([row], m.space)
        m.fusion.fuse(row.x[None], row.mask[None], m.space, pv, pa, te)
        if i >= 50:
            samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    return {"events": len(m.space.names), "p50_ms": round(samples[len(samples) // 2], 4),
            "p99_ms": round(samples[int(0.99 * len(samples))], 4), "n": repeat}


def evaluate(config_path: Path, limit_background_s: float | None = None) -> dict[str, Any]:
    from perceptd.daemon.bundle import resolve_bundle, verify_bundle
    from perceptd.daemon.config import load_config
    from perceptd.daemon.inference.models import load_models
    from perceptd.daemon.inference.session import SessionOptions

    cfg = load_config(config_path)
    m = load_models(verify_bundle(resolve_bundle(cfg.bundle.dir, cfg.bundle.version)), cfg.events,
                    SessionOptions(cfg.runtime.device, 2))
    man = manifest()
    clips = []
    for s in man["sounds"]:
        probs, embed = audio_windows(m, load_wav(REPO / s["path"]))
        clips.append(Clip(REPO / s["path"], s["label"], probs, embed))
    images = [(REPO / i["path"], i["label"], image_row(m, REPO / i["path"], cfg.vision.face_min_score))
              for i in man["images"]]
    background = man.get("background", [])
    if limit_background_s is not None:
        keep, total = [], 0.0
        for b in background:
            if total >= limit_background_s:
                break
            keep.append(b)
            total += float(b.get("seconds", 60))
        background = keep
    return {
        "kind": "accuracy", **environment(), "model_version": m.version,
        "media": {"sounds": len(clips), "sound_classes": len({c.label for c in clips}),
                  "images": len(images), "scenes": len({i[1] for i in images}),
                  "background_s": man.get("background_seconds")},
        "sounds": evaluate_sounds(m, cfg, clips),
        "images": evaluate_images(m, cfg, images),
        "pairs": evaluate_pairs(m, cfg, images, clips),
        "prompt_only": evaluate_prompt_only(m, cfg, clips),
        "background": evaluate_background(m, cfg, background),
        "fusion_tick": fusion_tick_cost(m),
        "commands_typed": _typed_commands(cfg, m),
    }


def _typed_commands(cfg, m) -> dict[str, Any]:
    """The command corpus typed (bench/command_corpus.py), judged by the same matcher; the
    spoken figures take minutes: `perceptd bench --commands`."""
    from perceptd.bench.commands import typed

    return {half: typed(cfg, m.text, half)["summary"] for half in ("dev", "heldout")}


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(24, 8), gridspec_kw={"width_ratios": [3, 2, 4]})
    for ax, key in zip(axes, ("sounds", "images", "prompt_only"), strict=True):
        cm = data[key]["confusion"]
        mat = np.array(cm["counts"], float)
        norm = mat / np.maximum(1, np.array([cm["clips"][r] for r in cm["rows"]], float))[:, None]
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(cm["cols"])), cm["cols"], rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(cm["rows"])),
                      [f"{r} ({cm['clips'][r]})" for r in cm["rows"]], fontsize=8)
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                if mat[i, j]:
                    ax.text(j, i, int(mat[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
        ax.set_title(f"{key.replace('_', '-')}: true class (clips) x events fired")
    fig.suptitle(f"perceptd accuracy on real media, bundle {data['model_version']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_lines(data: dict[str, Any]) -> list[str]:
    lines = []
    for key in ("sounds", "images"):
        lines.append(f"{key}:")
        for e, s in data[key]["events"].items():
            lines.append(f"  {e:<16} P {s['precision']:.2f}  R {s['recall']:.2f}  F1 {s['f1']:.2f}"
                         f"  (tp {s['tp']} fp {s['fp']} fn {s['fn']})")
    pk = data["pairs"]["by_kind"]
    lines.append("fused pairs: " + ", ".join(f"{k} {v['right']}/{v['cases']} right"
                                             for k, v in pk.items()))
    po = data["prompt_only"]
    mp = np.mean([v["precision"] for v in po["events"].values()])
    mr = np.mean([v["recall"] for v in po["events"].values()])
    lines.append(f"prompt-only events: macro precision {mp:.2f}, macro recall {mr:.2f}")
    lines.append(f"prompt-only sound events: {po['right']}/{po['clips']} clips fire their own event "
                 f"and no other ({po['fraction_right']:.2f}, {po['classes']} classes)")
    bg = data["background"]
    lines.append(f"background {bg['seconds'] / 60:.1f} min: {bg['false_fires']} false fires "
                 f"({bg['false_fires_per_hour']}/h) {bg['false_fires_by_event']}")
    for half, summ in data.get("commands_typed", {}).items():
        parts = [f"{k} recall {v['recall']}" if "recall" in v else
                 f"{k} false accepts {v['accepted']}/{v['n']}"
                 for k, v in summ.items() if k != "confusion"]
        lines.append(f"commands typed ({half}): " + ", ".join(parts))
    ft = data["fusion_tick"]
    lines.append(f"fusion tick ({ft['events']} events): p50 {ft['p50_ms']:.3f} ms, "
                 f"p99 {ft['p99_ms']:.3f} ms")
    return lines


def main(config_path: Path, json_out: str | None) -> Path:
    data = evaluate(config_path)
    for line in summary_lines(data):
        print(line)
    path = write_json("accuracy", data, json_out)
    png = path.with_suffix(".png")
    plot(data, png)
    print(f"wrote {path} and {png.name}")
    return path
