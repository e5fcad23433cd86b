"""`perceptd bench --asr`: spoken-command accuracy, false accepts, latency and CPU share.

Two parts, both on espeak-ng speech made on the spot (perceptd.bench.speech_corpus):

* offline: every clip goes through the daemon's VAD settings, the configured recognizer and
  the command matcher (no sockets): right intent on commands (clean, pink noise at 10 dB),
  false accepts on everyday sentences, near-misses and noise-only clips, recognizer time;
* live: `perceptd run` in a child process replays a WAV of spoken commands in real time;
  end-of-speech -> transcript and end-of-speech -> `event.<name>` latencies (t_publish_ns of
  the event minus the segment's end_ns), the recognizer's busy share, and its CPU share: the
  daemon's CPU time with speech on minus a second run with speech off, over the same track
  (CTranslate2 computes in its own threads, so a per-thread clock would miss it).

Writes bench/results/asr-<stamp>.json and bench/results/asr.md (the table).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml

from perceptd.bench import speech_corpus as sc
from perceptd.bench.common import RESULTS, environment, write_json

REPO = Path(__file__).resolve().parents[1]


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


# ------------------------------------------------------------------ offline accuracy


def offline(cfg, bundle_dir: Path, work: Path, voices: tuple[str, ...]) -> dict[str, Any]:
    from perceptd.daemon.bundle import verify_bundle
    from perceptd.daemon.inference.models import load_models
    from perceptd.daemon.inference.session import SessionOptions
    from perceptd.daemon.speech.matcher import CommandMatcher
    from perceptd.daemon.speech.offline import recognise
    from perceptd.daemon.speech.stage import load_engine

    models = load_models(verify_bundle(bundle_dir), cfg.events, SessionOptions("cpu", 1), False)
    engine, reason = load_engine(cfg.speech, cfg.events)
    if engine is None:
        raise RuntimeError(f"speech engine unavailable: {reason}")
    matcher = CommandMatcher(cfg.speech, cfg.events)
    clips = sc.make_clips(work, voices=voices, snrs=(None, 10.0), commands=sc.COMMANDS + sc.EXTRA_COMMANDS)
    clips += sc.make_clips(work, voices=voices, commands=(), near_misses=sc.NEAR_MISSES,
                           non_commands=sc.NON_COMMANDS, noise=3)
    rows = []
    for c in clips:
        pcm, _ = sf.read(c.path, dtype="float32")
        res = recognise(pcm, models, engine, matcher, cfg.audio)
        got = [r.verdict.event for r in res if r.verdict.accepted]
        rows.append({"kind": c.kind, "text": c.text, "voice": c.voice, "snr_db": c.snr_db,
                     "expected": c.expected, "got": got,
                     "transcripts": [r.transcript.text for r in res],
                     "verdicts": [r.verdict.reason for r in res],
                     "asr_ms": [round(r.asr_ms, 1) for r in res]})
    return {"engine": engine.name, "clips": rows, "summary": _summarise(rows)}


def _summarise(rows: list[dict]) -> dict[str, Any]:
    def of(kind: str, snr=None) -> list[dict]:
        return [r for r in rows if r["kind"] == kind and r["snr_db"] == snr]

    def right(rs):
        return sum(r["got"] == [r["expected"]] for r in rs)

    def wrong(rs):
        return sum(bool(r["got"]) and r["got"] != [r["expected"]] for r in rs)

    asr = [ms for r in rows for ms in r["asr_ms"]]
    clean, noisy = of("command"), of("command", 10.0)
    return {
        "commands_clean": {"right": right(clean), "wrong": wrong(clean), "n": len(clean)},
        "commands_10db": {"right": right(noisy), "wrong": wrong(noisy), "n": len(noisy)},
        "false_accepts": {k: {"accepted": sum(bool(r["got"]) for r in of(k)), "n": len(of(k))}
                          for k in ("non_command", "near_miss", "noise")},
        "asr_ms": {"p50": _pct(asr, 50), "p90": _pct(asr, 90), "n": len(asr)},
    }


# ------------------------------------------------------------------ live latency and CPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command_track(work: Path, voices: tuple[str, ...], gap_s: float) -> tuple[Path, float]:
    """One WAV: every command in every voice, each followed by `gap_s` of silence."""
    parts = []
    for voice in voices:
        for text, _event in sc.COMMANDS:
            path = sc.synth(text, voice, work / f"track-{sc._slug(text)}-{sc._slug(voice)}.wav", 0.3)
            pcm, _ = sf.read(path, dtype="float32")
            parts += [pcm, np.zeros(int(gap_s * sc.SR), np.float32)]
    track = np.concatenate(parts)
    out = work / "commands-track.wav"
    sf.write(out, track, sc.SR, subtype="PCM_16")
    return out, len(track) / sc.SR


def _collect(endpoint: str, out: list[dict], stop: threading.Event) -> None:
    from perceptd.daemon.control.client import subscribe

    for _topic, msg in subscribe(endpoint, stop=stop):
        out.append(msg)


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def live(bundle_dir: Path, work: Path, voices: tuple[str, ...], gap_s: float = 3.0) -> dict[str, Any]:
    """The track with speech on, then off: latencies from the first, CPU from the difference."""
    track, seconds = _command_track(work, voices, gap_s)
    on = _run_daemon(bundle_dir, work, track, seconds, speech=True)
    off = _run_daemon(bundle_dir, work, track, seconds, speech=False)
    out = _latencies(on["msgs"], on["status"], on["wall"], seconds)
    extra = on["cpu_s"] - off["cpu_s"] * on["wall"] / off["wall"]
    out.update(daemon_cpu_s={"speech_on": round(on["cpu_s"], 2), "speech_off": round(off["cpu_s"], 2)},
               asr_cpu_s=round(extra, 2), asr_cpu_share=round(extra / on["wall"], 3))
    return out


def _run_daemon(bundle_dir: Path, work: Path, track: Path, seconds: float, speech: bool) -> dict:
    from perceptd.daemon.control.client import send_request

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    control = f"tcp://127.0.0.1:{_free_port()}"
    events = f"tcp://127.0.0.1:{_free_port()}"
    cfg.update(bundle={"dir": str(bundle_dir.parent), "version": bundle_dir.name},
               sources={"audio_files": [{"id": "wav0", "path": str(track)}]},
               publish={"endpoint": events}, control={"endpoint": control},
               http={"enabled": False}, speech={**cfg.get("speech", {}), "enabled": speech})
    cfg_path = work / "asr-bench.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    msgs: list[dict] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_collect, args=(events, msgs, stop), daemon=True)
    watcher.start()
    log = (work / "daemon.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "perceptd", "run", "-c", str(cfg_path)],
                            stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        status = _wait_ready(proc, control, send_request)
        t0, cpu0 = time.monotonic(), _proc_cpu_s(proc.pid)
        time.sleep(seconds + 4.0)
        status = send_request(control, {"type": "status"}, timeout_s=5.0)
        wall, cpu = time.monotonic() - t0, _proc_cpu_s(proc.pid) - cpu0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        stop.set()
        watcher.join(3)
    return {"msgs": msgs, "status": status, "wall": wall, "cpu_s": cpu}


def _wait_ready(proc, control: str, send_request, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}")
        try:
            reply = send_request(control, {"type": "status"}, timeout_s=1.0)
            if reply.get("ok"):
                return reply
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    raise TimeoutError("daemon not ready")


def _latencies(msgs: list[dict], status: dict, wall: float, seconds: float) -> dict[str, Any]:
    transcripts = [m for m in msgs if m["topic"] == "speech" and m.get("text") is not None]
    starts = [m for m in msgs if m["topic"].startswith("event.") and m["phase"] == "start"]
    to_transcript, to_event, misses = [], [], 0
    for t in transcripts:
        to_transcript.append(t["latency_ms"])
        if not t.get("command"):
            continue
        ev = next((e for e in starts if e["topic"] == f"event.{t['command']}"
                   and 0 <= e["t_publish_ns"] - t["end_ns"] < 10e9), None)
        if ev is None:
            misses += 1
            continue
        to_event.append((ev["t_publish_ns"] - t["end_ns"]) / 1e6)
    speech = status.get("speech", {})
    return {
        "track_s": round(seconds, 1), "wall_s": round(wall, 1), "transcripts": len(transcripts),
        "commands": len(to_event) + misses, "accepted_without_event": misses,
        "end_of_speech_to_transcript_ms": {"p50": _pct(to_transcript, 50), "p99": _pct(to_transcript, 99)},
        "end_of_speech_to_event_ms": {"p50": _pct(to_event, 50), "p99": _pct(to_event, 99),
                                      "max": _pct(to_event, 100), "n": len(to_event)},
        "asr_busy_share": round(speech.get("busy_s", 0.0) / wall, 3),
        "asr_dropped": speech.get("dropped"), "verdicts": speech.get("verdicts"),
    }


# ------------------------------------------------------------------ report


def table(data: dict[str, Any]) -> str:
    s, lv = data["offline"]["summary"], data.get("live", {})
    fa = s["false_accepts"]
    lat = lv.get("end_of_speech_to_event_ms", {})
    tr = lv.get("end_of_speech_to_transcript_ms", {})
    lines = [
        f"# Spoken commands ({data['offline']['engine']}, {data['env']['machine']['cores']} cores, "
        f"{data['env']['date']})", "",
        "| figure | value |", "|---|---|",
        f"| right intent, clean | {s['commands_clean']['right']} / {s['commands_clean']['n']} "
        f"(wrong command: {s['commands_clean']['wrong']}) |",
        f"| right intent, pink noise 10 dB SNR | {s['commands_10db']['right']} / "
        f"{s['commands_10db']['n']} (wrong command: {s['commands_10db']['wrong']}) |",
        f"| false accepts, non-command sentences | {fa['non_command']['accepted']} / "
        f"{fa['non_command']['n']} |",
        f"| false accepts, near-miss phrases | {fa['near_miss']['accepted']} / {fa['near_miss']['n']} |",
        f"| false accepts, noise-only clips | {fa['noise']['accepted']} / {fa['noise']['n']} |",
        f"| recognizer + matcher per segment, p50 / p90 | {s['asr_ms']['p50']} / {s['asr_ms']['p90']} ms |",
    ]
    if lv:
        lines += [
            f"| end of speech -> transcript, p50 / p99 | {tr.get('p50')} / {tr.get('p99')} ms |",
            f"| end of speech -> event, p50 / p99 (n={lat.get('n')}) | {lat.get('p50')} / "
            f"{lat.get('p99')} ms |",
            f"| accepted spoken commands that gave no event (later than the window) | "
            f"{lv['accepted_without_event']} / {lv['commands']} |",
            f"| recognizer CPU share, one core = 1.0 (daemon CPU speech on - off) | "
            f"{lv['asr_cpu_share']} ({lv['asr_cpu_s']} s over {lv['wall_s']} s) |",
            f"| recognizer busy share (worker wall time) | {lv['asr_busy_share']} |",
        ]
    lines += ["", "Voices: " + ", ".join(data["voices"]) + " (live run: the first two); end of "
              "speech = the VAD segment's end (the segment closes audio.hangover_ms later). Live run: "
              f"{lv.get('commands')} spoken commands replayed in real time from a WAV, no camera; "
              f"load average at the end {data.get('loadavg')}."]
    return "\n".join(lines) + "\n"


def main(config: Path, bundle_dir: Path, json_out: str | None = None, live_run: bool = True,
         voices: tuple[str, ...] = sc.VOICES) -> Path:
    from perceptd.daemon.config import load_config

    if sc.tools_missing():
        raise RuntimeError(f"the ASR benchmark needs {', '.join(sc.tools_missing())}")
    cfg = load_config(config)
    with tempfile.TemporaryDirectory(prefix="asr-bench-") as tmp:
        work = Path(tmp)
        data: dict[str, Any] = {"env": environment(), "voices": list(voices),
                                "speech_config": cfg.speech.model_dump(mode="json")}
        data["offline"] = offline(cfg, bundle_dir, work / "clips", voices)
        if live_run:
            data["live"] = live(bundle_dir, work, voices[:2])
        data["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    path = write_json("asr", data, json_out)
    md = table(data)
    (RESULTS / "asr.md").write_text(md)
    print(md)
    return path
