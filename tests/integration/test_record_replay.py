"""Record a live run, replay it deterministically, evaluate bundles on it (issue 16), on real
components: a photo streamed by ffmpeg over UDP, a spoken phrase from a WAV file, a typed
command over the control socket.  The recording is made once per module by
`perceptd run --record DIR`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from perceptd.daemon.bundle import MANIFEST, sha256_file
from perceptd.daemon.publish import validate_message
from tests.rigs.bundles import clone_version, link_bundle
from tests.rigs.daemon import Collector, DaemonProcess, daemon_config
from tests.rigs.ffmpeg_stream import FfmpegStream, ffmpeg_available

REPO = Path(__file__).resolve().parents[2]
CAT = REPO / "samples" / "images" / "cat.jpg"
PHRASE = REPO / "samples" / "audio" / "turn_on_the_kitchen_lights.wav"

pytestmark = pytest.mark.skipif(not ffmpeg_available(), reason="ffmpeg is not installed")


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("record")
    stream = FfmpegStream(CAT, kind="udp", log_dir=tmp).start()
    cfg = daemon_config(
        tmp,
        sources={"cameras": [{"id": "camera0", "uri": stream.url, "fps": 10, "read_timeout_s": 1.0}],
                 "audio_files": [{"id": "wav0", "path": str(PHRASE)}]},
        record={"video": "lossless"},  # replay sees the very pixels: scores equal to 1e-6
        console={"enabled": False},
    )
    daemon = DaemonProcess(cfg, "--record", str(tmp / "rec"))
    collector = Collector(daemon.events_endpoint)
    try:
        daemon.wait_ready(90)
        collector.wait_for(lambda m: m["topic"] == "vision", timeout=30)
        time.sleep(1.0)
        assert daemon.request({"type": "command", "text": "turn off the lights"})["ok"]
        collector.wait_for(lambda m: m["topic"] == "event.lights_off", timeout=15)
        time.sleep(3.0)  # the WAV's phrase (about 1-2.5 s after start) is well over by now
        assert daemon.terminate(20) == 0, daemon.log()
    finally:
        daemon.kill()
        collector.close()
        stream.stop()
    folders = list((tmp / "rec").glob("*/meta.json"))
    assert len(folders) == 1, folders
    return {"dir": folders[0].parent, "tmp": tmp, "live": collector.snapshot()}


def _replay(path: Path, *args: str, timeout: float = 180) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    res = subprocess.run([sys.executable, "-m", "perceptd", "replay", str(path), "--json", *args],
                         capture_output=True, text=True, timeout=timeout, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    msgs = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    summary = next(json.loads(line)["replay"] for line in res.stderr.splitlines()
                   if line.startswith('{"replay"'))
    return msgs, summary


def _events(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in msgs if m["topic"].startswith("event.")]


def _same_events(a: list[dict[str, Any]], b: list[dict[str, Any]], *, publish_times: bool) -> None:
    """Identical topic, phase and virtual timestamps; scores and weights within 1e-6."""
    assert len(a) == len(b), ([(m["topic"], m["phase"]) for m in a], [(m["topic"], m["phase"]) for m in b])
    for x, y in zip(a, b, strict=True):
        assert (x["topic"], x["phase"], x["t_capture_ns"]) == (y["topic"], y["phase"], y["t_capture_ns"])
        if publish_times:
            assert x["t_publish_ns"] == y["t_publish_ns"]
        assert abs(x["score"] - y["score"]) <= 1e-6, (x, y)
        assert x["modalities"].keys() == y["modalities"].keys(), (x, y)
        for name, mx in x["modalities"].items():
            my = y["modalities"][name]
            assert abs(mx["weight"] - my["weight"]) <= 1e-6 and abs(mx["score"] - my["score"]) <= 1e-6


def test_recording_holds_every_input_and_message(recording) -> None:
    rec = recording["dir"]
    meta = json.loads((rec / "meta.json").read_text())
    assert meta["bundle_version"] and meta["config"]["record"]["enabled"] is True
    stats = meta["stats"]
    assert stats["frames"] > 20 and stats["chunks"] > 100 and stats["dropped"] == {}, stats
    assert list((rec / "video" / "camera0").glob("seg-*.mkv"))
    assert list((rec / "audio" / "wav0").glob("seg-*.f32"))
    cmds = [json.loads(line) for line in (rec / "commands.jsonl").read_text().splitlines()]
    assert {"text": "turn off the lights", "origin": "control"}.items() <= cmds[0].items(), cmds
    recorded = [json.loads(line) for line in (rec / "messages.jsonl").read_text().splitlines()]
    live_events = _events(recording["live"])
    assert live_events and [m["seq"] for m in recorded] == list(range(len(recorded)))
    # what subscribers got is what was recorded (the last health may leave after they close)
    by_seq = {m["seq"]: m for m in recorded}
    for m in live_events:
        assert by_seq[m["seq"]]["t_capture_ns"] == m["t_capture_ns"]


def test_replays_under_load_are_identical_and_equal_the_live_run(recording) -> None:
    rec = recording["dir"]
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # a busier machine
    try:
        first, s1 = _replay(rec)
        second, s2 = _replay(rec)
    finally:
        hog.kill()
        hog.wait(5)
    assert s1["schedule"] == "live" and s1["problems"] == [], s1
    assert s1["frames"] == json.loads((rec / "meta.json").read_text())["stats"]["frames"]
    for m in first[:50] + _events(first):
        validate_message(m)
    # deterministic: every message, not only events, bit for bit (but nothing else differs)
    assert [json.dumps(m, sort_keys=True) for m in first] == [json.dumps(m, sort_keys=True) for m in second]
    recorded = [json.loads(line) for line in (rec / "messages.jsonl").read_text().splitlines()]
    live = _events(recorded)
    topics = {m["topic"] for m in live}
    assert {"event.cat_present", "event.lights_off", "event.lights_on"} <= topics, topics
    _same_events(_events(first), live, publish_times=False)
    assert [m["text"] for m in first if m["topic"] == "speech"] == \
        [m["text"] for m in recorded if m["topic"] == "speech"]


def test_replay_at_real_time_and_on_the_tick_schedule_is_deterministic(recording) -> None:
    rec = recording["dir"]
    fast, _ = _replay(rec)
    slow, s = _replay(rec, "--speed", "1")
    assert s["wall_s"] >= 0.9 * s["virtual_s"], s
    _same_events(_events(fast), _events(slow), publish_times=True)
    tick1, _ = _replay(rec, "--schedule", "tick")
    tick2, _ = _replay(rec, "--schedule", "tick")
    _same_events(_events(tick1), _events(tick2), publish_times=True)
    assert {m["topic"] for m in _events(tick1)} == {m["topic"] for m in _events(fast)}


def test_a_damaged_recording_replays_what_is_intact(recording) -> None:
    cut = recording["tmp"] / "damaged"
    shutil.copytree(recording["dir"], cut)
    seg = cut / "video" / "camera0" / "seg-000000.mkv"
    data = seg.read_bytes()
    seg.write_bytes(data[: len(data) * 3 // 4])  # a power cut mid-segment
    (cut / "audio" / "wav0" / "seg-000000.idx").unlink()  # a lost index
    journal = cut / "journal.jsonl"
    journal.write_bytes(journal.read_bytes()[:-20])  # a cut last line
    msgs, s = _replay(cut)
    problems = "\n".join(s["problems"])
    assert "frames decodable" in problems and "no index" in problems and "journal.jsonl" in problems, s
    total = json.loads((cut / "meta.json").read_text())["stats"]["frames"]
    assert 0 < s["frames"] < total and s["chunks"] == 0, s
    assert sum(m["topic"] == "vision" for m in msgs) == s["frames"]
    assert any(m["topic"] == "event.cat_present" for m in msgs)
    assert any(m["topic"] == "event.lights_off" for m in msgs)  # the typed command is intact


def _candidate(root: Path, base: str, name: str, calibration: dict[str, list[float]]) -> None:
    """A stand-in for a retrained bundle: the same models with per-event calibration (what
    retrain fine-tunes), written as root/<name> with a manifest that verifies."""
    d = clone_version(root, base, name)
    (d / "calibration.json").unlink()  # a hard link to the repository's bundle: never write through
    (d / "calibration.json").write_text(json.dumps(calibration))
    manifest = json.loads((d / MANIFEST).read_text())
    manifest["files"]["calibration.json"] = sha256_file(d / "calibration.json")
    (d / MANIFEST).write_text(json.dumps(manifest, indent=2))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "perceptd", *args], capture_output=True, text=True,
                          timeout=180, check=False)


def test_evaluate_shows_a_fixed_wrong_event_and_gates_a_worse_candidate(recording) -> None:
    rec, tmp = recording["dir"], recording["tmp"]
    root = tmp / "bundles"
    base = link_bundle((REPO / "bundle" / "current").resolve(), root)
    _candidate(root, base, "fixed", {"speech": [1.0, -20.0]})  # never fires `speech` again
    _candidate(root, base, "worse", {"dog_present": [1.0, 20.0]})  # a dog wherever it looks
    meta = json.loads((rec / "meta.json").read_text())
    cfg = meta["config"]
    cfg["bundle"]["dir"] = str(root)
    cfg_path = tmp / "evaluate.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    # the user says: the `speech` events were wrong here, the cat was right
    recorded = [json.loads(line) for line in (rec / "messages.jsonl").read_text().splitlines()]
    t0 = meta["started_mono_ns"]
    starts = {(m["event"], m["t_capture_ns"]) for m in _events(recorded) if m["phase"] == "start"}
    speech = sorted(t for e, t in starts if e == "speech")
    cat = min(t for e, t in starts if e == "cat_present")
    assert speech, starts
    for t in speech:
        r = _cli("label-range", str(rec), "--from", f"{(t - t0) / 1e9 - 0.1:.3f}", "--to",
                 f"{(t - t0) / 1e9 + 0.1:.3f}", "none")
        assert r.returncode == 0, r.stderr
    r = _cli("label-range", str(rec), "--from", f"{(cat - t0) / 1e9 - 0.5:.3f}", "--to",
             f"{(cat - t0) / 1e9 + 0.5:.3f}", "cat_present")
    assert r.returncode == 0, r.stderr

    r = _cli("evaluate", "--recordings", str(rec), "--bundle", base, "--bundle", "fixed",
             "-c", str(cfg_path), "--json", "--gate")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads(r.stdout)
    d = report["recordings"][0]["diff"]
    assert {o["event"] for o in d["removed"]} == {"speech"} and len(d["removed"]) == len(speech), d
    assert d["added"] == [] and d["shifted"] == [] and d["same"], d  # nothing else changed
    assert report["totals"]["agreement"] == round(len(d["same"]) / (len(d["same"]) + len(speech)), 4)
    a, b = report["recordings"][0]["a"], report["recordings"][0]["b"]
    assert a["fp"] == len(speech) and b["fp"] == 0 and a["tp"] == b["tp"] == 1, (a, b)
    assert report["gate"]["ok"] is True, report["gate"]

    r = _cli("evaluate", "--recordings", str(rec), "--bundle", base, "--bundle", "worse",
             "-c", str(cfg_path), "--gate")
    assert r.returncode == 3, r.stdout[-2000:] + r.stderr[-2000:]
    assert "adds a wrong dog_present" in r.stdout and "added dog_present" in r.stdout, r.stdout


def test_retrain_gate_rule_on_labelled_recordings(recording, tmp_path) -> None:
    """The retrain gate's optional rule (samples.retrain.gate.recordings, `retrain --recordings`):
    export/retrain.recordings_rule, what retrain runs after training, on a labelled copy of the
    recording; a candidate that fires dog_present on the cat is refused, with its figures."""
    from perceptd.daemon.evaluate import label_range
    from perceptd.export import retrain

    rec = tmp_path / "labelled"
    shutil.copytree(recording["dir"], rec)
    (rec / "labels.jsonl").unlink(missing_ok=True)
    root = tmp_path / "bundles"
    base = link_bundle((REPO / "bundle" / "current").resolve(), root)
    _candidate(root, base, "worse", {"dog_present": [1.0, 20.0]})  # a dog wherever it looks
    _candidate(root, base, "same", {"dog_present": [1.0, -20.0]})  # never a dog (there is none)
    meta = json.loads((rec / "meta.json").read_text())
    cfg = meta["config"]
    cfg["bundle"]["dir"] = str(root)
    cfg_path = tmp_path / "gate.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    recorded = [json.loads(line) for line in (rec / "messages.jsonl").read_text().splitlines()]
    t0 = meta["started_mono_ns"]
    cat = min(m["t_capture_ns"] for m in _events(recorded)
              if m["event"] == "cat_present" and m["phase"] == "start")
    label_range(rec, (cat - t0) / 1e9 - 0.5, (cat - t0) / 1e9 + 0.5, "cat_present")

    rule, figures = retrain.recordings_rule([rec], base, "worse", cfg_path)
    assert not rule.passed and rule.name == "recordings", rule
    f = figures[0]
    assert f["labels"] == 1 and f["added_wrong"] >= 1 and f["lost_right"] == 0, f
    assert {o["event"] for o in f["wrong_added"]} == {"dog_present"}, f
    assert f["precision"] == {"old": 1.0, "new": round(1 / (1 + f["added_wrong"]), 4)}, f
    assert f["recall"] == {"old": 1.0, "new": 1.0}, f
    assert f"{f['added_wrong']} wrong added, 0 right lost" in rule.detail, rule
    # a candidate that changes nothing on the labelled range passes
    rule, figures = retrain.recordings_rule([rec], base, "same", cfg_path)
    assert rule.passed, rule
    assert figures[0]["added_wrong"] == figures[0]["lost_right"] == 0, figures
    bad, figures = retrain.recordings_rule([tmp_path / "nowhere"], base, "worse", cfg_path)
    assert not bad.passed and "could not be evaluated" in bad.detail and figures == [], bad


def test_retrain_recordings_flag_puts_the_rule_in_the_gate_report(recording, tmp_path) -> None:
    """`perceptd retrain --recordings DIR` end to end: dated labelled samples (the retrain rig's
    photos), a short training, and the gate report carries the `recordings` rule with its figures."""
    from perceptd.daemon.config import load_config
    from tests.rigs.samples import store_dated_views

    rec = tmp_path / "labelled"
    shutil.copytree(recording["dir"], rec)
    (rec / "labels.jsonl").unlink(missing_ok=True)
    root = tmp_path / "bundles"
    base = link_bundle((REPO / "bundle" / "current").resolve(), root)
    meta = json.loads((rec / "meta.json").read_text())
    cfg = meta["config"]
    cfg["bundle"] = {**cfg["bundle"], "dir": str(root), "version": "current"}
    cfg["samples"] = {**cfg.get("samples", {}), "dir": str(tmp_path / "samples"),
                      "encryption": {"enabled": False},
                      "retrain": {"dir": str(tmp_path / "retrain"), "epochs": 20,
                                  "gate": {"permutation_runs": 0, "latency_budget_ms": 25}}}
    cfg_path = tmp_path / "retrain.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    recorded = [json.loads(line) for line in (rec / "messages.jsonl").read_text().splitlines()]
    t0 = meta["started_mono_ns"]
    cat = min(m["t_capture_ns"] for m in _events(recorded)
              if m["event"] == "cat_present" and m["phase"] == "start")
    r = _cli("label-range", str(rec), "--from", f"{(cat - t0) / 1e9 - 0.5:.3f}", "--to",
             f"{(cat - t0) / 1e9 + 0.5:.3f}", "cat_present")
    assert r.returncode == 0, r.stderr
    plan = {"cat": (14, ["cat_present"]), "astronaut": (6, ["person_present"]), "coffee": (6, []),
            "grass": (6, []), "brick": (4, [])}
    store_dated_views(load_config(cfg_path), root / base, plan, {"silence": []}, 900)
    r = _cli("retrain", "-c", str(cfg_path), "--recordings", str(rec), "--json")
    assert r.returncode in (0, 3), r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads(r.stdout)
    rule = next(x for x in report["rules"] if x["name"] == "recordings")
    f = report["recordings"][0]
    assert f["recording"] == str(rec) and f["labels"] == 1, f
    assert rule["passed"] == (f["added_wrong"] == f["lost_right"] == 0), (rule, f)
    assert f["recall"]["old"] == 1.0 and set(f["precision"]) == {"old", "new"}, f  # the cat was found
    assert report["training"]["recordings_seconds"] > 0
    md = Path(report["reports"]["markdown"]).read_text()
    assert "## Labelled recordings" in md and f"| {rec} | 1 |" in md, md
    print(rule["detail"], report["training"]["seconds"], report["seconds"])
