"""The engines this build ships: one registration per plugin module.

Kept apart from engine.py (the contract) so the contract imports no engine, and every engine
module imports only the contract.
"""

from __future__ import annotations

from perceptd.daemon.speech.engine import EngineRegistry
from perceptd.daemon.speech.whisper import create_whisper


def default_registry() -> EngineRegistry:
    reg = EngineRegistry()
    reg.register("whisper", create_whisper)
    return reg
