"""The one place ONNX Runtime sessions are created: provider choice, threads, honest reporting.

onnxruntime-gpu lists CUDA even where it cannot run and silently falls back to CPU, so the
provider a session *really* uses is read back from the session and reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

Device = Literal["auto", "cuda", "cpu"]


@dataclass(frozen=True)
class SessionOptions:
    device: Device = "auto"
    intra_op_threads: int = 1
    inter_op_threads: int = 1


def _providers(device: Device) -> list[str]:
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def create_session(path: Path | str | bytes, opts: SessionOptions | None = None) -> ort.InferenceSession:
    """Create a session for an ONNX file (or serialized bytes) and log the provider in use."""
    opts = opts or SessionOptions()
    # onnxruntime-gpu prints two error lines when CUDA libraries are absent; in auto mode that
    # is expected, and the provider really used is reported below instead.
    ort.set_default_logger_severity(2 if opts.device == "cuda" else 4)
    so = ort.SessionOptions()
    so.intra_op_num_threads = opts.intra_op_threads
    so.inter_op_num_threads = opts.inter_op_threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # the CUDA-fallback chatter is reported by us, once, below
    source = path if isinstance(path, bytes) else str(path)
    sess = ort.InferenceSession(source, sess_options=so, providers=_providers(opts.device))
    used = sess.get_providers()[0]
    if opts.device == "cuda" and used != "CUDAExecutionProvider":
        log.warning("event=provider_fallback model=%s wanted=cuda using=%s", _name(path), used)
    log.debug("event=session_created model=%s provider=%s", _name(path), used)
    return sess


def provider_of(sess: ort.InferenceSession) -> str:
    """The provider that really runs the session's first node ("CPUExecutionProvider", ...)."""
    return sess.get_providers()[0]


def _name(path: Path | str | bytes) -> str:
    return "<bytes>" if isinstance(path, bytes) else Path(path).name


def run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run and return outputs by name (ONNX Runtime releases the GIL inside)."""
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))
