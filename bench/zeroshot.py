"""Zero-shot quality of the default vocabulary: real photos, synthesized sounds, paraphrases.

No training: every event is only its prompts.  Reported per modality: how often the right
event ranks first, how often it fires (score >= threshold_on), and false accepts on inputs
that should fire nothing.  Runs through the ONNX bundle exactly as `perceptd probe` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from perceptd.bench.common import environment, write_json

REPO = Path(__file__).resolve().parent.parent
IMAGES = {  # photo -> the event it should raise (None: nothing should fire)
    "cat.jpg": "cat_present", "motorcycle.jpg": "vehicle_nearby", "astronaut.jpg": "person_present",
    "coffee.jpg": None, "rocket.jpg": None, "space.jpg": None, "grass.jpg": None, "brick.jpg": None,
}
COMMANDS = {  # paraphrases never used as prompts
    "please switch on the light": "lights_on", "lights on in the kitchen": "lights_on",
    "can you turn the lamp on": "lights_on", "turn off all the lights": "lights_off",
    "kill the lights": "lights_off", "lamp off please": "lights_off",
    "play my favourite song": "play_music", "put some music on": "play_music",
    "what a lovely song, play it again": "play_music", "stop the song": "stop_music",
    "pause the music please": "stop_music", "make it louder": "volume_up",
    "turn it up": "volume_up", "make it quieter": "volume_down", "turn it down a bit": "volume_down",
    "take me to the nearest gas station": "start_navigation", "navigate to the airport": "start_navigation",
    "how do I get home from here": "start_navigation", "call my mother": "call_contact",
    "ring my brother": "call_contact", "set the heating to twenty two degrees": "set_temperature",
    "it is too cold in here, warm it up": "set_temperature",
}
NON_COMMANDS = [
    "what's the weather like", "good morning", "I had pasta for lunch", "the meeting starts at ten",
    "my sister lives in another city", "how tall is the eiffel tower", "I like my coffee black",
    "tell me a joke", "what day is it today", "the cat is sleeping",
]
NEAR_MISSES = {  # commands the vocabulary does not have: nothing (or nothing wrong) should fire
    "turn on the fan": None, "open the garage door": None, "lock the car": None,
    "turn on the television": None, "set an alarm for seven": None, "open the window": None,
}


def _sounds(sr: int = 16_000) -> dict[str, tuple[np.ndarray, str | None]]:
    rng = np.random.default_rng(0)
    t = np.arange(int(3 * sr)) / sr
    white = rng.normal(0, 0.1, t.size).astype(np.float32)
    spec = np.fft.rfft(rng.normal(0, 1, t.size))
    spec /= np.sqrt(np.maximum(np.arange(spec.size), 1))
    pink = np.fft.irfft(spec, t.size)
    pink = (0.1 * pink / pink.std()).astype(np.float32)
    wail = 0.3 * np.sin(2 * np.pi * np.cumsum(1100 + 400 * np.sin(2 * np.pi * 0.5 * t)) / sr)
    beep = 0.3 * np.sin(2 * np.pi * 3000 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    from perceptd.daemon.sources.wavfile import load_audio

    speech = load_audio(REPO / "samples" / "audio" / "turn_on_the_kitchen_lights.wav")
    return {
        "espeak speech": (speech, "speech"),
        "siren wail 700-1500 Hz": (wail.astype(np.float32), "alarm_sounding"),
        "3 kHz beeping": (beep.astype(np.float32), "alarm_sounding"),
        "silence": (np.zeros(t.size, np.float32), None),
        "white noise": (white, None),
        "pink noise": (pink, None),
    }


def _fuse(m, x_mod: str, vec: np.ndarray) -> np.ndarray:
    from perceptd.daemon.fusion.space import MODALITIES

    x = np.zeros((len(MODALITIES), vec.shape[-1]), np.float32)
    mask = np.zeros(len(MODALITIES), np.float32)
    x[MODALITIES.index(x_mod)] = vec
    mask[MODALITIES.index(x_mod)] = 1
    return m.fusion.fuse(x, mask, m.space).scores[0]


def _case(m, thr: dict[str, float], name: str, scores: np.ndarray, want: str | None) -> dict:
    names = list(m.space.names)
    order = np.argsort(-scores)
    fired = [names[i] for i in order if scores[i] >= thr[names[i]]]
    top = names[int(order[0])]
    return {"input": name, "want": want, "top": top, "top_score": float(scores[order[0]]),
            "fired": fired, "top_right": want is not None and top == want,
            "fires_right": want is not None and want in fired,
            "false_accept": [f for f in fired if f != want]}


def evaluate(config_path: Path) -> dict[str, Any]:
    from perceptd.daemon.bundle import resolve_bundle, verify_bundle
    from perceptd.daemon.config import load_config
    from perceptd.daemon.inference.models import load_models
    from perceptd.daemon.inference.session import SessionOptions

    cfg = load_config(config_path)
    m = load_models(verify_bundle(resolve_bundle(cfg.bundle.dir, cfg.bundle.version)), cfg.events,
                    SessionOptions("cpu", 2))
    thr = {e.name: e.threshold_on for e in cfg.events}
    out: dict[str, list[dict]] = {"vision": [], "text": [], "audio": []}
    import cv2

    for name, want in IMAGES.items():
        img = cv2.imread(str(REPO / "samples" / "images" / name))
        v = m.vision.infer(m.vision.preprocess(img)[None])
        scores = _fuse(m, "vision", v.embed[0])
        faces = m.face.detect(img) if m.face is not None else []
        if faces:  # the daemon fuses the face anchor beside the image vector
            from perceptd.daemon.fusion.space import MODALITIES

            x = np.zeros((4, 384), np.float32)
            mask = np.zeros(4, np.float32)
            x[0], mask[0] = v.embed[0], 1
            x[MODALITIES.index("face")], mask[MODALITIES.index("face")] = m.face_anchor, 1
            scores = m.fusion.fuse(x, mask, m.space).scores[0]
        out["vision"].append(_case(m, thr, name, scores, want))
    texts = {**COMMANDS, **dict.fromkeys(NON_COMMANDS), **NEAR_MISSES}
    vecs = m.text.embed(list(texts))
    for (text, want), vec in zip(texts.items(), vecs, strict=True):
        out["text"].append(_case(m, thr, text, _fuse(m, "text", vec), want))
    for name, (pcm, want) in _sounds().items():
        emb = m.audio.infer(m.audio.patches(pcm)).embed
        vec = emb.mean(0)
        out["audio"].append(_case(m, thr, name, _fuse(m, "audio", vec / np.linalg.norm(vec)), want))
    summary = {}
    for mod, cases in out.items():
        pos = [c for c in cases if c["want"]]
        neg = [c for c in cases if not c["want"]]
        summary[mod] = {
            "positives": len(pos), "top1_right": sum(c["top_right"] for c in pos),
            "fires_right": sum(c["fires_right"] for c in pos), "negatives": len(neg),
            "negatives_firing_anything": sum(bool(c["fired"]) for c in neg),
            "wrong_event_fired_on_positives": sum(bool(c["false_accept"]) for c in pos),
        }
    return {"kind": "zeroshot", **environment(), "model_version": m.version,
            "summary": summary, "cases": out}


def main(config_path: Path, json_out: str | None) -> Path:
    data = evaluate(config_path)
    for mod, s in data["summary"].items():
        print(f"{mod:<7} right event first {s['top1_right']}/{s['positives']}, fires "
              f"{s['fires_right']}/{s['positives']}, wrong event also fired on "
              f"{s['wrong_event_fired_on_positives']}, negatives firing anything "
              f"{s['negatives_firing_anything']}/{s['negatives']}")
    for mod, cases in data["cases"].items():
        for c in cases:
            ok = (c["fires_right"] and not c["false_accept"]) if c["want"] else not c["fired"]
            print(f"  {'ok ' if ok else 'BAD'} {mod:<6} {c['input'][:38]:<38} want={c['want']} "
                  f"top={c['top']} {c['top_score']:.2f} fired={c['fired']}")
    path = write_json("zeroshot", data, json_out)
    print(f"wrote {path}")
    return path
