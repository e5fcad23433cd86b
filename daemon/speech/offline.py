"""Recognition of a whole recording, segment by segment, as the daemon would do it live.

Used by `perceptd probe --audio` and the ASR benchmark: the VAD segments the signal with
the daemon's own audio settings, each segment is transcribed and judged by the matcher.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from perceptd.daemon.inference.vad import SpeechSegmenter, detect_segments
from perceptd.daemon.pipeline.audio_stage import AudioStageConfig
from perceptd.daemon.speech.engine import AsrEngine, Transcript
from perceptd.daemon.speech.matcher import CommandMatcher, Verdict

SR = 16_000


@dataclass(frozen=True)
class SegmentResult:
    start_s: float
    end_s: float
    transcript: Transcript
    verdict: Verdict
    asr_ms: float  # transcription + matching time


def segmenter_for(audio: AudioStageConfig, vad) -> SpeechSegmenter:
    return SpeechSegmenter(
        threshold=audio.vad_threshold, neg_threshold=audio.vad_neg_threshold,
        min_speech_ms=audio.min_speech_ms, min_silence_ms=audio.hangover_ms,
        speech_pad_ms=audio.speech_pad_ms, chunk_samples=vad.chunk_samples, sample_rate=SR,
    )


def recognise_segment(pcm: np.ndarray, models, engine: AsrEngine,
                      matcher: CommandMatcher) -> tuple[Transcript, Verdict, float]:
    t0 = time.perf_counter()
    tr = engine.transcribe(pcm)
    verdict = matcher.judge(tr, models)
    return tr, verdict, (time.perf_counter() - t0) * 1e3


def recognise(pcm: np.ndarray, models, engine: AsrEngine, matcher: CommandMatcher,
              audio: AudioStageConfig | None = None) -> list[SegmentResult]:
    seg = segmenter_for(audio or AudioStageConfig(), models.vad)
    out = []
    for start, end in detect_segments(pcm, models.vad, seg):
        clip = pcm[int(start * SR): int(end * SR)]
        tr, verdict, ms = recognise_segment(clip, models, engine, matcher)
        out.append(SegmentResult(start, end, tr, verdict, ms))
    return out
