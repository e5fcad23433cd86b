"""The bundle contract: manifest fields, sha256 refusal, recorded parity, pointers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from perceptd.daemon.bundle import (
    BundleError,
    pointer_target,
    promote,
    resolve_bundle,
    rollback,
    sha256_file,
    verify_bundle,
)
from perceptd.export.parity import check_parity
from perceptd.export.target import ExportTarget

ENCODERS = {"vision", "face_pnet", "face_rnet", "face_onet", "vad", "audio", "text"}
EXPECTED = ENCODERS | {"fusion", "vision_resize"}


def test_manifest_has_every_model_and_field(bundle) -> None:
    m = bundle.manifest
    assert set(m) >= {"version", "created_at", "models", "files"}
    assert set(m["models"]) == EXPECTED
    for name, e in m["models"].items():
        for key in ("file", "opset", "ir_version", "inputs", "outputs", "preprocessing",
                    "source", "license", "parity"):
            assert key in e, (name, key)
        assert e["opset"] <= 18 and e["ir_version"] <= 10, name
        assert m["files"][e["file"]] == sha256_file(bundle.path / e["file"])
        assert e["sha256"] == m["files"][e["file"]], name  # docs/bundle.md: each entry has its hash
        assert e["source"]["package"] and e["source"]["version"]
        assert e["parity"]["max_abs_diff"] <= max(e["parity"]["tolerances"].values())
        assert e["inputs"] and e["outputs"]
        if name in ENCODERS - {"face_pnet"}:
            assert isinstance(e["inputs"][0]["shape"][0], str), f"{name}: batch axis not dynamic"


def test_labels_and_prompts_ship_in_the_bundle(bundle) -> None:
    assert len(bundle.labels("vision")) == 1000
    assert len(bundle.labels("audio")) == 521
    events = json.loads((bundle.path / "events.json").read_text())
    prompts = np.load(bundle.path / "event_prompts.npy")
    assert prompts.shape == (sum(len(e["prompts"]) for e in events), 384)


def _copy(bundle_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "root" / bundle_dir.name
    shutil.copytree(bundle_dir, dst)
    return dst


def test_tampered_model_is_refused_naming_the_file(bundle_dir: Path, tmp_path: Path) -> None:
    copy = _copy(bundle_dir, tmp_path)
    target = copy / "fusion.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"fusion\.onnx: sha256 mismatch"):
        verify_bundle(copy)


def test_model_entry_sha256_must_match_the_verified_file(bundle_dir: Path, tmp_path: Path) -> None:
    copy = _copy(bundle_dir, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"]["text"]["sha256"] = manifest["files"][manifest["models"]["text"]["file"]]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    verify_bundle(copy)
    manifest["models"]["text"]["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"models\.text\.sha256 differs"):
        verify_bundle(copy)


def test_missing_file_and_bad_parity_are_refused(bundle_dir: Path, tmp_path: Path) -> None:
    copy = _copy(bundle_dir, tmp_path)
    (copy / "text_tokenizer.json").unlink()
    with pytest.raises(BundleError, match=r"text_tokenizer\.json: missing"):
        verify_bundle(copy)
    shutil.copy(bundle_dir / "text_tokenizer.json", copy / "text_tokenizer.json")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"]["text"]["parity"]["per_output"]["embed"] = 0.5
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"models\.text\.parity\.embed"):
        verify_bundle(copy)


def test_parity_check_reports_the_output_that_exceeds() -> None:
    lin = torch.nn.Linear(4, 3).eval()
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    t = ExportTarget(
        name="lin", module=lin, example_inputs=(torch.from_numpy(x),), input_names=["x"],
        output_names=["y"], dynamic_axes={}, parity_inputs=[(x,)], tolerances={"y": 0.0},
        preprocessing={}, source={},
    )
    import tempfile

    from perceptd.export.onnx_export import export_onnx

    with tempfile.TemporaryDirectory() as d:
        lin.weight.data[0, 0] += 0  # the exported graph equals torch; zero tolerance still fails
        path = export_onnx(t, Path(d))
        with torch.no_grad():
            lin.weight.data[0, 0] += 0.01  # torch drifts from the exported graph
        res = check_parity(t, path)
    assert res.per_output["y"] > 1e-3
    assert res.failures and res.failures[0].startswith("lin.y: max_abs_diff")


def test_pointers_promote_and_rollback(bundle_dir: Path, tmp_path: Path) -> None:
    a = _copy(bundle_dir, tmp_path)
    root = a.parent
    b = root / "v2"
    shutil.copytree(a, b)
    promote(root, a.name)
    promote(root, "v2")
    assert pointer_target(root, "current") == "v2"
    assert pointer_target(root, "previous") == a.name
    assert rollback(root) == a.name
    assert resolve_bundle(root, "current") == a.resolve()
    with pytest.raises(BundleError, match="no such bundle"):
        resolve_bundle(root, "nope")
