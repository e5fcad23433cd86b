"""Voice activity at run time: batched streaming Silero VAD and a speech segmenter.

The exported graph is stateless (``audio`` [B, 64 + 512], ``state`` [2, B, 128] in; ``prob``
[B], ``state_out`` out), so one session serves any number of microphones: each stream keeps its
own 64-sample context and LSTM state here, and ``step`` gathers them into one batch per 32 ms.
:class:`SpeechSegmenter` is pure logic (no ONNX Runtime) turning per-chunk probabilities into
segments with Silero's ``get_speech_timestamps`` rules, but online: a segment is reported as
soon as its trailing silence is long enough.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perceptd.daemon.inference.session import SessionOptions, create_session, run_arrays

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
CHUNK_SAMPLES = 512
CONTEXT_SAMPLES = 64
STATE_SIZE = 128

# Segmenter defaults (also written to the manifest's preprocessing dict by the export target).
THRESHOLD = 0.5
NEG_THRESHOLD = 0.35
MIN_SPEECH_MS = 250
MIN_SILENCE_MS = 300
SPEECH_PAD_MS = 30


@dataclass
class VadStreamState:
    """What one audio stream carries from chunk to chunk (zeros at stream start)."""

    rnn: np.ndarray = field(default_factory=lambda: np.zeros((2, STATE_SIZE), np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros(CONTEXT_SAMPLES, np.float32))

    def reset(self) -> None:
        """Start over, e.g. after a gap in the source (stale state would bias the next chunks)."""
        self.rnn[:] = 0.0
        self.context[:] = 0.0


class VadModel:
    """The exported Silero VAD graph, stepped for a batch of independent streams."""

    def __init__(
        self,
        onnx_path: Path | str,
        preprocessing: Mapping[str, Any] | None = None,
        opts: SessionOptions | None = None,
    ) -> None:
        pre = dict(preprocessing or {})
        self.sample_rate = int(pre.get("sample_rate", SAMPLE_RATE))
        self.chunk_samples = int(pre.get("chunk_samples", CHUNK_SAMPLES))
        self.context_samples = int(pre.get("context_samples", CONTEXT_SAMPLES))
        self.state_size = int(pre.get("state_size", STATE_SIZE))
        self.session = create_session(onnx_path, opts)
        self.step(np.zeros((1, self.chunk_samples), np.float32), [self.new_state()])  # warm-up

    def new_state(self) -> VadStreamState:
        return VadStreamState(
            np.zeros((2, self.state_size), np.float32), np.zeros(self.context_samples, np.float32)
        )

    def step(self, chunks: np.ndarray, states: Sequence[VadStreamState]) -> np.ndarray:
        """Speech probability [B] of one chunk per stream; updates ``states`` in place.

        ``chunks`` is [B, 512] float32 in [-1, 1] (int16 is scaled), row i belonging to the
        stream whose state is ``states[i]``; consecutive calls must pass consecutive chunks.
        """
        chunks = _as_float(chunks).reshape(len(states), self.chunk_samples)
        audio = np.concatenate([np.stack([s.context for s in states]), chunks], axis=1)
        state = np.stack([s.rnn for s in states], axis=1)
        prob, state_out = run_arrays(self.session, ["prob", "state_out"], {"audio": audio, "state": state})
        for i, s in enumerate(states):
            s.rnn[:] = state_out[:, i]
            s.context[:] = chunks[i, -self.context_samples :]
        return prob.reshape(-1)

    def probs(self, pcm: np.ndarray) -> np.ndarray:
        """Per-chunk probabilities of a whole signal (last chunk zero-padded, like Silero)."""
        x = _as_float(pcm).reshape(-1)
        n = -(-x.size // self.chunk_samples)
        x = np.pad(x, (0, n * self.chunk_samples - x.size)).reshape(n, self.chunk_samples)
        state = self.new_state()
        return np.array([self.step(x[i : i + 1], [state])[0] for i in range(n)], np.float32)


def _as_float(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    return np.ascontiguousarray(a, dtype=np.float32)


@dataclass(frozen=True)
class SpeechSegment:
    """Speech from ``start_sample`` (inclusive) to ``end_sample`` (exclusive), padding included."""

    start_sample: int
    end_sample: int
    sample_rate: int = SAMPLE_RATE

    @property
    def start_s(self) -> float:
        return self.start_sample / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.end_sample / self.sample_rate

    @property
    def duration_s(self) -> float:
        return (self.end_sample - self.start_sample) / self.sample_rate


class SpeechSegmenter:
    """Online hysteresis segmenter over one speech probability per chunk.

    Speech starts at the first chunk with ``prob >= threshold`` and ends where a run of chunks
    with ``prob < neg_threshold`` began, once that run lasts ``min_silence_ms`` (the hangover);
    a chunk back at ``>= threshold`` cancels the pending end.  Segments not longer than
    ``min_speech_ms`` are dropped; kept ones are widened by ``speech_pad_ms`` each side.  For
    a whole file this returns what Silero's ``get_speech_timestamps`` does with the same
    parameters (no max-duration split), but each segment is known as soon as it ends.
    """

    def __init__(
        self,
        threshold: float = THRESHOLD,
        neg_threshold: float = NEG_THRESHOLD,
        min_speech_ms: float = MIN_SPEECH_MS,
        min_silence_ms: float = MIN_SILENCE_MS,
        speech_pad_ms: float = SPEECH_PAD_MS,
        chunk_samples: int = CHUNK_SAMPLES,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        if not 0.0 <= neg_threshold <= threshold <= 1.0:
            raise ValueError(f"need 0 <= neg_threshold <= threshold <= 1, got {neg_threshold}, {threshold}")
        self.threshold = threshold
        self.neg_threshold = neg_threshold
        self.chunk_samples = chunk_samples
        self.sample_rate = sample_rate
        self._min_speech = sample_rate * min_speech_ms / 1000.0
        self._min_silence = sample_rate * min_silence_ms / 1000.0
        self._pad = int(sample_rate * speech_pad_ms / 1000.0)
        self.reset()

    @classmethod
    def from_preprocessing(cls, pre: Mapping[str, Any], **overrides: Any) -> SpeechSegmenter:
        """Defaults from the manifest's ``vad`` preprocessing dict; config may override."""
        keys = (
            "threshold",
            "neg_threshold",
            "min_speech_ms",
            "min_silence_ms",
            "speech_pad_ms",
            "chunk_samples",
            "sample_rate",
        )
        kwargs = {k: pre[k] for k in keys if k in pre}
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)

    def reset(self) -> None:
        self._chunk_index = 0
        self._start: int | None = None  # sample where the current speech began
        self._temp_end: int | None = None  # sample where the pending silence began
        self._last_end = 0  # end of the last emitted segment (padding never overlaps it)

    @property
    def in_speech(self) -> bool:
        return self._start is not None

    @property
    def speech_start_sample(self) -> int | None:
        """Start (unpadded) of the speech in progress, for 'speech started' notices."""
        return self._start

    @property
    def samples_seen(self) -> int:
        return self._chunk_index * self.chunk_samples

    @property
    def pending_end(self) -> int | None:
        """Where the silence now pending began (``_temp_end``): the end the segment in progress
        will report if no speech resumes before the hangover; None while none is pending."""
        return self._temp_end if self._start is not None else None

    def pending_segment(self) -> SpeechSegment | None:
        """The segment a close at the pending end would report, padding included, or None (no
        end pending, or the speech so far too short to be kept).  Speculative recognition reads
        it: if the hangover then passes with no speech, ``push`` returns exactly this segment."""
        if self._start is None or self._temp_end is None:
            return None
        return self._kept(self._start, self._temp_end, self._temp_end + self._pad)

    def push(self, prob: float) -> SpeechSegment | None:
        """Feed the next chunk's probability; return a segment when one has just ended."""
        cur = self._chunk_index * self.chunk_samples
        self._chunk_index += 1
        if prob >= self.threshold:
            self._temp_end = None
            if self._start is None:
                self._start = cur
            return None
        if self._start is None or prob >= self.neg_threshold:
            return None
        if self._temp_end is None:
            self._temp_end = cur
        if cur - self._temp_end < self._min_silence:
            return None
        end, self._temp_end = self._temp_end, None
        return self._close(end, end + self._pad)

    def push_many(self, probs: Sequence[float] | np.ndarray) -> list[SpeechSegment]:
        return [seg for p in probs if (seg := self.push(float(p))) is not None]

    def flush(self, total_samples: int | None = None) -> SpeechSegment | None:
        """End of stream: close speech still open (it runs to the end of the audio)."""
        total = self.samples_seen if total_samples is None else int(total_samples)
        if self._start is None:
            return None
        self._temp_end = None
        return self._close(total, total)

    def _kept(self, start: int, end: int, padded_end: int) -> SpeechSegment | None:
        """The segment speech from `start` to `end` gives, padded (never over the last one), or
        None when it is too short to keep; no state changes (a close and a speculation agree)."""
        if end - start <= self._min_speech:
            return None
        return SpeechSegment(max(self._last_end, start - self._pad, 0), padded_end, self.sample_rate)

    def _close(self, end: int, padded_end: int) -> SpeechSegment | None:
        start, self._start = self._start, None
        assert start is not None
        seg = self._kept(start, end, padded_end)
        if seg is None:
            return None
        self._last_end = seg.end_sample
        log.debug("event=speech_segment start_s=%.3f end_s=%.3f", seg.start_s, seg.end_s)
        return seg


def detect_segments(
    pcm: np.ndarray, vad_model: VadModel, segmenter: SpeechSegmenter | None = None
) -> list[tuple[float, float]]:
    """Speech segments of a whole 16 kHz signal as (start_s, end_s)."""
    seg = segmenter or SpeechSegmenter(
        chunk_samples=vad_model.chunk_samples, sample_rate=vad_model.sample_rate
    )
    seg.reset()
    found = seg.push_many(vad_model.probs(pcm))
    last = seg.flush(total_samples=np.asarray(pcm).size)
    if last is not None:
        found.append(last)
    return [(s.start_s, s.end_s) for s in found]
