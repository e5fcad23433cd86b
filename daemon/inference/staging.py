"""Reusable batch buffers on the host, page-locked (pinned) when a GPU will read them.

A host->device copy from ordinary (pageable) memory goes through a driver bounce buffer; from
pinned memory the GPU's DMA engine reads it directly, at about twice the bandwidth and with no
extra CPU copy.  ONNX Runtime's Python API cannot allocate pinned memory, so the CUDA runtime
that onnxruntime-gpu already loaded is called through ctypes.  Where there is none (CPU, no
GPU, a driver that refuses) the buffers are ordinary numpy arrays and nothing else changes.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import logging
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

log = logging.getLogger(__name__)

_CUDART = ("libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so")


def _candidates() -> list[str]:
    """Sonames first (found if onnxruntime already loaded them), then the nvidia-* wheels."""
    out: list[str] = list(_CUDART)
    try:
        import nvidia  # pyright: ignore[reportMissingImports] - the CUDA runtime wheels onnxruntime-gpu's preload_dlls() uses

        for root in nvidia.__path__:
            out += sorted(glob.glob(os.path.join(root, "cu*", "lib", "libcudart.so*")))
            out += sorted(glob.glob(os.path.join(root, "cuda_runtime", "lib", "libcudart.so*")))
    except ImportError:
        pass
    return out


@functools.cache
def cuda_runtime() -> ctypes.CDLL | None:
    """The CUDA runtime library when it loads and sees at least one GPU, else None."""
    for name in _candidates():
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cudaGetDeviceCount(ctypes.byref(count)) == 0 and count.value > 0:
            return lib
        return None
    return None


def pinned_empty(shape: Sequence[int], dtype: np.dtype | type) -> np.ndarray | None:
    """A numpy array in page-locked memory (freed with the array), or None if not possible."""
    lib = cuda_runtime()
    if lib is None:
        return None
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    ptr = ctypes.c_void_p()
    if lib.cudaHostAlloc(ctypes.byref(ptr), ctypes.c_size_t(nbytes), 0) != 0 or not ptr.value:
        return None
    raw = (ctypes.c_uint8 * nbytes).from_address(ptr.value)
    arr = np.frombuffer(raw, dtype=np.uint8)  # pyright: ignore[reportCallIssue, reportArgumentType] - ctypes array is a buffer.view(dtype).reshape(tuple(shape))
    weakref.finalize(raw, lib.cudaFreeHost, ctypes.c_void_p(ptr.value))
    return arr


class StagingBuffers:
    """Batch buffers of ``max_batch`` rows, reused across calls, one per concurrent caller.

    ``batch(items)`` stacks same-shaped items into a free buffer and yields (rows, full): the
    first ``len(items)`` rows, and the whole ``max_batch`` buffer for callers that need a
    fixed shape (CUDA graphs).  Unpinned, it still saves the allocation ``np.stack`` makes.
    """

    def __init__(self, max_batch: int, pinned: bool) -> None:
        self.max_batch = max_batch
        self.pinned = pinned and cuda_runtime() is not None
        self._free: dict[tuple, list[np.ndarray]] = {}
        self._lock = threading.Lock()
        self.allocated = 0

    def _take(self, key: tuple) -> np.ndarray:
        with self._lock:
            free = self._free.setdefault(key, [])
            if free:
                return free.pop()
            self.allocated += 1
        shape, dtype = (self.max_batch, *key[0]), key[1]
        buf = pinned_empty(shape, dtype) if self.pinned else None
        if buf is None and self.pinned:
            log.warning("event=pinned_alloc_failed shape=%s; using pageable memory", list(shape))
        return buf if buf is not None else np.empty(shape, dtype)

    @contextmanager
    def batch(self, items: Sequence[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if not 0 < len(items) <= self.max_batch:
            raise ValueError(f"batch of {len(items)} items; 1..{self.max_batch} allowed")
        key = (items[0].shape, items[0].dtype.str)
        buf = self._take(key)
        try:
            rows = buf[: len(items)]
            for i, item in enumerate(items):
                rows[i] = item
            yield rows, buf
        finally:
            with self._lock:
                self._free[key].append(buf)
