"""Registry of export targets, in build order (text first: the others embed class names with it)."""

from __future__ import annotations

from collections.abc import Callable

from perceptd.export.target import ExportContext, ExportTarget

TargetBuilder = Callable[[ExportContext], list[ExportTarget]]


def builders() -> dict[str, TargetBuilder]:
    """Explicit registry; imported lazily so a missing optional package names itself."""
    from perceptd.export.targets import audio, face, fusion, text, vad, vision

    return {
        "text": text.targets,
        "vision": vision.targets,
        "face": face.targets,
        "vad": vad.targets,
        "audio": audio.targets,
        "fusion": fusion.targets,
    }
