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
import dataclasses
import functools
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

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
    cuda_graph: bool = False  # capture + replay (fixed shapes only: see FixedBatchRunner)
    # TensorRT optimisation profile: input name -> (min, opt, max) shapes.  Without one TensorRT
    # builds an engine for every new batch size it meets; with one, a single engine serves all.
    trt_profile: tuple[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...] = ()
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


def _shapes(opts: SessionOptions, k: int) -> str:
    return ",".join(f"{p[0]}:{'x'.join(str(d) for d in p[k])}" for p in opts.trt_profile)


def _trt_options(opts: SessionOptions) -> dict[str, Any]:
    o: dict[str, Any] = {"trt_fp16_enable": opts.trt_fp16}
    if opts.trt_profile:
        o |= {"trt_profile_min_shapes": _shapes(opts, 1), "trt_profile_opt_shapes": _shapes(opts, 2),
              "trt_profile_max_shapes": _shapes(opts, 3)}
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
        return (TRT, _trt_options(opts) | ({"trt_cuda_graph_enable": True} if opts.cuda_graph else {}))
    if p == CUDA:
        return (CUDA, dict(_CUDA_OPTIONS) | ({"enable_cuda_graph": "1"} if opts.cuda_graph else {}))
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
    try:
        sess = ort.InferenceSession(source, sess_options=so, providers=providers)
    except Exception as e:  # noqa: BLE001 - ORT raises bare RuntimeErrors (Fail, EPFail, ...)
        if not opts.cuda_graph:
            raise
        # CUDA graphs need every node on the GPU; a graph ORT cannot capture still runs without
        log.warning("event=cuda_graph_refused model=%s error=%r", _name(path), str(e)[:200])
        return create_session(path, dataclasses.replace(opts, cuda_graph=False))
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


def device_of(sess: ort.InferenceSession) -> str:
    """"cuda" when a GPU provider runs the session, else "cpu" (the OrtValue device name)."""
    return "cuda" if provider_of(sess) in (CUDA, TRT) else "cpu"


def cuda_graph_active(sess: ort.InferenceSession) -> bool:
    """True when the session really captures CUDA graphs (asked for, and not refused)."""
    opts = sess.get_provider_options()
    return (opts.get(CUDA, {}).get("enable_cuda_graph") == "1"
            or opts.get(TRT, {}).get("trt_cuda_graph_enable") in ("1", "True", "true"))


def _name(path: Path | str | bytes) -> str:
    return "<bytes>" if isinstance(path, bytes) else Path(path).name


def run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run and return outputs by name (ONNX Runtime releases the GIL inside)."""
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, run_arrays(sess, names, feeds), strict=True))


def run_arrays(sess: ort.InferenceSession, names: list[str] | None,
               feeds: dict[str, Any]) -> list[np.ndarray]:
    """`sess.run` typed as what our models return: dense arrays (no sparse or sequence outputs)."""
    return cast("list[np.ndarray]", sess.run(names, feeds))


# --------------------------------------------------------------------------- IO binding

Feed = np.ndarray | ort.OrtValue


class Runner:
    """Calls one session; on CUDA through IO binding, elsewhere through a plain ``run``.

    ``constants`` are inputs that never change for this session (e.g. the fusion head's event
    prompts): on CUDA they are copied to the device once.  ``host_outputs`` are the outputs
    the caller reads (None: all); on CUDA the others stay on the device and are returned as
    OrtValues that another bound Runner takes as a feed without a round trip through the host
    (the device-side resize feeds the vision encoder this way).  On the CPU every output is
    returned as numpy.  Safe to call from several threads: each call makes its own binding.
    """

    def __init__(self, sess: ort.InferenceSession, constants: Mapping[str, np.ndarray] | None = None,
                 host_outputs: Sequence[str] | None = None, bind: bool | None = None) -> None:
        self.session = sess
        self.output_names = [o.name for o in sess.get_outputs()]
        self.host_outputs = list(host_outputs) if host_outputs is not None else list(self.output_names)
        self.device = device_of(sess)
        self.bound = (self.device == "cuda") if bind is None else bind
        self._constants = {k: np.ascontiguousarray(v) for k, v in (constants or {}).items()}
        self._device_constants = {
            k: ort.OrtValue.ortvalue_from_numpy(v, self.device, 0) for k, v in self._constants.items()
        } if self.bound else {}

    def run(self, feeds: Mapping[str, Feed],
            outputs: Mapping[str, ort.OrtValue] | None = None) -> dict[str, Any]:
        """Outputs by name; ``outputs`` binds some of them to preallocated device values."""
        if not self.bound:  # exactly a plain run (every output, on the host)
            out = self.session.run(self.output_names, {**self._constants, **feeds})
            return dict(zip(self.output_names, out, strict=True))
        io = self.session.io_binding()
        for name, value in self._device_constants.items():
            io.bind_ortvalue_input(name, value)
        for name, arr in feeds.items():  # one host->device copy per input per call
            if not isinstance(arr, ort.OrtValue):
                arr = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), self.device, 0)
            io.bind_ortvalue_input(name, arr)
        given = dict(outputs or {})
        for name in self.output_names:
            if name in given:
                io.bind_ortvalue_output(name, given[name])
            else:
                io.bind_output(name, "cpu" if name in self.host_outputs else self.device, 0)
        io.synchronize_inputs()
        self.session.run_with_iobinding(io)
        io.synchronize_outputs()
        values = io.get_outputs()
        return {n: (v.numpy() if n in self.host_outputs and n not in given else v)
                for n, v in zip(self.output_names, values, strict=True)}


_NP_TYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int64)": np.int64,
             "tensor(float16)": np.float16, "tensor(int32)": np.int32}


def _static(shape: Sequence[Any], what: str) -> list[int]:
    if not all(isinstance(d, int) for d in shape):
        raise ValueError(f"{what}: a fixed-batch run needs static dimensions past the batch, got {shape}")
    return [int(d) for d in shape]


class FixedBatchRunner:
    """One single-input session at a fixed batch, bound once to fixed buffers.

    A CUDA graph replays the kernels it captured on the addresses it captured: the shapes and
    the input/output buffers must never change.  So every call pads its rows to ``batch``,
    copies them into the same device input (``update_inplace``) and reads the same outputs;
    the rows past the real ones hold stale data and are cut off.  Calls are serialised (one
    captured graph, one set of buffers).  Works on the CPU too (same path, no graph), which
    is how it is tested without a GPU.
    """

    def __init__(self, sess: ort.InferenceSession, batch: int, device: str | None = None) -> None:
        if len(sess.get_inputs()) != 1:
            raise ValueError("FixedBatchRunner takes single-input sessions")
        self.session = sess
        self.batch = batch
        self.device = device or device_of(sess)
        inp = sess.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = [batch, *_static(inp.shape[1:], inp.name)]
        self.input_dtype = _NP_TYPES[inp.type]
        self.input = ort.OrtValue.ortvalue_from_shape_and_type(self.input_shape, self.input_dtype,
                                                               self.device, 0)
        self.outputs = {
            o.name: ort.OrtValue.ortvalue_from_shape_and_type([batch, *_static(o.shape[1:], o.name)],
                                                              _NP_TYPES[o.type], self.device, 0)
            for o in sess.get_outputs()
        }
        self._io = sess.io_binding()
        self._io.bind_ortvalue_input(self.input_name, self.input)
        for name, value in self.outputs.items():
            self._io.bind_ortvalue_output(name, value)
        self.lock = threading.Lock()
        self.runs = 0

    def run(self, padded: np.ndarray, rows: int) -> dict[str, np.ndarray]:
        """``padded``: [batch, ...] whose first ``rows`` rows are real (a staging buffer)."""
        with self.lock:
            self.input.update_inplace(np.ascontiguousarray(padded, dtype=self.input_dtype))
            return self.run_bound(rows)

    def run_bound(self, rows: int) -> dict[str, np.ndarray]:
        """Run on what is already in ``self.input`` (another session wrote it); hold ``lock``."""
        self.session.run_with_iobinding(self._io)
        self.runs += 1
        # a copy: the next call overwrites these buffers (a CPU OrtValue may hand out a view)
        return {name: np.array(value.numpy()[:rows]) for name, value in self.outputs.items()}
