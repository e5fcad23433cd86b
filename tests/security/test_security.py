"""Security claims of docs/security.md that no other test file backs (each test names its claim)."""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import pytest

from perceptd.daemon.bundle import BundleError, resolve_bundle, sha256_file, verify_bundle
from perceptd.daemon.samples.store import INDEX, SampleStore
from tests.unit.test_samples_store import make_sample

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("daemon", "models", "export", "bench", "perceptd", "scripts")
UNSAFE_MODULES = ("pickle", "cPickle", "dill", "joblib", "cloudpickle", "shelve", "marshal")


# --------------------------------------------------------------------------- sample store


def test_purge_leaves_neither_files_nor_rows_nor_index_pages(tmp_path: Path) -> None:
    """Claim: `purge` really deletes: files, index rows, and the rows' old pages in the SQLite
    file and its WAL, even while the daemon (the writer) keeps the store open."""
    root = tmp_path / "samples"
    writer = SampleStore(root, writer=True)  # the daemon
    try:
        ids = []
        for i in range(50):
            s = make_sample(i)
            ids.append(s.id)
            assert writer.put(s) is None
        with SampleStore(root) as cli:  # `perceptd samples purge` from another connection
            assert cli.purge() == 50
        assert not list((root / "objects").rglob("*.smp")) and writer.list() == []
        raw = b"".join(p.read_bytes() for p in root.glob(INDEX + "*"))
        assert not [i for i in ids if i.encode() in raw], "purged ids still readable in the index files"
    finally:
        writer.close()


# --------------------------------------------------------------------------- bundles


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    """A small verifying bundle: the real manifest trimmed to its small files."""
    dst = tmp_path / "root" / "v1"
    dst.mkdir(parents=True)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    keep = {k: v for k, v in manifest["files"].items() if (bundle_dir / k).stat().st_size < 200_000}
    for rel in keep:
        shutil.copyfile(bundle_dir / rel, dst / rel)
    models = {n: e for n, e in manifest["models"].items() if e["file"] in keep}
    (dst / "manifest.json").write_text(json.dumps({**manifest, "files": keep, "models": models}))
    verify_bundle(dst)
    return dst


@pytest.mark.parametrize("version", ["../v1", "v1/../../etc", "/etc", ".hidden", "a/b"])
def test_bundle_version_cannot_name_a_folder_outside_the_root(bundle_copy: Path, version: str) -> None:
    """Claim: bundles load only from the configured folder (a version is a plain folder name)."""
    with pytest.raises(BundleError):
        resolve_bundle(bundle_copy.parent, version)


def test_manifest_entries_cannot_point_outside_the_bundle(bundle_copy: Path, tmp_path: Path) -> None:
    """Claim: every file the daemon reads from a bundle is inside it and sha256-verified."""
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"not part of any bundle")
    mpath = bundle_copy / "manifest.json"
    manifest = json.loads(mpath.read_text())
    escaped = dict(manifest, files={**manifest["files"], "../../outside.bin": sha256_file(outside)})
    mpath.write_text(json.dumps(escaped))
    with pytest.raises(BundleError, match="outside the bundle"):
        verify_bundle(bundle_copy)
    name = next(iter(manifest["files"]))  # a listed file replaced by a symlink to the outside
    (bundle_copy / name).unlink()
    os.symlink(outside, bundle_copy / name)
    mpath.write_text(json.dumps(dict(manifest, files={**manifest["files"], name: sha256_file(outside)})))
    with pytest.raises(BundleError, match="outside the bundle"):
        verify_bundle(bundle_copy)


# --------------------------------------------------------------------------- no code from data


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            base = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            out.append((f"{base}.{name}" if base else name, node))
    return out


def _kw(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_no_pickle_or_code_execution_from_files() -> None:
    """Claim: nothing perceptd loads can execute code: no pickle (np.load with
    allow_pickle=False, torch.load with weights_only=True), safe YAML only, no eval/exec."""
    problems = []
    for d in CODE_DIRS:
        for path in (REPO / d).rglob("*.py"):
            if ".cache" in path.parts:
                continue
            tree = ast.parse(path.read_text(), str(path))
            rel = path.relative_to(REPO)
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                            else [node.module or ""])
                    bad = [m for m in mods if m.split(".")[0] in UNSAFE_MODULES]
                    problems += [f"{rel}:{node.lineno} imports {m}" for m in bad]
            for name, call in _calls(tree):
                where = f"{rel}:{call.lineno}"
                if name in ("np.load", "numpy.load") and _kw(call, "allow_pickle") is not False:
                    problems.append(f"{where} np.load without allow_pickle=False")
                if name == "torch.load" and _kw(call, "weights_only") is not True:
                    problems.append(f"{where} torch.load without weights_only=True")
                if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
                    problems.append(f"{where} {name} (use yaml.safe_load)")
                if isinstance(call.func, ast.Name) and name in ("eval", "exec"):
                    problems.append(f"{where} {name}()")
    assert not problems, "\n".join(problems)
