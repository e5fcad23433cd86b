"""Build a bundle: export every target, check parity, write labels, prompts and the manifest.

The bundle is assembled in a hidden temp folder and renamed into place, so a crash never
leaves a half-written version; `current` is repointed only after the whole bundle verifies.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from perceptd.daemon.bundle import MANIFEST, promote, sha256_file, verify_bundle
from perceptd.daemon.events.config import EventConfig
from perceptd.export.onnx_export import describe, export_onnx
from perceptd.export.parity import ParityError, ParityResult, check_parity
from perceptd.export.target import ExportContext, ExportTarget

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent


def new_version() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")[:-3]


def make_context(work_dir: Path) -> ExportContext:
    from perceptd.models.text import TorchTextEmbedder

    embedder = TorchTextEmbedder()

    @functools.lru_cache(maxsize=64)
    def cached(texts: tuple[str, ...]) -> np.ndarray:
        return embedder(list(texts))

    def embed(texts: list[str]) -> np.ndarray:
        return cached(tuple(texts)).copy()

    return ExportContext(embed_texts=embed, samples_dir=REPO_ROOT / "samples", work_dir=work_dir)


def _write_new(path: Path, data: bytes) -> None:
    """Write a NEW inode: files copied from the base bundle are hard links, and writing through
    one would silently change every bundle that shares it (the live one included)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def _write_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array.astype(np.float32), allow_pickle=False)
    _write_new(path, buf.getvalue())


def _write_target(t: ExportTarget, out: Path, parity: ParityResult, onnx_path: Path) -> dict:
    entry: dict[str, Any] = {"file": onnx_path.name, **describe(onnx_path)}
    entry["preprocessing"] = t.preprocessing
    entry["source"] = t.source
    entry["license"] = t.source.get("license", "unknown")
    entry["parity"] = parity.manifest_entry()
    entry["labels"] = None
    if t.labels is not None:
        entry["labels"] = f"{t.name}_labels.json"
        _write_new(out / entry["labels"], json.dumps(t.labels, indent=0).encode("utf-8"))
    for fname, data in t.extra_files.items():
        _write_new(out / fname, data)
    class_emb = getattr(t.module, "class_embeddings", None)
    if class_emb is not None:  # background set of this modality for event calibration
        _write_npy(out / f"{t.name}_class_embeddings.npy", class_emb.detach().numpy())
    return entry


def _write_events(out: Path, events: list[EventConfig], ctx: ExportContext) -> None:
    """Default event prompts and their embeddings (the daemon re-embeds edited prompts)."""
    table = [e.model_dump(mode="json") for e in events]
    _write_new(out / "events.json", json.dumps(table, indent=1).encode("utf-8"))
    prompts = [p for e in events for p in e.prompts]
    _write_npy(out / "event_prompts.npy", ctx.embed_texts(prompts) if prompts else np.zeros((0, 384)))


def _copy_groups(base: Path, out: Path, skip: set[str]) -> dict[str, Any]:
    """Copy the models (and their side files) of groups not rebuilt from a verified bundle."""
    src = verify_bundle(base)
    copied: dict[str, Any] = {}
    for name, entry in src.manifest["models"].items():
        group = entry.get("group", name.split("_")[0])
        if group in skip:
            continue
        copied[name] = dict(entry)
        for rel in [entry["file"], entry.get("labels"), *entry.get("side_files", [])]:
            if rel and not (out / rel).exists():
                _link_or_copy(src.path / rel, out / rel)
    for rel in src.manifest["files"]:  # class embeddings, tokenizer, background vectors ...
        if not (out / rel).exists() and not rel.endswith(".onnx"):
            _link_or_copy(src.path / rel, out / rel)
    return copied


def _link_or_copy(src: Path, dst: Path) -> None:
    """Unchanged encoders are hard-linked (no extra 130 MB per retrain); copied across devices."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def prune_bundles(root: Path, keep: int = 3) -> list[str]:
    """Delete old versions beyond the newest `keep`, never `current` or `previous`."""
    from perceptd.daemon.bundle import pointer_target

    pinned = {pointer_target(root, p) for p in ("current", "previous")}
    versions = sorted(p.name for p in root.iterdir()
                      if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    doomed = [v for v in versions[:-keep] if v not in pinned] if keep > 0 else []
    for v in doomed:
        shutil.rmtree(root / v, ignore_errors=True)
    return doomed


def _print_parity(results: list[ParityResult], echo: Callable[[str], None]) -> None:
    echo(f"{'model':<12} {'output':<16} {'max_abs_diff':>13} {'tolerance':>10}  ok")
    for r in results:
        for name, d in r.per_output.items():
            ok = "yes" if d <= r.tolerances[name] else "NO"
            echo(f"{r.model:<12} {name:<16} {d:>13.3g} {r.tolerances[name]:>10g}  {ok}")


def build_bundle(
    root: Path,
    events: list[EventConfig],
    *,
    version: str | None = None,
    head_state: dict | None = None,
    activate: bool = True,
    only: list[str] | None = None,
    base: Path | None = None,
    calibration: dict[str, list[float]] | None = None,
    echo: Callable[[str], None] = print,
) -> Path:
    """Export all targets (or `only` some groups) into root/<version>/ and verify it.

    With `base` (a verified bundle), groups not exported are copied from it unchanged: this
    is how a retrain re-exports only the fusion head.  `head_state` and `calibration`
    ({event: [k, b]}) are the fine-tuned head; both land in files covered by the manifest.
    """
    from perceptd.export.targets import TARGET_MODULES, builder
    from perceptd.export.targets import fusion as fusion_target

    version = version or new_version()
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{version}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    t0 = time.monotonic()
    ctx = make_context(tmp)
    models: dict[str, Any] = {}
    results: list[ParityResult] = []
    try:
        for group in TARGET_MODULES:
            if only and group not in only:
                continue
            if group == "fusion":
                targets = fusion_target.targets(ctx, head_state, calibration)
            else:
                targets = builder(group)(ctx)
            for t in targets:
                onnx_path = export_onnx(t, tmp)
                parity = check_parity(t, onnx_path)
                results.append(parity)
                models[t.name] = {"group": group, **_write_target(t, tmp, parity, onnx_path)}
        if base is not None:
            models.update(_copy_groups(base, tmp, skip=set(only or TARGET_MODULES)))
        _print_parity(results, echo)
        failures = [f for r in results for f in r.failures]
        if failures:
            raise ParityError("parity failed: " + "; ".join(failures))
        _write_events(tmp, events, ctx)
        files = {
            p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file() and p.name != MANIFEST
        }
        for entry in models.values():  # the documented contract: every model entry has its hash
            entry["sha256"] = files[entry["file"]]
        manifest = {
            "version": version,
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "models": models,
            "files": files,
            "events": "events.json",
            "event_prompts": "event_prompts.npy",
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        verify_bundle(tmp)
        final = root / version
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if activate:
        promote(root, version)
        prune_bundles(root)
    echo(f"bundle {version} written to {final} in {time.monotonic() - t0:.1f} s")
    return final
