"""Registry of export targets, in build order (text first: the others embed class names with it).

Modules are imported only when their target is built, so a missing optional package fails
with its own name, and a partial export (tests, retrain) does not load unrelated weights.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from perceptd.export.target import ExportContext, ExportTarget

TargetBuilder = Callable[[ExportContext], list[ExportTarget]]

TARGET_MODULES: dict[str, str] = {
    "text": "perceptd.export.targets.text",
    "vision": "perceptd.export.targets.vision",
    "face": "perceptd.export.targets.face",
    "vad": "perceptd.export.targets.vad",
    "audio": "perceptd.export.targets.audio",
    "fusion": "perceptd.export.targets.fusion",
}


def builder(group: str) -> TargetBuilder:
    return importlib.import_module(TARGET_MODULES[group]).targets
