"""A rollback or promotion to a bundle that verifies (manifest and sha256 agree) but does not load
must not leave `current` on it (issue 18, bug 1): the command returns as soon as the daemon
refuses it, with the daemon's reason, and puts the pointers back; a daemon started on such a
`current` falls back to `previous` with a health error instead of dying.

Real daemons (`perceptd run`) on a looping photo, real bundles (hard-linked copies of the built
one, `fusion.onnx` replaced by garbage whose sha256 the manifest records), the real CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perceptd.daemon.bundle import pointer_target, set_pointer
from perceptd.daemon.config import load_config
from tests.rigs.bundles import clone_version, link_bundle
from tests.rigs.daemon import DaemonProcess, daemon_config

REPO = Path(__file__).resolve().parents[2]
CAT = REPO / "samples" / "images" / "cat.jpg"

# file order kept (one daemon): each test starts from the bundle pointers the last one left
pytestmark = pytest.mark.random_order(disabled=True)


def _config(tmp: Path, root: Path) -> Path:
    return daemon_config(
        tmp, bundle={"dir": str(root), "version": "current"},
        sources={"cameras": [{"id": "camera0", "uri": str(CAT), "fps": 2, "loop": True}]},
        samples={"enabled": False}, speech={"enabled": False},
    )


@pytest.fixture(scope="module")
def rig(tmp_path_factory, bundle_dir):
    tmp = tmp_path_factory.mktemp("rollback")
    root = tmp / "bundle"
    v1 = link_bundle(bundle_dir, root)
    clone_version(root, v1, "vbad", corrupt="load")
    cfg = _config(tmp, root)
    daemon = DaemonProcess(cfg)
    try:
        daemon.wait_ready(120)
        yield {"daemon": daemon, "root": root, "v1": v1, "cfg": cfg, "tmp": tmp}
    finally:
        daemon.kill()


def _status(rig) -> dict:
    return rig["daemon"].request({"type": "status"})


def test_rollback_to_a_bundle_that_fails_to_load_is_undone_at_once(rig) -> None:
    root, v1 = rig["root"], rig["v1"]
    set_pointer(root, "current", v1)
    set_pointer(root, "previous", "vbad")
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "perceptd", "rollback", "-c", str(rig["cfg"]), "--json"],
                         capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - t0
    result = json.loads(out.stdout)
    print(f"rollback to an unloadable bundle returned in {elapsed:.2f} s: {result}")
    assert out.returncode == 1, out.stdout + out.stderr
    assert result["daemon"] == "refused" and result["restored"] is True
    assert "fusion.onnx" in result["detail"] and "vbad" in result["detail"]
    # the pointers are back: the next start serves the bundle that serves now
    assert pointer_target(root, "current") == v1 and pointer_target(root, "previous") == "vbad"
    assert result["current"] == v1
    assert elapsed < 15, f"the command waited {elapsed:.1f} s for a refusal the daemon gave at once"
    st = _status(rig)
    assert st["model_version"] == v1 and st["swap"]["state"] == "refused"
    assert any("vbad refused at load" in e for e in st["errors"])
    # the plain output names the reason too
    set_pointer(root, "previous", "vbad")
    text = subprocess.run([sys.executable, "-m", "perceptd", "rollback", "-c", str(rig["cfg"])],
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 1 and "rollback undone" in text.stdout and "fusion.onnx" in text.stdout
    assert pointer_target(root, "current") == v1


def test_promotion_of_a_bundle_that_fails_to_load_is_undone(rig) -> None:
    """`retrain --promote` promotes through the same transaction (export/retrain.py _dispose)."""
    from perceptd.daemon.reload import promote_and_reload

    root, v1 = rig["root"], rig["v1"]
    set_pointer(root, "current", v1)
    set_pointer(root, "previous", "vbad")
    clone_version(root, v1, "vbad2", corrupt="load")
    result = promote_and_reload(load_config(rig["cfg"]), "vbad2", wait_s=30)
    assert result["daemon"] == "refused" and result["restored"] is True, result
    assert "fusion.onnx" in result["detail"]
    assert pointer_target(root, "current") == v1 and pointer_target(root, "previous") == "vbad"


def test_a_good_swap_clears_the_refusal(rig) -> None:
    from perceptd.daemon.reload import promote_and_reload

    root, v1 = rig["root"], rig["v1"]
    clone_version(root, v1, "v2")
    result = promote_and_reload(load_config(rig["cfg"]), "v2", wait_s=60)
    assert result["daemon"] == "swapped" and not result.get("restored"), result
    assert pointer_target(root, "current") == "v2" and pointer_target(root, "previous") == v1
    st = _status(rig)
    assert st["model_version"] == "v2" and st["errors"] == [], st["errors"]
    assert st["health"]["errors"] == []


def test_reload_of_a_renamed_copy_says_it_is_the_same_version(rig) -> None:
    """A version folder copied under a new name keeps its manifest version: say so."""
    root = rig["root"]
    (root / "v2-copy").mkdir()
    for f in (root / "v2").iterdir():
        (root / "v2-copy" / f.name).hardlink_to(f)
    set_pointer(root, "current", "v2-copy")
    reply = rig["daemon"].request({"type": "reload"})
    assert reply["ok"] and reply["swapped"] is False
    assert "same bundle version as the one serving" in reply["detail"]
    set_pointer(root, "current", "v2")


def test_a_refused_config_is_an_error_until_a_good_one_is_read(rig) -> None:
    cfg, daemon = rig["cfg"], rig["daemon"]
    good = cfg.read_text()
    cfg.write_text(good + "\nfusion: {tick_msec: 50}\n")
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while not any("refused" in e and "tick_msec" in e for e in _status(rig)["errors"]):
        assert time.monotonic() < deadline, _status(rig)["errors"]
        time.sleep(0.1)
    cfg.write_text(good)
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while _status(rig)["errors"]:
        assert time.monotonic() < deadline, _status(rig)["errors"]
        time.sleep(0.1)


def test_refusals_are_logged_once_with_the_file(rig) -> None:
    root, v1 = rig["root"], rig["v1"]
    clone_version(root, v1, "vsha", corrupt="sha")
    set_pointer(root, "current", "vsha")
    reply = rig["daemon"].request({"type": "reload"})
    assert not reply["ok"] and "sha256" in reply["error"]
    set_pointer(root, "current", "v2")
    time.sleep(0.5)
    log = rig["daemon"].log_path.read_text()
    refused = [ln for ln in log.splitlines() if "event=bundle_refused" in ln and "vsha" in ln]
    assert len(refused) == 1 and "level=ERROR" in refused[0] and "fusion.onnx" in refused[0], refused
    load = [ln for ln in log.splitlines() if "event=swap_refused" in ln and "version=vbad " in ln]
    assert load and all("level=ERROR" in ln and "fusion.onnx" in ln for ln in load), load
    # back on the serving bundle: the refusal is no longer an open error
    assert rig["daemon"].request({"type": "reload"})["ok"]
    assert _status(rig)["errors"] == []
    assert rig["daemon"].terminate(timeout=15) == 0


def test_start_on_a_current_that_fails_to_load_falls_back_to_previous(tmp_path, bundle_dir) -> None:
    root = tmp_path / "bundle"
    v1 = link_bundle(bundle_dir, root)
    clone_version(root, v1, "vbad", corrupt="load")
    set_pointer(root, "current", "vbad")
    set_pointer(root, "previous", v1)
    daemon = DaemonProcess(_config(tmp_path, root))
    try:
        st = daemon.wait_ready(120)
        assert st["model_version"] == v1
        assert any("vbad (current) refused at start" in e and "fusion.onnx" in e for e in st["errors"])
        assert st["health"]["errors"] == st["errors"]
        assert "event=bundle_fallback" in daemon.log_path.read_text()
        assert daemon.terminate(timeout=15) == 0
    finally:
        daemon.kill()
