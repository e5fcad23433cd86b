"""`perceptd probe`: one shot through the bundle (daemon/probe.py), printed for a person or as
JSON."""

from __future__ import annotations

import argparse
import json

from perceptd.daemon.config import load_config
from perceptd.daemon.inference.models import ModelSet
from perceptd.daemon.probe import ProbeResult, run_probe, to_json


def print_human(res: ProbeResult, m: ModelSet) -> None:
    print(f"bundle {m.version}  (providers: {', '.join(sorted(set(m.providers().values())))})")
    for name, info in res.modalities.items():
        tops = ", ".join(f"{lab} {p:.2f}" for lab, p in info["top"])
        print(f"{name:<7} {tops}")
    if "vision" in res.modalities:
        boxes = "; ".join(f"[{', '.join(f'{v:.0f}' for v in f['box'])}] {f['score']:.2f}"
                          for f in res.faces)
        print(f"faces   {len(res.faces)}{'  ' + boxes if boxes else ''}")
    if "audio" in res.modalities:
        _print_speech(res)
    print("events (fused score, modality weights):")
    for name in sorted(res.events, key=lambda n: -res.events[n]["score"]):
        e = res.events[name]
        w = ", ".join(f"{k} {v:.2f}" for k, v in e["weights"].items())
        mark = "*" if e["fires"] else " "
        print(f" {mark} {name:<18} {e['score']:.3f}  {w}")


def _print_speech(res: ProbeResult) -> None:
    if not res.speech_segments:
        print("speech  none")
    if res.speech_engine.get("reason"):
        print(f"speech  recognizer off: {res.speech_engine['reason']}")
    for s in res.speech_segments:
        line = f"speech  {s['start']:.2f}-{s['end']:.2f} s"
        if s.get("text") is not None:
            conf = (f"avg_logprob {s['avg_logprob']:.2f}, no_speech {s['no_speech_prob']:.2f}"
                    if s["avg_logprob"] is not None else "no confidence")
            cmd = s["command"]
            verdict = (f"-> event.{cmd['event']} {cmd['score']:.3f}" if cmd
                       else f"-> no command ({s['verdict']})")
            line += f"  {s['text']!r} ({conf}) {verdict}"
        print(line)


def probe_main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    res, models = run_probe(cfg, args.image, args.audio, args.text, args.top)
    if args.json:
        print(json.dumps(to_json(res, models), indent=2))
    else:
        print_human(res, models)
    return 0
