"""The one place ONNX Runtime sessions are created: provider choice, threads, honest reporting.

onnxruntime-gpu lists CUDA (and TensorRT) even where they cannot run and silently falls back
to CPU, so the provider a session *really* uses is read back from the session and reported.

On a GPU the order of preference is TensorRT (only where its libraries load; engines are
cached in ``trt_cache_dir`` so a restart does not rebuild them), then CUDA, then CPU.  Every
fallback from what was asked for is logged with the provider that runs the model instead.

`Runner` is how the daemon calls a session: a plain ``run`` on the CPU, IO binding on CUDA
(constant inputs bound once on the device, per-call inputs copied once per batch, outputs the
caller does not read left on the device).  Both paths return the same numpy arrays.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

Device = Literal["auto", "cuda", "cpu"]
TRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_TRT_LIBS = ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so")


@dataclass(frozen=True)
class SessionOptions:
    device: Device = "auto"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    tensorrt: bool = True  # prefer TensorRT on a GPU where its libraries are present
    trt_cache_dir: str | None = None  # TensorRT engine + timing cache (None: rebuilt each start)
    trt_fp16: bool = False  # fp32 keeps the bundle's parity figures valid
    providers: tuple[str, ...] | None = None  # exact provider list (benchmarks); overrides device


@functools.cache
def tensorrt_loadable() -> bool:
    """True when TensorRT's runtime library loads (onnxruntime-gpu does not ship it)."""
    for name in _TRT_LIBS:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def _trt_options(opts: SessionOptions) -> dict[str, Any]:
    o: dict[str, Any] = {"trt_fp16_enable": opts.trt_fp16}
    if opts.trt_cache_dir:
        Path(opts.trt_cache_dir).mkdir(parents=True, exist_ok=True)
        o |= {"trt_engine_cache_enable": True, "trt_engine_cache_path": opts.trt_cache_dir,
              "trt_timing_cache_enable": True, "trt_timing_cache_path": opts.trt_cache_dir}
    return o


# Batches vary in size (a partial batch is sent after max_wait_ms): an exhaustive cuDNN search
# on every new shape would stall the pipeline, the heuristic choice does not.
_CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC"}


def _with_options(p: str, opts: SessionOptions) -> Any:
    if p == TRT:
        return (TRT, _trt_options(opts))
    if p == CUDA:
        return (CUDA, dict(_CUDA_OPTIONS))
    return p


def _providers(opts: SessionOptions | Device) -> list[Any]:
    """Providers to ask for, best first (a bare device string is accepted for old callers)."""
    if isinstance(opts, str):
        opts = SessionOptions(device=opts)
    available = ort.get_available_providers()
    if opts.providers:
        return [_with_options(p, opts) for p in opts.providers]
    if opts.device == "cpu":
        return [CPU]
    out: list[Any] = []
    if opts.tensorrt and TRT in available and tensorrt_loadable():
        out.append(TRT)
    if CUDA in available:
        out.append(CUDA)
    return [_with_options(p, opts) for p in (*out, CPU)]


def _wanted(providers: list[Any]) -> str:
    first = providers[0]
    return first[0] if isinstance(first, tuple) else first


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
    providers = _providers(opts)
    sess = ort.InferenceSession(source, sess_options=so, providers=providers)
    used = sess.get_providers()[0]
    wanted = _wanted(providers)
    if used != wanted and (opts.device == "cuda" or wanted == TRT or opts.providers):
        log.warning("event=provider_fallback model=%s wanted=%s using=%s", _name(path),
                    wanted.removesuffix("ExecutionProvider"), used.removesuffix("ExecutionProvider"))
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


# --------------------------------------------------------------------------- IO binding


class Runner:
    """Calls one session; on CUDA through IO binding, elsewhere through a plain ``run``.

    ``constants`` are inputs that never change for this session (e.g. the fusion head's event
    prompts): on CUDA they are copied to the device once.  ``host_outputs`` are the outputs
    the caller reads (None: all); on CUDA the others stay on the device and are returned as
    None (on the CPU every output is returned).  Safe to call from several threads: each call
    makes its own binding.
    """

    def __init__(self, sess: ort.InferenceSession, constants: Mapping[str, np.ndarray] | None = None,
                 host_outputs: Sequence[str] | None = None, bind: bool | None = None) -> None:
        self.session = sess
        self.output_names = [o.name for o in sess.get_outputs()]
        self.host_outputs = list(host_outputs) if host_outputs is not None else list(self.output_names)
        provider = provider_of(sess)
        self.bound = (provider in (CUDA, TRT)) if bind is None else bind
        self.device = "cuda" if provider in (CUDA, TRT) else "cpu"
        self._constants = {k: np.ascontiguousarray(v) for k, v in (constants or {}).items()}
        self._device_constants = {
            k: ort.OrtValue.ortvalue_from_numpy(v, self.device, 0) for k, v in self._constants.items()
        } if self.bound else {}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray | None]:
        if not self.bound:  # exactly a plain run (every output, on the host)
            out = self.session.run(self.output_names, {**self._constants, **feeds})
            return dict(zip(self.output_names, out, strict=True))
        io = self.session.io_binding()
        for name, value in self._device_constants.items():
            io.bind_ortvalue_input(name, value)
        for name, arr in feeds.items():  # one host->device copy per input per call
            io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr),
                                                                         self.device, 0))
        for name in self.output_names:
            io.bind_output(name, "cpu" if name in self.host_outputs else self.device, 0)
        io.synchronize_inputs()
        self.session.run_with_iobinding(io)
        io.synchronize_outputs()
        values = io.get_outputs()
        return {n: (v.numpy() if n in self.host_outputs else None)
                for n, v in zip(self.output_names, values, strict=True)}
