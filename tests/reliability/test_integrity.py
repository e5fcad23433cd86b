"""On-disk integrity: a new bundle built on a base bundle must never change the base.

Export hard-links the files it does not rebuild; writing one of them in place would change every
bundle sharing the inode, the live one included (seen: the served bundle's event_prompts.npy and
events.json changed under their manifest after a fusion-only re-export in a test)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from perceptd.daemon.bundle import sha256_file
from perceptd.daemon.config import load_config
from perceptd.export.bundle import _write_events, _write_npy
from perceptd.export.target import ExportContext

REPO = Path(__file__).resolve().parents[2]


def _embed(texts: list[str]) -> np.ndarray:
    rng = np.random.default_rng(len(texts))
    v = rng.standard_normal((len(texts), 384)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_rewriting_a_linked_file_leaves_the_base_alone(tmp_path: Path) -> None:
    base, new = tmp_path / "base", tmp_path / "new"
    base.mkdir()
    new.mkdir()
    _write_npy(base / "event_prompts.npy", np.ones((3, 384)))
    (base / "events.json").write_text("[]")
    before = {f: sha256_file(base / f) for f in ("event_prompts.npy", "events.json")}
    for f in before:  # what _copy_groups does for files it does not rebuild
        os.link(base / f, new / f)
    events = load_config(REPO / "config.yaml").events
    ctx = ExportContext(embed_texts=_embed, samples_dir=REPO / "samples", work_dir=tmp_path)
    _write_events(new, events, ctx)
    assert {f: sha256_file(base / f) for f in before} == before
    assert all(sha256_file(new / f) != before[f] for f in before)
    assert all((new / f).stat().st_nlink == 1 for f in before)
