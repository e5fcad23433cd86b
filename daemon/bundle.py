"""Model bundles on disk: verify before use, select with `current`/`previous` pointers.

A bundle is refused (BundleError naming the file) when its manifest is unreadable, a file's
sha256 differs from the manifest, or its recorded parity exceeds the recorded tolerance.  The
daemon loads only from the configured bundle folder; pointers are symlinks swapped atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
POINTERS = ("current", "previous")


class BundleError(Exception):
    """A bundle that must not be served; the message names the offending file or field."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    def has(self, name: str) -> bool:
        return name in self.manifest["models"]

    def model(self, name: str) -> dict[str, Any]:
        try:
            return self.manifest["models"][name]
        except KeyError:
            raise BundleError(f"{self.path / MANIFEST}: no model named {name!r}") from None

    def model_path(self, name: str) -> Path:
        return self.path / self.model(name)["file"]

    def preprocessing(self, name: str) -> dict[str, Any]:
        return dict(self.model(name).get("preprocessing", {}))

    def labels(self, name: str) -> list[str]:
        entry = self.model(name)
        if not entry.get("labels"):
            return []
        return json.loads((self.path / entry["labels"]).read_text(encoding="utf-8"))

    def file(self, relname: str) -> Path:
        if relname not in self.manifest.get("files", {}):
            raise BundleError(f"{self.path / MANIFEST}: no file named {relname!r}")
        return self.path / relname


def _read_manifest(path: Path) -> dict[str, Any]:
    mpath = path / MANIFEST
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{mpath}: missing (not a bundle; run `perceptd export`)") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{mpath}: unreadable ({exc})") from None
    for key in ("version", "models", "files"):
        if key not in manifest:
            raise BundleError(f"{mpath}: field {key!r} missing")
    return manifest


def _check_file(bundle_dir: Path, relname: str, expected: str) -> None:
    p = (bundle_dir / relname).resolve()
    if bundle_dir.resolve() not in p.parents:
        raise BundleError(f"{bundle_dir / MANIFEST}: file {relname!r} points outside the bundle")
    if not p.is_file():
        raise BundleError(f"{p}: missing")
    actual = sha256_file(p)
    if actual != expected:
        raise BundleError(f"{p}: sha256 mismatch (manifest {expected[:12]}…, file {actual[:12]}…)")


def _check_parity(mpath: Path, name: str, entry: dict[str, Any]) -> None:
    parity = entry.get("parity") or {}
    tol = parity.get("tolerances") or {}
    for out, diff in (parity.get("per_output") or {}).items():
        if out not in tol or not diff <= tol[out]:
            raise BundleError(
                f"{mpath}: models.{name}.parity.{out} = {diff} exceeds tolerance {tol.get(out)}"
            )


def verify_bundle(path: Path) -> Bundle:
    """Check manifest, sha256 of every listed file and recorded parity; return the bundle."""
    path = Path(path)
    manifest = _read_manifest(path)
    for relname, digest in manifest["files"].items():
        _check_file(path, relname, digest)
    for name, entry in manifest["models"].items():
        if entry.get("file") not in manifest["files"]:
            raise BundleError(f"{path / MANIFEST}: models.{name}.file not covered by a sha256")
        # the entry's own hash (bundles before it was added have none) must be the verified one
        if "sha256" in entry and entry["sha256"] != manifest["files"][entry["file"]]:
            raise BundleError(
                f"{path / MANIFEST}: models.{name}.sha256 differs from files[{entry['file']!r}]")
        _check_parity(path / MANIFEST, name, entry)
    return Bundle(path.resolve(), manifest)


def resolve_bundle(root: Path, version: str = "current") -> Path:
    """`current`/`previous` follow their pointer; anything else is a version folder name."""
    root = Path(root)
    candidate = root / version
    if version not in POINTERS and (os.sep in version or version.startswith(".")):
        raise BundleError(f"bundle version {version!r}: not a plain folder name")
    if not candidate.exists():
        hint = " (run `perceptd export`)" if version == "current" else ""
        raise BundleError(f"{candidate}: no such bundle{hint}")
    return candidate.resolve()


def set_pointer(root: Path, pointer: str, version: str) -> None:
    """Atomically repoint `current` or `previous` at a version folder (symlink + rename)."""
    if pointer not in POINTERS:
        raise ValueError(pointer)
    root = Path(root)
    tmp = root / f".{pointer}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(version, tmp)
    os.replace(tmp, root / pointer)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pointer_target(root: Path, pointer: str) -> str | None:
    p = Path(root) / pointer
    return os.readlink(p) if p.is_symlink() else None


def promote(root: Path, version: str) -> None:
    """current -> previous, version -> current; the new bundle must verify first."""
    verify_bundle(Path(root) / version)
    old = pointer_target(root, "current")
    if old and old != version:
        set_pointer(root, "previous", old)
    set_pointer(root, "current", version)


def rollback(root: Path) -> str:
    """Swap current and previous; returns the version now current."""
    prev = pointer_target(root, "previous")
    if prev is None:
        raise BundleError(f"{Path(root) / 'previous'}: no previous bundle to roll back to")
    verify_bundle(Path(root) / prev)
    cur = pointer_target(root, "current")
    set_pointer(root, "current", prev)
    if cur:
        set_pointer(root, "previous", cur)
    return prev
