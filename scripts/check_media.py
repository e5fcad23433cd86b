#!/usr/bin/env python3
"""Data-quality check of media/ (from scripts/fetch_media.py) with the bundle's own classifiers.

For each sound clip: the AudioSet tagger's top labels (mean over windows), with generic
ancestors ("Animal", "Domestic animals, pets", ...) set aside, and whether one of the top 3
names the clip's class. For each photo: the ImageNet top 3. Writes media/quality.json and
prints per-class agreement. This checks the data, not perceptd's events.
"""
from __future__ import annotations

import json
import os
import sys
from collections import defaultdict

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERIC = {"Animal", "Domestic animals, pets", "Livestock, farm animals, working animals",
           "Wild animals", "Bird vocalization, bird call, bird song", "Vehicle", "Inside, small room",
           "Outside, rural or natural", "Outside, urban or manmade", "Sound effect"}
# class -> AudioSet label substrings that count as agreement
AGREE = {
    "dog": ["Dog", "Bark", "Bow-wow", "Yip", "Howl", "Growling", "Whimper"],
    "cat": ["Cat", "Meow", "Purr", "Hiss", "Caterwaul"],
    "cow": ["Cattle", "Moo", "bovinae"], "horse": ["Horse", "Neigh", "Clip-clop"],
    "pig": ["Pig", "Oink"], "sheep": ["Sheep", "Bleat", "Goat"],
    "duck": ["Duck", "Quack", "Goose", "Honk"], "chicken": ["Chicken", "rooster", "Crowing", "Cluck", "Fowl"],
    "bird": ["Bird", "Chirp", "Crow", "Caw", "Cuckoo", "Pigeon", "Owl"],
    "speech": ["Speech", "Narration", "conversation", "Female speech", "Male speech"],
    "music": ["Music", "Guitar", "Musical instrument", "Piano", "Drum", "Violin", "Plucked", "Singing"],
    "doorbell": ["Doorbell", "Ding-dong", "Bell", "Chime", "Ding"],
    "alarm": ["Alarm", "Siren", "Smoke detector", "Fire alarm", "Telephone", "Ringtone", "Buzzer",
              "Emergency vehicle", "Fire engine", "Civil defense", "Beep"],
    "glass_breaking": ["Glass", "Shatter", "Breaking"],
    "dishes": ["Dishes", "Cutlery", "Chink, clink", "Glass", "Clink", "Tick"],
    "laughter": ["Laughter", "Giggle", "Chuckle", "Belly laugh", "Snicker", "Baby laughter"],
    "water": ["Water", "Stream", "Pour", "Liquid", "Trickle", "Sink", "Bathtub", "Splash", "Rain", "Drip"],
    "vehicle": ["Car", "Engine", "Motor vehicle", "Motorcycle", "Train", "Rail", "Traffic", "Accelerating",
                "Idling", "Vehicle"],
    "door": ["Door", "Slam", "Squeak", "Creak", "Knock", "Cupboard"],
    "toilet_flush": ["Toilet flush", "Water", "Sink", "Gurgling"],
}


def main() -> int:
    sys.path.insert(0, ROOT)
    from perceptd.daemon.bundle import resolve_bundle, verify_bundle
    from perceptd.daemon.config import load_config
    from perceptd.daemon.inference.models import load_models
    from perceptd.daemon.inference.session import SessionOptions
    from perceptd.daemon.sources.wavfile import load_audio

    cfg = load_config(os.path.join(ROOT, "config.yaml"))
    bundle = verify_bundle(resolve_bundle(cfg.bundle.dir, cfg.bundle.version))
    m = load_models(bundle, cfg.events, SessionOptions("cpu", 2), with_face=False)
    man = json.load(open(os.path.join(ROOT, "media", "manifest.json")))
    out = {"sounds": [], "images": []}
    per = defaultdict(lambda: [0, 0])
    for s in man["sounds"]:
        pcm = load_audio(os.path.join(ROOT, s["path"]))
        if len(pcm) < 16000:
            pcm = np.concatenate([pcm, np.zeros(16000, np.float32)])
        sc = m.audio.infer(m.audio.patches(pcm)).scores.mean(0)
        top = [(lab, p) for lab, p in m.audio.top_k(sc, 12)[0] if lab not in GENERIC][:3]
        ok = any(k.lower() in lab.lower() for lab, _ in top for k in AGREE.get(s["label"], []))
        per[s["label"]][0] += ok
        per[s["label"]][1] += 1
        out["sounds"].append({"path": s["path"], "label": s["label"], "agree": ok,
                              "top": [[lab, round(float(p), 3)] for lab, p in top]})
        print(f"{'ok ' if ok else 'BAD'} {s['path']}: " + ", ".join(f"{l} {p:.2f}" for l, p in top))
    for im in man["images"]:
        img = cv2.imread(os.path.join(ROOT, im["path"]), cv2.IMREAD_COLOR)
        probs = m.vision.infer(m.vision.preprocess(img)[None]).probs[0]
        top = m.vision.top_k(probs, 3)
        out["images"].append({"path": im["path"], "label": im["label"],
                              "top": [[lab, round(float(p), 3)] for lab, p in top]})
        print(f"IMG {im['path']}: " + ", ".join(f"{l} {p:.2f}" for l, p in top))
    out["per_class"] = {k: {"agree": a, "clips": n} for k, (a, n) in sorted(per.items())}
    json.dump(out, open(os.path.join(ROOT, "media", "quality.json"), "w"), indent=1)
    for k, v in out["per_class"].items():
        print(f"{k:15s} {v['agree']}/{v['clips']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
