"""`perceptd bench --commands`: the command matcher on typed and spoken paraphrases/near-misses.

Typed: every item of bench/command_corpus.py through `perceptd.daemon.commands.CommandMatcher`
(the same matcher the speech worker uses), per half (dev: tuned on; held-out: not looked at
while tuning): paraphrase recall, wrong-command rate, near-miss and non-command false accepts,
ASR-style variants, the per-command confusion, and the cost of one match on this CPU.

Spoken: a subset (`--commands-spoken N`: N paraphrases + N near-misses + the non-commands,
both halves interleaved) spoken by espeak-ng in two voices, clean and with noise mixed at
10 dB SNR, then noise-only clips; every clip goes through the daemon's VAD, the configured
recognizer (faster-whisper) and the speech matcher (ASR confidence checks + CommandMatcher),
exactly as `perceptd probe --audio`. The noise is real background from media/ (the
`background` list of media/manifest.json: room tone, tv, music, speech) when that folder
exists, else pink noise (the JSON says which); the background clips alone (10 s each) are
the noise-only / non-command-speech check. The recognizer runs as configured (`speech.prompt`,
`speech.engine.beam_size`); the report names both and the recognition time per segment.

Writes bench/results/commands-<stamp>.json and bench/results/commands.md.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from perceptd.bench import command_corpus as cc
from perceptd.bench.common import RESULTS, environment, write_json

REPO = Path(__file__).resolve().parents[1]
HALVES = ("dev", "heldout")


# ------------------------------------------------------------------ typed


def _load(config: Path):
    from perceptd.daemon.bundle import resolve_bundle, verify_bundle
    from perceptd.daemon.config import load_config
    from perceptd.daemon.inference.session import SessionOptions
    from perceptd.daemon.inference.text import TextModel

    cfg = load_config(config)
    bundle = verify_bundle(resolve_bundle(cfg.bundle.dir, cfg.bundle.version))
    text = TextModel(bundle.model_path("text"), bundle.file("text_tokenizer.json"), SessionOptions("cpu", 1))
    return cfg, bundle, text


def typed(cfg, text_model, half: str) -> dict[str, Any]:
    from perceptd.daemon.commands import CommandMatcher

    m = CommandMatcher(cfg.events, text_model.embed)
    para = cc.split(cc.PARAPHRASES, half)
    asr = cc.split(cc.ASR_VARIANTS, half)
    near = cc.split(cc.NEAR_MISSES, half)
    non = cc.split(cc.NON_COMMANDS, half)
    rows: list[dict] = []
    for kind, items in (("paraphrase", para), ("asr_variant", asr),
                        ("near_miss", [(t, None) for t in near]), ("non_command", [(t, None) for t in non])):
        for (t, want), r in zip(items, m.match_many([t for t, _ in items]), strict=True):
            rows.append({"kind": kind, "text": t, "want": want, "got": r.event, "reason": r.reason,
                         "best": r.best, "score": max(r.scores.values(), default=0.0),
                         "gates": r.detail.get("gates")})
    return {"half": half, "summary": summarise(rows), "rows": rows}


def summarise(rows: list[dict]) -> dict[str, Any]:
    def of(kind):
        return [r for r in rows if r["kind"] == kind]

    out: dict[str, Any] = {}
    for kind in ("paraphrase", "asr_variant"):
        rs = of(kind)
        if not rs:
            continue
        right = sum(r["got"] == r["want"] for r in rs)
        wrong = sum(r["got"] is not None and r["got"] != r["want"] for r in rs)
        out[kind] = {"n": len(rs), "right": right, "wrong_command": wrong,
                     "recall": round(right / len(rs), 3)}
    for kind in ("near_miss", "non_command", "noise"):
        rs = of(kind)
        if rs:
            acc = sum(r["got"] is not None for r in rs)
            out[kind] = {"n": len(rs), "accepted": acc, "false_accept_rate": round(acc / len(rs), 3)}
    conf: dict[str, Counter] = {}
    for r in of("paraphrase") + of("asr_variant"):
        conf.setdefault(r["want"], Counter())[r["got"] or "none"] += 1
    out["confusion"] = {k: dict(v) for k, v in sorted(conf.items())}
    return out


def timing(cfg, text_model, repeat: int = 3) -> dict[str, Any]:
    """ms per match on this CPU: cold (fresh matcher, every word new), warm (words cached)."""
    from perceptd.daemon.commands import CommandMatcher

    texts = [t for t, _ in cc.PARAPHRASES] + list(cc.NEAR_MISSES) + list(cc.NON_COMMANDS)
    t0 = time.perf_counter()
    m = CommandMatcher(cfg.events, text_model.embed)
    init_ms = (time.perf_counter() - t0) * 1e3
    cold, warm, batch = [], [], []
    for _ in range(repeat):
        m = CommandMatcher(cfg.events, text_model.embed)
        for t in texts:
            t1 = time.perf_counter()
            m.match(t)
            cold.append((time.perf_counter() - t1) * 1e3)
        for t in texts:
            t1 = time.perf_counter()
            m.match(t)
            warm.append((time.perf_counter() - t1) * 1e3)
        m = CommandMatcher(cfg.events, text_model.embed)
        t1 = time.perf_counter()
        m.match_many(texts)
        batch.append((time.perf_counter() - t1) * 1e3 / len(texts))

    def pct(v, q):
        return round(float(np.percentile(v, q)), 2)

    return {"init_ms": round(init_ms, 1), "n_texts": len(texts),
            "cold_ms": {"p50": pct(cold, 50), "p90": pct(cold, 90), "max": pct(cold, 100)},
            "warm_ms": {"p50": pct(warm, 50), "p90": pct(warm, 90), "max": pct(warm, 100)},
            "match_many_cold_ms_per_text": round(float(np.median(batch)), 2)}


# ------------------------------------------------------------------ spoken


def _background() -> tuple[str, list[np.ndarray]]:
    """Real background recordings from media/ (manifest), else ("pink", [])."""
    manifest = REPO / "media" / "manifest.json"
    if not manifest.exists():
        return "pink noise (no media/ folder with real background yet)", []
    import soundfile as sf

    from perceptd.daemon.sources.wavfile import load_audio

    data = json.loads(manifest.read_text())
    items = data.get("background", []) if isinstance(data, dict) else []
    pcm: list[np.ndarray] = []
    names = []
    for it in items:
        path = REPO / str(it.get("path", ""))
        if path.is_file():
            try:
                pcm.append(load_audio(path))
                names.append(f"{path.name} ({it.get('kind')}, {it.get('licence')})")
            except (OSError, RuntimeError, ValueError, sf.LibsndfileError):
                continue
    if not pcm:
        return "pink noise (media/manifest.json lists no readable background audio)", []
    return "real background from media/: " + ", ".join(names[:10]), pcm


def _mix(clean: Path, out: Path, snr_db: float, seed: int, backgrounds: list[np.ndarray]) -> Path:
    import soundfile as sf

    from perceptd.bench import speech_corpus as sc

    if not backgrounds:
        return sc.add_noise(clean, out, snr_db, seed)
    pcm, sr = sf.read(clean, dtype="float32")
    rng = np.random.default_rng(seed)
    bg = backgrounds[int(rng.integers(len(backgrounds)))]
    if len(bg) < len(pcm):
        bg = np.tile(bg, int(np.ceil(len(pcm) / len(bg))))
    start = int(rng.integers(0, len(bg) - len(pcm) + 1))
    noise = bg[start:start + len(pcm)].astype(np.float32)
    noise = noise / max(float(np.sqrt(np.mean(noise**2))), 1e-6)
    noise *= np.sqrt(sc._speech_power(pcm) / 10 ** (snr_db / 10))
    mixed = pcm + noise
    peak = float(np.max(np.abs(mixed)))
    if peak > 0.99:
        mixed *= 0.99 / peak
    sf.write(out, mixed, sr, subtype="PCM_16")
    return out


def spoken(cfg, bundle, work: Path, n: int, voices: tuple[str, ...], snrs=(None, 10.0)) -> dict[str, Any]:
    import soundfile as sf

    from perceptd.bench import speech_corpus as sc
    from perceptd.daemon.inference.models import load_models
    from perceptd.daemon.inference.session import SessionOptions
    from perceptd.daemon.speech.matcher import CommandMatcher as SpeechMatcher
    from perceptd.daemon.speech.offline import recognise
    from perceptd.daemon.speech.stage import load_engine

    if sc.tools_missing():
        raise RuntimeError(f"the spoken part needs {', '.join(sc.tools_missing())}")
    models = load_models(bundle, cfg.events, SessionOptions("cpu", 1), False)
    engine, reason = load_engine(cfg.speech, cfg.events)
    if engine is None:
        raise RuntimeError(f"speech engine unavailable: {reason}")
    matcher = SpeechMatcher(cfg.speech, cfg.events)
    noise_kind, backgrounds = _background()
    # both halves, interleaved, so a subset keeps every command and both halves
    para = _spread(list(cc.PARAPHRASES), n)
    near = _spread([(t, None) for t in cc.NEAR_MISSES], n)
    non = [(t, None) for t in cc.NON_COMMANDS]
    said = [("paraphrase", t, e) for t, e in para] + [("near_miss", t, None) for t, _ in near] + \
        [("non_command", t, None) for t, _ in non]
    half_of = {t: h for h in HALVES for t in [x if isinstance(x, str) else x[0] for x in
                                                 cc.split(cc.PARAPHRASES, h) + cc.split(cc.NEAR_MISSES, h)
                                                 + cc.split(cc.NON_COMMANDS, h)]}
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    seg_ms: list[float] = []  # recognition + matching per VAD segment (the speech worker's cost)
    t_start = time.perf_counter()
    for i, (kind, text, want) in enumerate(said):
        for v, voice in enumerate(voices):
            clean = sc.synth(text, voice, work / f"{i}-{v}.wav")
            for snr in snrs:
                path = clean if snr is None else _mix(clean, work / f"{i}-{v}-{snr:g}.wav", snr,
                                                      1000 * i + v, backgrounds)
                pcm, _ = sf.read(path, dtype="float32")
                res = recognise(pcm, models, engine, matcher, cfg.audio)
                seg_ms += [r.asr_ms for r in res]
                got = [r.verdict.event for r in res if r.verdict.accepted]
                rows.append({"kind": kind, "text": text, "want": want, "voice": voice, "snr_db": snr,
                             "half": half_of.get(text), "got": got[0] if len(got) == 1 else (got or None),
                             "transcripts": [r.transcript.text for r in res],
                             "verdicts": [r.verdict.reason for r in res]})
    for k in range(max(6, 2 * len(backgrounds))):  # background alone: room tone, tv, music, speech
        path = work / f"noise{k}.wav"
        if backgrounds:
            bg = backgrounds[k % len(backgrounds)]
            off = int((k // len(backgrounds)) * 20 * sc.SR) % max(len(bg) - 10 * sc.SR, 1)
            seg = bg[off: off + int(10 * sc.SR)]
            sf.write(path, seg, sc.SR, subtype="PCM_16")
        else:
            sc.noise_clip(path, 3.0, 7 + k, rms=0.03 + 0.03 * k)
        pcm, _ = sf.read(path, dtype="float32")
        res = recognise(pcm, models, engine, matcher, cfg.audio)
        got = [r.verdict.event for r in res if r.verdict.accepted]
        rows.append({"kind": "noise", "text": "", "want": None, "voice": "", "snr_db": None, "half": None,
                     "got": got or None, "transcripts": [r.transcript.text for r in res],
                     "verdicts": [r.verdict.reason for r in res]})
    wall = time.perf_counter() - t_start
    seg_stats = {"n": len(seg_ms), "p50": round(float(np.median(seg_ms)), 1),
           "p90": round(float(np.percentile(seg_ms, 90)), 1)} if seg_ms else None
    prompt = "custom initial_prompt" if cfg.speech.initial_prompt is not None else cfg.speech.prompt
    out: dict[str, Any] = {"engine": engine.name, "prompt": prompt,
                           "beam_size": getattr(cfg.speech.engine, "beam_size", None),
                           "voices": list(voices), "noise": noise_kind,
                           "segment_ms": seg_stats,
                           "wall_s": round(wall, 1), "clips": len(rows), "rows": rows}
    for snr in snrs:
        key = "clean" if snr is None else f"snr{snr:g}db"
        sel = [r for r in rows if r["snr_db"] == snr and r["kind"] != "noise"]
        out[key] = {"all": summarise(sel),
                    **{h: summarise([r for r in sel if r["half"] == h]) for h in HALVES}}
    out["noise_only"] = summarise([r for r in rows if r["kind"] == "noise"])
    return out


def _spread(items: list, n: int) -> list:
    """n items spread evenly over the list (every command, both halves)."""
    if not n or n >= len(items):
        return items
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in dict.fromkeys(idx.tolist())]


# ------------------------------------------------------------------ report


def table(data: dict[str, Any]) -> str:
    lines = [f"# Commands: one matcher, typed and spoken ({data['env']['machine']['cores']} cores, "
             f"{data['env']['date']})", "",
             "| set | half | paraphrase recall | wrong command | ASR-style variants | "
             "near-miss false accepts | non-command false accepts |", "|---|---|---|---|---|---|---|"]

    def row(label, half, s):
        p, a = s.get("paraphrase", {}), s.get("asr_variant", {})
        nm, nc = s.get("near_miss", {}), s.get("non_command", {})
        lines.append(
            f"| {label} | {half} | {p.get('right', '-')}/{p.get('n', '-')} ({p.get('recall', '-')}) | "
            f"{p.get('wrong_command', '-')} | {a.get('right', '-')}/{a.get('n', '-')} | "
            f"{nm.get('accepted', '-')}/{nm.get('n', '-')} | {nc.get('accepted', '-')}/{nc.get('n', '-')} |")

    for t in data["typed"]:
        row("typed", t["half"], t["summary"])
    sp = data.get("spoken")
    if sp:
        for key in ("clean", "snr10db"):
            if key in sp:
                for h in (*HALVES, "all"):
                    row(f"spoken {key}", h, sp[key][h])
        nz = sp["noise_only"].get("noise", {})
        sm = sp.get("segment_ms") or {}
        lines += ["", f"Spoken: {sp['engine']}, prompt {sp.get('prompt')}, beam {sp.get('beam_size')}, "
                  f"recognition per segment p50 {sm.get('p50')} ms / p90 {sm.get('p90')} ms "
                  f"({sm.get('n')} segments, 1 thread, shared CPU), "
                  f"voices {', '.join(sp['voices'])}, noise: {sp['noise']}; "
                  f"noise-only clips accepted as commands: {nz.get('accepted')}/{nz.get('n')}; "
                  f"{sp['clips']} clips in {sp['wall_s']} s."]
    tm = data["timing"]
    lines += ["", f"Cost per match (this CPU, 1 ORT thread): cold p50 {tm['cold_ms']['p50']} ms / p90 "
              f"{tm['cold_ms']['p90']} ms (every word new), warm p50 {tm['warm_ms']['p50']} ms / p90 "
              f"{tm['warm_ms']['p90']} ms, match_many cold {tm['match_many_cold_ms_per_text']} ms per text; "
              f"building the matcher {tm['init_ms']} ms."]
    return "\n".join(lines) + "\n"


def main(config: Path, json_out: str | None = None, spoken_n: int = 40,
         voices: tuple[str, ...] = ("en-us", "en-gb")) -> Path:
    cfg, bundle, text_model = _load(config)
    data: dict[str, Any] = {"env": environment()}
    data["typed"] = [typed(cfg, text_model, h) for h in HALVES]
    data["timing"] = timing(cfg, text_model)
    if spoken_n >= 0:
        with tempfile.TemporaryDirectory(prefix="commands-bench-") as tmp:
            data["spoken"] = spoken(cfg, bundle, Path(tmp), spoken_n, voices)
    path = write_json("commands", data, json_out)
    md = table(data)
    (RESULTS / "commands.md").write_text(md)
    print(md)
    return path
