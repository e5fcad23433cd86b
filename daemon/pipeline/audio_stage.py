"""Audio: 32 ms chunks -> Silero VAD (speech segments) and YAMNet patches (sound tags).

Per source it keeps the VAD state, the segmenter, the patch streamer and a short ring of
recent audio (for speech segments handed to speech recognition).  Sample positions are
mapped back to the monotonic clock through each chunk's capture stamp.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from perceptd.daemon.fusion.timeline import ModalityExtra, ModalityOutput
from perceptd.daemon.inference.audio_frontend import MelParams, PatchStreamer
from perceptd.daemon.inference.vad import SpeechSegmenter, VadStreamState
from perceptd.daemon.messages import AudioMessage, Outbound, SpeechMessage
from perceptd.daemon.pipeline.queues import BoundedQueue
from perceptd.daemon.pipeline.worker import Worker
from perceptd.daemon.sources.base import AudioChunk

if TYPE_CHECKING:
    from perceptd.daemon.inference.models import ModelSet

log = logging.getLogger(__name__)
SR = 16_000


class AudioStageConfig(BaseModel):
    """Speech segmentation and sound tagging of the audio path."""

    model_config = ConfigDict(extra="forbid")

    vad_threshold: float = Field(default=0.5, gt=0, lt=1, description="speech starts at this probability")
    vad_neg_threshold: float = Field(default=0.35, gt=0, lt=1, description="speech may end below this")
    min_speech_ms: int = Field(default=250, ge=0, le=10_000, description="shorter segments are dropped")
    hangover_ms: int = Field(
        default=300, ge=0, le=10_000, description="silence that closes a segment (end-of-speech delay)"
    )
    speech_pad_ms: int = Field(default=30, ge=0, le=1000, description="padding around segments")
    max_segment_s: float = Field(default=15.0, gt=0, le=120, description="audio kept per open segment")
    top_k: int = Field(default=5, ge=1, le=20, description="labels published per audio window")


@dataclass
class _Stream:
    vad: VadStreamState
    segmenter: SpeechSegmenter
    patches: PatchStreamer
    samples: int = 0  # samples seen on this stream
    t_last_ns: int = 0  # capture time of the newest sample
    probs: deque = field(default_factory=lambda: deque(maxlen=64))  # recent VAD probs
    ring: deque = field(default_factory=deque)  # (first_sample, pcm) chunks
    ring_samples: int = 0
    speculated: int | None = None  # pending end already handed on speculatively


@dataclass(frozen=True)
class SpeechSegmentAudio:
    """A speech segment with its audio (input of speech recognition): closed (``final``), or
    speculative: the speech so far, cut and padded as a close at the pending end would cut it,
    handed on ``speculate_ms`` into the silence so that recognition can start before the
    hangover ends.  A closed segment with the same ``key`` has the same audio (no speech
    resumed); another key means the speculation was in vain."""

    source: str
    start_ns: int
    end_ns: int
    pcm: np.ndarray  # float32 16 kHz
    final: bool = True  # False: speculative (the segment may still go on)
    key: tuple[int, int] = (-1, -1)  # (start, end) sample on the source's stream


class AudioStage(Worker[AudioChunk]):
    name = "audio"

    def __init__(self, inbox: BoundedQueue[AudioChunk], fusion: BoundedQueue[ModalityOutput],
                 publish: BoundedQueue[Outbound], models: Callable[[], ModelSet],
                 cfg: AudioStageConfig,
                 on_segment: Callable[[SpeechSegmentAudio], None] | None = None,
                 speculate_ms: int = 0) -> None:
        super().__init__(inbox)
        self.batch = 16
        self.batch_wait_s = 0.0
        self.fusion = fusion
        self.publish = publish
        self.models = models
        self.cfg = cfg
        self.on_segment = on_segment
        # silence after speech before the segment so far goes to on_segment as speculative
        # (0: only closed segments); speech.early_ms
        self.speculate_samples = int(speculate_ms * SR / 1000) if speculate_ms > 0 else 0
        self.speculated = 0
        self.streams: dict[str, _Stream] = {}
        self.keep_pcm = False  # set when samples may store raw audio
        self.segments = 0
        self.windows = 0
        self.levels: dict[str, float] = {}  # per source: smoothed RMS level, dBFS (the console's meter)

    def _stream(self, source: str) -> _Stream:
        s = self.streams.get(source)
        if s is None:
            m = self.models()
            seg = SpeechSegmenter(
                threshold=self.cfg.vad_threshold, neg_threshold=self.cfg.vad_neg_threshold,
                min_speech_ms=self.cfg.min_speech_ms, min_silence_ms=self.cfg.hangover_ms,
                speech_pad_ms=self.cfg.speech_pad_ms, chunk_samples=m.vad.chunk_samples,
                sample_rate=SR,
            )
            params = MelParams.from_preprocessing(m.bundle.preprocessing("audio"))
            s = _Stream(m.vad.new_state(), seg, PatchStreamer(params))
            self.streams[source] = s
        return s

    def _ns_at(self, s: _Stream, sample: int) -> int:
        """Monotonic time of a sample index, from the newest chunk's stamp."""
        return s.t_last_ns - int((s.samples - sample) * 1e9 / SR)

    def process(self, items: list[AudioChunk]) -> None:
        m = self.models()
        by_source: dict[str, list[AudioChunk]] = {}
        for c in items:
            by_source.setdefault(c.source_id, []).append(c)
        for source, chunks in by_source.items():
            self._process_source(m, source, chunks)

    def _process_source(self, m, source: str, chunks: list[AudioChunk]) -> None:
        s = self._stream(source)
        for c in chunks:
            t0 = time.perf_counter()
            prob = float(m.vad.step(c.pcm[None, :], [s.vad])[0])
            self.timings.observe("vad", m, time.perf_counter() - t0)
            s.probs.append(prob)
            self._level(source, c.pcm)
            first = s.samples
            s.samples += c.pcm.size
            s.t_last_ns = c.t_capture_ns
            self._remember(s, first, c.pcm)
            seg = s.segmenter.push(prob)
            if seg is not None:
                self._segment(source, s, seg.start_sample, seg.end_sample)
            elif self.speculate_samples:
                self._speculate(source, s)
            pats, starts = s.patches.push(c.pcm)
            if len(pats):
                self._tag(m, source, s, pats, starts)

    def _level(self, source: str, pcm: np.ndarray) -> None:
        """RMS in dBFS, fast attack and ~0.3 s release: a meter that reads like one (one dot
        product per 32 ms chunk; a float assignment the console reads without a lock)."""
        db = 10.0 * float(np.log10(float(np.dot(pcm, pcm)) / max(1, pcm.size) + 1e-12))
        prev = self.levels.get(source, -120.0)
        self.levels[source] = round(db if db > prev else prev + 0.1 * (db - prev), 1)

    def _remember(self, s: _Stream, first: int, pcm: np.ndarray) -> None:
        s.ring.append((first, pcm))
        s.ring_samples += pcm.size
        limit = int(self.cfg.max_segment_s * SR) + SR
        while s.ring_samples > limit:
            _, old = s.ring.popleft()
            s.ring_samples -= old.size

    def _segment(self, source: str, s: _Stream, start: int, end: int) -> None:
        self.segments += 1
        s.speculated = None
        start_ns, end_ns = self._ns_at(s, start), self._ns_at(s, end)
        self.publish.put(Outbound(SpeechMessage(source=source, start_ns=start_ns, end_ns=end_ns),
                                  end_ns))
        if self.on_segment is not None:
            self.on_segment(SpeechSegmentAudio(source, start_ns, end_ns, self._clip(s, start, end),
                                               True, (start, end)))

    def _speculate(self, source: str, s: _Stream) -> None:
        """Silence began after speech and has lasted speculate_ms: hand on the speech so far,
        padded as a close there would pad it, once per pending end (the hangover may yet be
        broken by speech; then the close has another end and the recogniser drops this)."""
        end, hand_on = s.segmenter.pending_end, self.on_segment
        if hand_on is None or end is None or end == s.speculated:
            return
        if s.segmenter.samples_seen - end < self.speculate_samples:
            return
        seg = s.segmenter.pending_segment()
        if seg is None or seg.end_sample > s.samples:  # too short to keep, or padding not heard yet
            return
        s.speculated = end
        self.speculated += 1
        hand_on(SpeechSegmentAudio(
            source, self._ns_at(s, seg.start_sample), self._ns_at(s, seg.end_sample),
            self._clip(s, seg.start_sample, seg.end_sample), False, (seg.start_sample, seg.end_sample)))

    @staticmethod
    def _clip(s: _Stream, start: int, end: int) -> np.ndarray:
        pcm = np.concatenate([p for _, p in s.ring]) if s.ring else np.zeros(0, np.float32)
        first = s.ring[0][0] if s.ring else 0
        return pcm[max(0, start - first): max(0, end - first)]

    def _tag(self, m, source: str, s: _Stream, pats: np.ndarray, starts: np.ndarray) -> None:
        t0 = time.perf_counter()
        out = m.audio.infer(pats)
        self.timings.observe("audio", m, time.perf_counter() - t0)
        span = s.patches.patch_span_samples
        tops = m.audio.top_k(out.scores, self.cfg.top_k)
        recent = list(s.probs)[-31:]  # ~1 s of VAD probabilities
        speech_prob = float(max(recent)) if recent else 0.0
        for i, start in enumerate(starts):
            w0, w1 = self._ns_at(s, int(start)), self._ns_at(s, int(start) + span)
            top = tuple(tops[i])
            self.windows += 1
            extra: ModalityExtra = {"speech_prob": speech_prob, "embedding": out.embeddings[i]}
            if self.keep_pcm:  # the window's audio, for samples that may store raw audio
                extra["pcm"] = self._window_pcm(s, int(start), span)
            self.fusion.put(ModalityOutput("audio", source, w1, out.embed[i], top, extra,
                                           probs=out.scores[i]))
            self.publish.put(Outbound(AudioMessage(source=source, top=top, speech_prob=speech_prob,
                                                   window_start_ns=w0, window_end_ns=w1), w1))

    @staticmethod
    def _window_pcm(s: _Stream, start: int, span: int) -> np.ndarray:
        if not s.ring:
            return np.zeros(0, np.float32)
        first = s.ring[0][0]
        pcm = np.concatenate([p for _, p in s.ring])
        return pcm[max(0, start - first): max(0, start + span - first)].copy()

    def finish(self) -> None:
        for source, s in self.streams.items():
            seg = s.segmenter.flush(total_samples=s.samples)
            if seg is not None:
                self._segment(source, s, seg.start_sample, seg.end_sample)

    def stats(self) -> dict:
        return {**super().stats(), "segments": self.segments, "windows": self.windows,
                "speculated": self.speculated}
