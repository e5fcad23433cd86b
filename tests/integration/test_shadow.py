"""Shadow (issue 16) on the real daemon: the looped sample cat photo as camera; a candidate bundle
(the serving one's files, a new version and changed calibration: what a fusion-only retrain
changes) runs beside the live bundle with `perceptd reload --shadow`; its events come on
`shadow.event.*`, the live messages are untouched (seq without gaps), the report says agreement,
the period ending or a stop ends it, a candidate with other encoders is refused, a candidate
that disagrees is refused promotion (`shadow.min_agreement`), and the agreeing one is promoted.
One daemon serves the module; tests run in file order."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from perceptd.daemon.bundle import MANIFEST, pointer_target, sha256_file
from perceptd.daemon.publish import validate_message
from tests.rigs.bundles import clone_version, link_bundle
from tests.rigs.daemon import Collector, DaemonProcess, daemon_config, free_tcp_port

REPO = Path(__file__).resolve().parents[2]
CAT = REPO / "samples" / "images" / "cat.jpg"

pytestmark = [
    # file order kept (one daemon): shadows run one after another, promotion comes last
    pytest.mark.random_order(disabled=True),
]


def _candidate(root: Path, base: str, name: str, calibration: dict[str, list[float]]) -> None:
    """A stand-in for a fusion-only retrain: the same models, per-event calibration changed."""
    d = clone_version(root, base, name)
    (d / "calibration.json").unlink()  # a hard link to the repository's bundle: never write through
    (d / "calibration.json").write_text(json.dumps(calibration))
    manifest = json.loads((d / MANIFEST).read_text())
    manifest["files"]["calibration.json"] = sha256_file(d / "calibration.json")
    (d / MANIFEST).write_text(json.dumps(manifest, indent=2))


def _other_encoders(root: Path, base: str, name: str) -> None:
    """A bundle that verifies but whose VAD model file differs (another encoder fingerprint)."""
    d = clone_version(root, base, name)
    vad = d / "vad.onnx"
    data = vad.read_bytes() + b"\0"
    vad.unlink()
    vad.write_bytes(data)
    manifest = json.loads((d / MANIFEST).read_text())
    manifest["files"]["vad.onnx"] = sha256_file(vad)
    if "sha256" in manifest["models"]["vad"]:
        manifest["models"]["vad"]["sha256"] = manifest["files"]["vad.onnx"]
    (d / MANIFEST).write_text(json.dumps(manifest, indent=2))


@pytest.fixture(scope="module")
def rig(tmp_path_factory, bundle_dir):
    tmp = tmp_path_factory.mktemp("shadow")
    root = tmp / "bundle"
    v1 = link_bundle(bundle_dir, root)
    _candidate(root, v1, "cand", {"cat_present": [1.0, 0.3]})  # the cat a little surer
    _candidate(root, v1, "doggy", {"dog_present": [1.0, 20.0]})  # a dog wherever it looks
    _other_encoders(root, v1, "other-enc")
    cfg = daemon_config(
        tmp, bundle={"dir": str(root), "version": "current"},
        sources={"cameras": [{"id": "camera0", "uri": str(CAT), "fps": 5, "loop": True}]},
        speech={"enabled": False}, console={"enabled": False},
        samples={"enabled": False, "dir": str(tmp / "samples"),  # retrain --shadow reads them
                 "retrain": {"dir": str(tmp / "retrain"), "epochs": 20,
                             "gate": {"permutation_runs": 0, "latency_budget_ms": 25}}},
        shadow={"min_agreement": 0.9},
    )
    daemon = DaemonProcess(cfg)
    collector = Collector(daemon.events_endpoint)
    try:
        daemon.wait_ready(120)
        collector.wait_for(lambda m: m["topic"] == "event.cat_present", 60)  # its start may
        # have come before the subscription did
        yield {"daemon": daemon, "collector": collector, "root": root, "v1": v1, "cfg": cfg}
    finally:
        daemon.kill()
        collector.close()


def _cli(rig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "perceptd", *args, "-c", str(rig["cfg"])],
                          capture_output=True, text=True, timeout=90, check=False)


def _shadow(rig) -> dict[str, Any] | None:
    return rig["daemon"].request({"type": "status"})["shadow"]


def _wait_state(rig, state: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = _shadow(rig)
        if s is not None and s["state"] == state:
            return s
        time.sleep(0.2)
    raise TimeoutError(f"shadow not {state} in {timeout} s: {_shadow(rig)}\n{rig['daemon'].log()}")


def test_shadow_runs_the_candidate_beside_the_live_bundle_until_its_period_ends(rig) -> None:
    c = rig["collector"]
    assert _shadow(rig) is None  # none ran yet
    since = time.monotonic()
    r = _cli(rig, "reload", "--shadow", "cand", "--minutes", "0.2")  # 12 s
    assert r.returncode == 0, r.stdout + r.stderr
    assert "shadow of cand loading beside" in r.stdout, r.stdout
    start = c.wait_for(lambda m: m["topic"] == "shadow.event.cat_present", 30, since)
    assert start["phase"] == "start" and start["candidate_version"] == "cand"
    assert start["model_version"] == rig["v1"]  # the live bundle stamps the envelope
    assert start["modalities"]["vision"]["weight"] > 0
    running = _shadow(rig)
    assert running["state"] == "running" and running["candidate"] == "cand", running
    assert running["remaining_s"] > 0
    done = _wait_state(rig, "done", 30)
    assert done["ended"] == "period over", done
    assert done["evaluations"] > 20, done  # ~10 per second for 12 s
    assert done["events"]["cat_present"] == {"live_starts": 1, "shadow_starts": 1}, done["events"]
    assert done["agreement"] == 1.0 and done["extra"] == 0 and done["missing"] == 0, done
    assert done["added_ms"]["p50"] is not None and done["added_ms"]["p99"] >= done["added_ms"]["p50"]
    assert done["head_ms"]["p50"] <= done["added_ms"]["p99"]
    # the candidate's open event ended with the shadow; nothing more on shadow.* after it
    end = c.wait_for(lambda m: m["topic"] == "shadow.event.cat_present" and m["phase"] == "end", 10,
                     since)
    time.sleep(1.5)
    later = c.snapshot(lambda m: m["topic"].startswith("shadow.") and m["seq"] > end["seq"])
    assert later == [], later
    # the candidate's calibration shows in its scores: it is its own head, not a copy of live
    live = c.snapshot(lambda m: m["topic"] == "event.cat_present" and m["_t_recv"] >= since)
    shadow = c.snapshot(lambda m: m["topic"] == "shadow.event.cat_present" and m["phase"] != "end")
    assert live and shadow
    assert min(m["score"] for m in shadow) > max(m["score"] for m in live), (
        [m["score"] for m in live], [m["score"] for m in shadow])
    # the final report stays in status, and the CLI prints it
    assert _shadow(rig) == done
    r = _cli(rig, "reload", "--shadow-report")
    assert r.returncode == 0 and "agreement 1.0" in r.stdout and "period over" in r.stdout, r.stdout
    print(r.stdout)


def test_shadow_stop_ends_it_and_keeps_the_report(rig) -> None:
    c = rig["collector"]
    since = time.monotonic()
    reply = rig["daemon"].request({"type": "shadow", "version": "cand", "minutes": 10})
    assert reply["ok"] and reply["shadow"] == "loading", reply
    again = rig["daemon"].request({"type": "shadow", "version": "doggy"})
    assert not again["ok"] and "stop it first" in again["error"], again
    c.wait_for(lambda m: m["topic"] == "shadow.event.cat_present" and m["phase"] == "start", 30, since)
    r = _cli(rig, "reload", "--shadow-stop")
    assert r.returncode == 0, r.stdout + r.stderr
    st = _shadow(rig)
    assert st["state"] == "done" and st["ended"] == "stopped" and st["agreement"] == 1.0, st
    c.wait_for(lambda m: m["topic"] == "shadow.event.cat_present" and m["phase"] == "end", 10, since)
    assert not rig["daemon"].request({"type": "shadow", "stop": True})["ok"]  # nothing runs now
    r = _cli(rig, "status")
    assert "shadow cand beside" in r.stdout and "done (stopped)" in r.stdout, r.stdout


def test_candidate_with_other_encoders_is_refused(rig) -> None:
    r = _cli(rig, "reload", "--shadow", "other-enc")
    assert r.returncode == 1
    line = r.stdout.strip()
    assert len(line.splitlines()) == 1, line
    assert "encoders of other-enc differ" in line and "not supported" in line, line
    assert _shadow(rig)["candidate"] == "cand"  # the last report is still the one shown


def test_retrain_shadow_hands_a_passing_candidate_to_the_daemon(rig, tmp_path) -> None:
    """`perceptd retrain --shadow MINUTES` after the gate passed: export/retrain._dispose, the code
    path retrain takes, with the prebuilt candidate instead of a training run (no samples here)."""
    from perceptd.daemon.config import load_config
    from perceptd.export import retrain

    cfg = load_config(rig["cfg"])

    def dispose(c, version: str, minutes: float, wait_s: float = 30.0) -> dict[str, Any]:
        report: dict[str, Any] = {"passed": True, "bundle_version": version, "rules": []}
        report.update(retrain._dispose(c, report, rig["root"] / version, tmp_path / version, False,
                                       wait_s, minutes))
        return report

    r = dispose(cfg, "cand", 0.5)
    assert retrain.exit_code(r) == 0, r
    assert r["shadow"] == {"daemon": "shadowing", "candidate": "cand", "live": rig["v1"],
                           "minutes": 0.5, "state": "running"}, r
    assert "perceptd reload --shadow-report" in r["outcome"] and "perceptd status" in r["outcome"]
    assert r["promoted"] is False and pointer_target(rig["root"], "current") == rig["v1"]
    st = _shadow(rig)
    assert st["candidate"] == "cand" and st["state"] == "running" and st["minutes"] == 0.5, st
    # the daemon refuses a second one while this runs: one line, exit 5, nothing moves
    r = dispose(cfg, "doggy", 0.5)
    assert retrain.exit_code(r) == retrain.EXIT_SHADOW_FAILED == 5, r
    assert r["shadow"]["daemon"] == "refused" and "stop it first" in r["shadow"]["detail"], r
    assert "no shadow runs: the daemon refused the shadow" in r["outcome"], r
    assert _shadow(rig)["candidate"] == "cand"
    assert rig["daemon"].request({"type": "shadow", "stop": True})["ok"]
    # no daemon at the control endpoint: exit 5 too
    gone = cfg.model_copy(update={"control": cfg.control.model_copy(
        update={"endpoint": f"tcp://127.0.0.1:{free_tcp_port()}"})})
    r = dispose(gone, "cand", 0.5, wait_s=2.0)
    assert retrain.exit_code(r) == 5 and r["shadow"]["daemon"] == "not_running", r
    assert "the daemon is not running" in r["outcome"], r
    # --shadow with --promote: refused before anything is trained, in one line
    p = _cli(rig, "retrain", "--shadow", "5", "--promote")
    assert p.returncode == 1 and p.stdout == "", p
    assert p.stderr.count("\n") == 1 and "--shadow and --promote do not go together" in p.stderr, p.stderr


def test_retrain_shadow_trains_gates_and_shadows_the_candidate(rig) -> None:
    """`perceptd retrain --shadow MINUTES` for real: dated labelled photo samples in the store, a
    short training; the passing candidate runs in shadow, nothing is promoted."""
    from perceptd.daemon.config import load_config
    from tests.rigs.samples import store_dated_views

    plan = {"cat": (14, ["cat_present"]), "astronaut": (6, ["person_present"]), "coffee": (6, []),
            "grass": (6, []), "brick": (4, [])}
    store_dated_views(load_config(rig["cfg"]), rig["root"] / rig["v1"], plan, {"silence": []}, 900)
    r = _cli(rig, "retrain", "--shadow", "0.5", "--json")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(r.stdout)
    version = report["bundle_version"]
    assert report["passed"] and report["promoted"] is False, report["rules"]
    assert report["shadow"] == {"daemon": "shadowing", "candidate": version, "live": rig["v1"],
                                "minutes": 0.5, "state": "running"}, report["shadow"]
    assert "perceptd reload --shadow-report" in report["outcome"], report["outcome"]
    st = _shadow(rig)
    assert st["candidate"] == version and st["state"] == "running", st
    assert pointer_target(rig["root"], "current") == rig["v1"]
    assert rig["daemon"].request({"type": "shadow", "stop": True})["ok"]
    rig["retrained"] = version


def test_promotion_refused_below_the_agreement_bar_then_allowed(rig) -> None:
    c, root = rig["collector"], rig["root"]
    since = time.monotonic()
    assert rig["daemon"].request({"type": "shadow", "version": "doggy", "minutes": 0.1})["ok"]
    c.wait_for(lambda m: m["topic"] == "shadow.event.dog_present" and m["phase"] == "start", 30, since)
    bad = _wait_state(rig, "done", 30)
    assert bad["extra"] >= 1 and bad["agreement"] < 0.9, bad
    assert bad["events"]["dog_present"]["live_starts"] == 0
    assert any(o["event"] == "dog_present" for o in bad["extra_events"]), bad
    r = _cli(rig, "reload", "--promote", "doggy", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["shadow_refused"] and "below shadow.min_agreement 0.9" in out["detail"], out
    assert pointer_target(root, "current") == rig["v1"]  # nothing moved

    # shadow `cand` again (it agrees), then promote it: the live bundle swaps
    since = time.monotonic()
    assert rig["daemon"].request({"type": "shadow", "version": "cand", "minutes": 0.1})["ok"]
    good = _wait_state(rig, "done", 40)
    assert good["agreement"] == 1.0 and good["candidate"] == "cand", good
    r = _cli(rig, "reload", "--promote", "cand", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["daemon"] == "swapped" and out["current"] == "cand" and out["previous"] == rig["v1"], out
    since = time.monotonic()
    msg = c.wait_for(lambda m: m["topic"] in ("vision", "event.cat_present"), 30, since)
    assert msg["model_version"] == "cand", msg


def test_live_messages_are_valid_and_gapless_and_never_carry_the_candidate(rig) -> None:
    c = rig["collector"]
    since = time.monotonic()  # a shadow running at the stop: its open events end too
    assert rig["daemon"].request({"type": "shadow", "version": "doggy", "minutes": 5})["ok"]
    c.wait_for(lambda m: m["topic"] == "shadow.event.dog_present" and m["phase"] == "start", 30, since)
    assert rig["daemon"].terminate(timeout=15) == 0
    c.wait_for(lambda m: m["topic"] == "health" and m["state"] == "stopped", 5, since)
    msgs = c.snapshot()
    assert msgs[-1]["topic"] == "health" and msgs[-1]["state"] == "stopped"
    holes = [(a["seq"], b["seq"], a["topic"], b["topic"])
             for a, b in zip(msgs, msgs[1:], strict=False) if b["seq"] != a["seq"] + 1]
    assert not holes, f"seq gaps: {holes[:5]}"
    for m in msgs:
        validate_message({k: v for k, v in m.items() if not k.startswith("_")})
    live = [m for m in msgs if m["topic"].startswith("event.")]
    assert all("candidate_version" not in m for m in live)
    assert not [m for m in live if m["topic"] == "event.dog_present"]  # doggy only ever shadowed
    cat = [m["phase"] for m in live if m["topic"] == "event.cat_present"]
    assert cat[-1] == "end" and "end" not in cat[:-1], cat  # the live cat never blinked: it
    # ended only at the stop
    shadow = [m for m in msgs if m["topic"].startswith("shadow.event.")]
    versions = {m["candidate_version"] for m in shadow}
    assert {"cand", "doggy"} <= versions <= {"cand", "doggy", rig.get("retrained")}, versions
    # every shadow occurrence that started also ended (period, stop, or the swap to `cand`)
    for v in versions:
        phases = [m["phase"] for m in shadow if m["candidate_version"] == v and m["phase"] != "update"]
        assert phases.count("start") == phases.count("end"), (v, phases)
