"""The shadow beside a fusion stage, on a virtual clock (real bundle: text encoder, fusion head):
refusals, the candidate's own events on shadow.event.*, the report's agreement and missing
events, the period's end and a change of the live bundle."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from perceptd.daemon.bundle import MANIFEST, sha256_file, verify_bundle
from perceptd.daemon.config.root import BundleConfig, ShadowConfig
from perceptd.daemon.inference.models import load_models
from perceptd.daemon.inference.session import SessionOptions
from perceptd.daemon.pipeline.fusion_stage import FusionStage
from perceptd.daemon.pipeline.queues import BoundedQueue
from perceptd.daemon.pipeline.text_stage import TextCommand, TextStage
from perceptd.daemon.shadow import Shadow, ShadowRefused, load_candidate_head
from tests.rigs.bundles import clone_version, link_bundle

S = 1_000_000_000


def _candidate(root: Path, base: str, name: str, calibration: dict) -> None:
    d = clone_version(root, base, name)
    (d / "calibration.json").unlink()  # a hard link to the repository's bundle
    (d / "calibration.json").write_text(json.dumps(calibration))
    manifest = json.loads((d / MANIFEST).read_text())
    manifest["files"]["calibration.json"] = sha256_file(d / "calibration.json")
    (d / MANIFEST).write_text(json.dumps(manifest, indent=2))


@pytest.fixture(scope="module")
def parts(bundle_dir, default_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("shadow") / "bundle"
    v1 = link_bundle(bundle_dir, root)
    _candidate(root, v1, "quiet", {"lights_on": [1.0, -20.0]})  # never turns the lights on
    d = clone_version(root, v1, "other-enc")  # another text encoder file: other fingerprint
    manifest = json.loads((d / MANIFEST).read_text())
    data = (d / "text.onnx").read_bytes() + b"\0"
    (d / "text.onnx").unlink()
    (d / "text.onnx").write_bytes(data)
    manifest["files"]["text.onnx"] = sha256_file(d / "text.onnx")
    manifest["models"]["text"].pop("sha256", None)
    (d / MANIFEST).write_text(json.dumps(manifest, indent=2))
    cfg = default_config
    models = load_models(verify_bundle(root / v1), cfg.events, SessionOptions("cpu", 1), False)
    return cfg, root, models


def _rig(parts, clock: list[int], serving=None):
    cfg, root, models = parts
    publish: BoundedQueue = BoundedQueue("publish", 4096, "block")
    holder: dict = {}
    shadow = Shadow(lambda: BundleConfig(dir=root), serving or (lambda: models),
                    lambda b, s: load_candidate_head(b, s, cfg.events, SessionOptions("cpu", 1)),
                    cfg.events, publish, ShadowConfig(),
                    live_active=lambda: [n for n, d in holder["f"].decoders.items() if d.active],
                    clock=lambda: clock[0])
    fusion = FusionStage(BoundedQueue("in", 4, "block"), publish, lambda: models, cfg.events,
                         on_fused=shadow.on_fused)
    holder["f"] = fusion
    return shadow, fusion, publish


def _running(shadow: Shadow) -> dict:
    deadline = time.monotonic() + 60
    while (r := shadow.report()) is not None and r["state"] == "loading":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert r is not None and r["state"] == "running", r
    return r


def _command(parts, text: str, t: int):
    cfg, _root, models = parts
    q: BoundedQueue = BoundedQueue("fusion", 4, "block")
    TextStage(BoundedQueue("commands", 4, "block"), q, lambda: models,
              [list(e.prompts) for e in cfg.events]).process([TextCommand(text, "control", t)])
    return q.get(timeout=1)


def _drain(q: BoundedQueue) -> list:
    out = []
    while (item := q.get(timeout=0)) is not None:
        out.append(item.payload)
    return out


def test_refusals_are_one_clear_line(parts) -> None:
    clock = [10 * S]
    shadow, _fusion, _q = _rig(parts, clock)
    with pytest.raises(ShadowRefused, match="encoders of other-enc differ.*not supported"):
        shadow.start("other-enc")
    with pytest.raises(ShadowRefused, match="is the bundle serving"):
        shadow.start(parts[2].version)
    with pytest.raises(ShadowRefused, match="no such bundle"):
        shadow.start("nope")
    with pytest.raises(ShadowRefused, match="no shadow is running"):
        shadow.stop()
    assert shadow.report() is None


def test_candidate_events_go_to_shadow_topics_and_the_report_counts_them(parts) -> None:
    clock = [100 * S]
    shadow, fusion, q = _rig(parts, clock)
    shadow.start("quiet", minutes=1)
    _running(shadow)
    t = clock[0] + S
    fusion.step([_command(parts, "turn on the lights", t)], t)
    for k in range(1, 40):  # 4 s of ticks: the command's event starts and ends
        fusion.step([], t + k * S // 10)
    msgs = _drain(q)
    live = [m for m in msgs if m.topic.startswith("event.")]
    assert any(m.topic == "event.lights_on" and m.phase == "start" for m in live), live
    shadow_msgs = [m for m in msgs if m.topic.startswith("shadow.")]
    assert not any(m.event == "lights_on" for m in shadow_msgs), shadow_msgs  # silenced in `quiet`
    assert all(m.candidate_version == "quiet" for m in shadow_msgs)
    r = shadow.report()
    assert r is not None and r["state"] == "running" and r["evaluations"] == 40
    assert r["events"]["lights_on"] == {"live_starts": 1, "shadow_starts": 0}
    assert r["missing"] >= 1 and any(o["event"] == "lights_on" for o in r["missing_events"])
    assert r["agreement"] is not None and r["agreement"] < 1.0
    assert r["added_ms"]["p50"] is not None
    # the period ends on the fusion thread's next evaluation past it; the report is final
    clock[0] += 61 * S
    fusion.step([], t + 65 * S)
    final = shadow.report()
    assert final is not None and final["state"] == "done" and final["ended"] == "period over"
    fusion.step([], t + 66 * S)
    assert shadow.report() == final and shadow.report()["evaluations"] == 40


def test_a_change_of_the_live_bundle_ends_the_shadow(parts) -> None:
    clock = [300 * S]
    serving = {"m": parts[2]}
    shadow, fusion, _q = _rig(parts, clock, serving=lambda: serving["m"])
    shadow.start("quiet", minutes=5)
    _running(shadow)
    fusion.step([], clock[0])

    class Other:  # what BundleSwapper.current() returns after a swap (only .version is read)
        version = "quiet"

    serving["m"] = Other()
    fusion.step([], clock[0] + S // 10)
    r = shadow.report()
    assert r is not None and r["state"] == "done" and r["ended"] == "the live bundle changed to quiet"
    assert r["evaluations"] == 1
