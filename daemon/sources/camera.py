"""Camera source: V4L2 devices, video files and network streams through cv2.VideoCapture.

How a hung read is bounded (a camera must never stall the daemon):
- Network streams and files use the FFmpeg backend opened with ``CAP_PROP_OPEN_TIMEOUT_MSEC``
  and ``CAP_PROP_READ_TIMEOUT_MSEC``: FFmpeg's interrupt callback aborts an open or a read
  that takes longer, ``read()`` returns False, and the source reconnects. (Without them a
  dead UDP sender blocks ``read()`` for 30 s.)
- V4L2 ignores those properties (and OpenCV fails the open if they are passed), so its
  read is bounded by OpenCV's own ``select()`` timeout, ``OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT``
  (seconds, default 10, read once per process): before the first V4L2 open the source sets
  it to ``ceil(read_timeout_s)`` unless the environment already sets it.
- Reads run only in this source's own daemon thread, and frames reach the pipeline through
  a queue that never blocks the producer, so even a driver that ignores every timeout stalls
  this camera only; ``stop(timeout)`` then returns False and abandons the thread.
"""

from __future__ import annotations

import logging
import math
import os
import time
from enum import Enum
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import ConfigDict, Field, model_validator

from perceptd.daemon.sources.base import (
    SOURCE_ID,
    Backoff,
    Frame,
    ReconnectConfig,
    Sink,
    Source,
    SourceState,
    StateCallback,
)

log = logging.getLogger(__name__)

UriKind = Literal["index", "device", "url", "file"]


class CameraConfig(ReconnectConfig):
    """One camera: a V4L2 device, a video file or a network stream."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["camera"] = Field(default="camera", description="plugin tag")
    id: str = Field(default="camera0", pattern=SOURCE_ID, description="source id in events and metrics")
    uri: str = Field(
        default="0",
        min_length=1,
        description="'/dev/video0', a device index ('0'), a video file path, "
        "or an rtsp://, udp://, http(s):// URL",
    )
    loop: bool = Field(default=False, description="files only: restart at the end instead of going down")
    fps: float | None = Field(
        default=15.0,
        gt=0,
        le=240,
        description="frames are read at the source rate and pushed at most at this rate "
        "(the rest are counted as rate skips); null pushes every frame",
    )
    open_timeout_s: float = Field(default=5.0, gt=0, le=120, description="give up on an open after this")
    read_timeout_s: float = Field(
        default=3.0, gt=0, le=120, description="a read that delivers nothing for this long fails"
    )
    width: int | None = Field(default=None, ge=16, le=7680, description="requested/output frame width")
    height: int | None = Field(default=None, ge=16, le=4320, description="requested/output frame height")

    @model_validator(mode="after")
    def _check(self) -> CameraConfig:
        if (self.width is None) != (self.height is None):
            raise ValueError("width and height must be given together")
        return self


def uri_kind(uri: str) -> UriKind:
    if uri.isdigit():
        return "index"
    if uri.startswith("/dev/video"):
        return "device"
    if "://" in uri:
        return "url"
    return "file"


class _Outcome(Enum):
    STOPPED = "stopped"
    END = "end"  # a file reached its end after delivering frames
    FAILED = "failed"  # read error / timeout / nothing decodable


class RateLimiter:
    """Admit frames at most at ``fps`` on a drift-free schedule.

    A frame is admitted when it arrives no earlier than half a source interval before its
    slot, so a 30 fps camera limited to 30 fps loses nothing to jitter, and 30 -> 10 fps
    keeps every third frame. After a gap the schedule restarts instead of bursting.
    """

    def __init__(self, fps: float | None) -> None:
        self.period_ns = 0 if fps is None else int(1e9 / fps)
        self._due = 0
        self._last = 0
        self._interval_ns = 0.0  # EMA of the source's inter-frame interval

    def admit(self, t_ns: int) -> bool:
        if self.period_ns == 0:
            return True
        if self._last:
            gap = t_ns - self._last
            ema = self._interval_ns
            self._interval_ns = gap if not ema else 0.9 * ema + 0.1 * gap
        self._last = t_ns
        slack = min(self._interval_ns, self.period_ns) / 2
        if self._due and t_ns < self._due - slack:
            return False
        self._due = self._due + self.period_ns if self._due else t_ns + self.period_ns
        if t_ns >= self._due:  # fell behind by more than a period: restart the schedule
            self._due = t_ns + self.period_ns
        return True


class _Pacer:
    """Real-time schedule for file replay; continues across loops so a loop adds no gap."""

    def __init__(self) -> None:
        self.due_ns = 0

    def delay_s(self, period_ns: int) -> float:
        """Seconds to wait before the next frame (0 when late); books the following slot."""
        now = time.monotonic_ns()
        if now - self.due_ns > period_ns:  # first frame, or behind by a frame: no burst
            self.due_ns = now
        wait_ns = self.due_ns - now
        self.due_ns += period_ns
        return max(0, wait_ns) / 1e9


class CameraSource(Source):
    """Reads one camera in its own thread and offers ``Frame``s to ``out`` (never waits)."""

    kind = "camera"

    def __init__(
        self,
        cfg: CameraConfig,
        out: Sink,
        on_state: StateCallback | None = None,
    ) -> None:
        super().__init__(cfg.id, out, on_state)
        self.cfg = cfg
        self.uri_kind = uri_kind(cfg.uri)
        # the newest frame emitted (None before the first): thumbnails and snapshots read it
        self.last_image: np.ndarray | None = None

    def stop(self, timeout: float | None = None) -> bool:
        """Default wait covers one open attempt plus a read: cv2 calls cannot be cut short."""
        if timeout is None:
            timeout = self.cfg.open_timeout_s + self.cfg.read_timeout_s + 1.0
        return super().stop(timeout)

    # -- opening -------------------------------------------------------------------------
    def _open(self) -> cv2.VideoCapture | None:
        cfg = self.cfg
        try:
            if self.uri_kind in ("index", "device"):
                os.environ.setdefault(
                    "OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", str(max(1, math.ceil(cfg.read_timeout_s)))
                )
                target: int | str = int(cfg.uri) if self.uri_kind == "index" else cfg.uri
                cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
                if cap.isOpened() and cfg.width and cfg.height:
                    cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
                    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            else:
                params = [
                    cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(cfg.open_timeout_s * 1000),
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(cfg.read_timeout_s * 1000),
                ]
                cap = cv2.VideoCapture(cfg.uri, cv2.CAP_FFMPEG, params)
        except cv2.error as exc:
            self._error(f"open {cfg.uri}: {exc}".splitlines()[0])
            return None
        if not cap.isOpened():
            cap.release()
            if self.uri_kind == "file" and not Path(cfg.uri).exists():
                self._error(f"open {cfg.uri}: no such file")
            else:
                self._error(f"open {cfg.uri}: cannot open")
            return None
        return cap

    # -- the loop ------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = Backoff(self.cfg.backoff_initial_s, self.cfg.backoff_max_s, jitter=0.1)
        limiter = RateLimiter(self.cfg.fps)  # both persist across reopens and file loops
        pacer = _Pacer()
        while not self._stop.is_set():
            cap = self._open()
            if cap is None:
                self._count("open_failures")
                outcome, n_read, last = _Outcome.FAILED, 0, None
                reason = "open failed"
            else:
                try:
                    outcome, n_read, last = self._stream(cap, backoff, limiter, pacer)
                finally:
                    cap.release()  # before any reopen: a UDP port stays bound until released
                reason = "stream ended" if self.uri_kind != "file" else "read failed"
            if outcome is _Outcome.STOPPED:
                return
            if outcome is _Outcome.END:
                if not self.cfg.loop:
                    self._set_state(SourceState.DOWN, "end of file")
                    return
                if n_read == 1 and last is not None:  # a photo: repeat it, do not reopen
                    self._repeat_still(last, limiter, pacer)
                    return
                continue
            self._fail(reason, self.cfg.down_after_failures)
            if self._sleep(backoff.next()):
                return

    def _stream(
        self, cap: cv2.VideoCapture, backoff: Backoff, limiter: RateLimiter, pacer: _Pacer
    ) -> tuple[_Outcome, int, np.ndarray | None]:
        """Read until stop, end of file or failure; mark the source up on the first frame.
        Returns the outcome, the frames read and the last image."""
        is_file = self.uri_kind == "file"
        pace_ns = self._file_period_ns(cap) if is_file else 0
        n_read = 0
        last: np.ndarray | None = None
        while not self._stop.is_set():
            # replay a file in real time at its native rate
            if pace_ns and self._sleep(pacer.delay_s(pace_ns)):
                break
            try:
                ok, image = cap.read()
            except cv2.error as exc:
                ok, image = False, None
                self._error(f"read {self.cfg.uri}: {exc}".splitlines()[0])
            t_ns = time.monotonic_ns()
            if not ok or image is None:
                if is_file and n_read > 0:
                    return _Outcome.END, n_read, last
                self._error(f"read {self.cfg.uri}: no frame (ended or timed out)", "read_errors")
                return _Outcome.FAILED, n_read, last
            n_read += 1
            last = image
            if n_read == 1:
                self._mark_up(backoff, "frames arriving")
            if not limiter.admit(t_ns):
                self._count("skipped_rate")
                continue
            self._emit(self._fit(image), t_ns)
        return _Outcome.STOPPED, n_read, last

    def _repeat_still(self, image: np.ndarray, limiter: RateLimiter, pacer: _Pacer) -> None:
        """A looped photo is one decoded image offered at cfg.fps (shared, read-only)."""
        still = self._fit(image)
        still.flags.writeable = False
        period_ns = int(1e9 / (self.cfg.fps or 25.0))
        while not self._sleep(pacer.delay_s(period_ns)):
            t_ns = time.monotonic_ns()
            if limiter.admit(t_ns):
                self._emit(still, t_ns)
            else:
                self._count("skipped_rate")

    def _emit(self, image: np.ndarray, t_ns: int) -> None:
        seq = self._next_seq(t_ns)
        self.last_image = image  # one reference: the console's thumbnail reads it when asked
        # A file is replay: on a `block` queue it waits for room (nothing lost, and no frame
        # decoded only to be dropped); live sources never wait (_offer ignores `wait` unless
        # the queue's policy is `block`).
        self._offer(Frame(self.source_id, seq, t_ns, image), wait=self.uri_kind == "file")

    def _fit(self, image: np.ndarray) -> np.ndarray:
        """Frames downstream are BGR uint8 HxWx3 of the configured size, whatever came in."""
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        w, h = self.cfg.width, self.cfg.height
        if w and h and (image.shape[1], image.shape[0]) != (w, h):
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        return image

    def _file_period_ns(self, cap: cv2.VideoCapture) -> int:
        fps = cap.get(cv2.CAP_PROP_FPS)
        if not 0.5 <= fps <= 240:
            fps = self.cfg.fps or 30.0
        return int(1e9 / fps)
