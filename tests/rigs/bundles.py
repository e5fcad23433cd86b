"""Throwaway bundle roots for tests: hard links to the real bundle, never writes through them.

Every file a test changes is replaced by a new inode (unlink + write): writing into a hard
link would change the repository's bundle too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from perceptd.daemon.bundle import MANIFEST, set_pointer, sha256_file


def link_bundle(src: Path, root: Path, version: str | None = None) -> str:
    """A copy of bundle `src` as root/<version> (hard links) with `current` pointing at it."""
    version = version or src.name
    dst = root / version
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            os.link(f, dst / f.name)
    set_pointer(root, "current", version)
    return version


def _replace(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def clone_version(root: Path, src: str, new: str, *, corrupt: str | None = None) -> Path:
    """root/<new>: the files of root/<src> and a manifest naming `new`.

    corrupt="sha": fusion.onnx changed after the manifest was written (verification refuses it);
    corrupt="load": fusion.onnx is garbage but the manifest agrees (it fails at load/warm-up).
    """
    dst = root / new
    dst.mkdir()
    for f in (root / src).iterdir():
        if f.name != MANIFEST:
            os.link(f, dst / f.name)
    manifest = json.loads((root / src / MANIFEST).read_text())
    manifest["version"] = new
    if corrupt is not None:
        fusion = dst / manifest["models"]["fusion"]["file"]
        data = bytearray(fusion.read_bytes())
        if corrupt == "sha":
            data[len(data) // 2] ^= 0xFF
        else:
            data = bytearray(b"not an onnx model" * 64)
        _replace(fusion, bytes(data))
        if corrupt == "load":
            manifest["files"][fusion.name] = sha256_file(fusion)
            if "sha256" in manifest["models"]["fusion"]:
                manifest["models"]["fusion"]["sha256"] = manifest["files"][fusion.name]
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return dst
