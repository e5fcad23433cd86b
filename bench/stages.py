"""Each pipeline stage's own cost, measured alone (one thread, nothing else of ours running).

Costs are CPU seconds of this whole process (`time.process_time`: FFmpeg's decoder threads
and libzmq's I/O thread count too), with wall time beside them.  The stages are the daemon's
own code (the same ModelSet, AudioStage/TextStage/FusionStage.process/evaluate, the same
EventPublisher), driven directly instead of by their threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import zmq

from perceptd.bench import media

NS = 1_000_000_000


@dataclass(frozen=True)
class Cost:
    cpu_ms: float
    wall_ms: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"cpu_ms": round(self.cpu_ms, 4), "wall_ms": round(self.wall_ms, 4), "n": self.n}


def measure(fn: Callable[[int], Any], n: int, per: float = 1.0, warmup: int = 2) -> Cost:
    """Cost of `fn(i)` per call (divided by `per` units of work per call)."""
    for i in range(warmup):
        fn(i)
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    c, w = time.process_time() - c0, time.perf_counter() - w0
    return Cost(1e3 * c / (n * per), 1e3 * w / (n * per), n)


def decode_frames(n: int, index: int = 0) -> tuple[Cost, list[np.ndarray]]:
    """cv2 read of the stream's H.264 640x480 file: cost per frame, and the frames."""
    cap = cv2.VideoCapture(str(media.video(index, 240)), cv2.CAP_FFMPEG)
    frames: list[np.ndarray] = []

    def read(_i: int) -> None:
        nonlocal cap
        ok, img = cap.read()
        if not ok:
            cap.release()
            cap = cv2.VideoCapture(str(media.video(index, 240)), cv2.CAP_FFMPEG)
            ok, img = cap.read()
        if len(frames) < 64:
            frames.append(img)

    cost = measure(read, n)
    cap.release()
    return cost, frames


def vision_cost(m, frames: list[np.ndarray], batch: int, n_frames: int) -> Cost:
    x = np.stack([m.vision.preprocess(frames[i % len(frames)]) for i in range(batch)])
    calls = max(3, n_frames // batch)
    return measure(lambda _i: m.vision.infer(x), calls, per=batch)


def speech_stage(m, cfg, commands, publish):
    """The daemon's speech recogniser stage where this build has one and it is enabled."""
    try:
        from perceptd.daemon.speech.stage import build_speech
    except ImportError:
        return None
    sp = getattr(cfg, "speech", None)
    return None if sp is None else build_speech(sp, cfg.events, commands, publish, lambda: m).stage


def audio_cost(m, cfg) -> tuple[Cost, Cost | None, float]:
    """The audio stage (VAD per 32 ms chunk, log-mel, tagger per 0.48 s) per second of audio;
    speech recognition of the segments it closed, per second of audio; segments per second."""
    import soundfile as sf

    from perceptd.daemon.pipeline.audio_stage import AudioStage
    from perceptd.daemon.pipeline.queues import BoundedQueue
    from perceptd.daemon.sources.base import CHUNK_SAMPLES, AudioChunk

    pcm, _ = sf.read(str(media.speech_wav()), dtype="float32")
    n = len(pcm) // CHUNK_SAMPLES
    chunks = [AudioChunk("wav0", i, i * 32_000_000, pcm[i * CHUNK_SAMPLES:(i + 1) * CHUNK_SAMPLES])
              for i in range(n)]
    fq, pq = BoundedQueue("f", 100_000, "block"), BoundedQueue("p", 100_000, "block")
    segments: list = []
    stage = AudioStage(BoundedQueue("a", 8, "block"), fq, pq, lambda: m, cfg.audio,
                       on_segment=segments.append)
    seconds = n * CHUNK_SAMPLES / 16_000
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(0, n, 8):  # the stage's inbox hands it a few chunks at a time
        stage.process(chunks[i:i + 8])
    c, w = time.process_time() - c0, time.perf_counter() - w0
    audio = Cost(1e3 * c / seconds, 1e3 * w / seconds, n)
    speech = speech_stage(m, cfg, BoundedQueue("c", 1000, "block"), pq)
    asr = None
    if speech is not None and segments:
        c0, w0 = time.process_time(), time.perf_counter()
        speech.process(segments)
        c, w = time.process_time() - c0, time.perf_counter() - w0
        asr = Cost(1e3 * c / seconds, 1e3 * w / seconds, len(segments))
    return audio, asr, len(segments) / seconds


def text_cost(m, cfg, n: int = 30) -> Cost:
    from perceptd.daemon.pipeline.queues import BoundedQueue
    from perceptd.daemon.pipeline.text_stage import TextCommand, TextStage

    fq = BoundedQueue("f", 100_000, "block")
    stage = TextStage(BoundedQueue("t", 8, "block"), fq, lambda: m,
                      [list(e.prompts) for e in cfg.events])
    return measure(lambda i: stage.process([TextCommand(media.COMMANDS[i % 8], "control", i)]), n)


def fusion_cost(m, cfg, frames: list[np.ndarray], streams: int, n: int = 60) -> Cost:
    """One evaluation with every modality present: `streams` camera rows, audio, a command."""
    from perceptd.daemon.fusion.timeline import ModalityOutput
    from perceptd.daemon.pipeline.fusion_stage import FusionStage
    from perceptd.daemon.pipeline.queues import BoundedQueue

    pq = BoundedQueue("p", 1_000_000, "block")
    fusion = FusionStage(BoundedQueue("f", 8, "block"), pq, lambda: m, cfg.events, cfg.fusion.tick_ms)
    out = m.vision.infer(np.stack([m.vision.preprocess(f) for f in frames[:streams]] or
                                  [m.vision.preprocess(frames[0])]))
    text = m.text.embed(["turn on the lights"])[0]

    def feed(now: int) -> None:
        for s in range(streams):
            e = out.embed[s % len(out.embed)]
            top = tuple(m.vision.top_k(out.probs[s % len(out.embed)], 5))
            fusion.timeline.update(ModalityOutput("vision", f"cam{s}", now, e, top))
            fusion.timeline.update(ModalityOutput("face", f"cam{s}", now, m.face_anchor, (("face", .9),)))
        fusion.timeline.update(ModalityOutput("audio", "wav0", now, text, (("Speech", .8),)))
        fusion.timeline.update(ModalityOutput("text", "control", now, text, (("lights on", .7),)))

    def step(_i: int) -> None:
        feed(time.monotonic_ns())
        fusion.evaluate([])
        while pq.get(timeout=0) is not None:
            pass

    return measure(step, n)


class _PubRig:
    """The daemon's EventPublisher on a free port with one subscriber (drained afterwards)."""

    def __init__(self) -> None:
        from perceptd.daemon.pipeline.queues import BoundedQueue
        from perceptd.daemon.publish.zmq_pub import EventPublisher, PublisherConfig

        self.ctx = zmq.Context()
        self.pub = EventPublisher(self.ctx, PublisherConfig(endpoint="tcp://127.0.0.1:0", sndhwm=100_000),
                                  BoundedQueue("pub", 8, "block"), model_version=lambda: "bench")
        self.pub.start()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.RCVHWM, 100_000)
        self.sub.connect(self.pub.endpoint)
        time.sleep(0.3)  # slow joiner

    def drain(self) -> int:
        n = 0
        while self.sub.poll(200):
            self.sub.recv_multipart()
            n += 1
        return n

    def close(self) -> None:
        self.pub.stop(1.0)
        self.sub.close(0)
        self.ctx.term()


def publish_cost(m, frames: list[np.ndarray], n: int = 500) -> Cost:
    """Serialise + send one vision message (the per-frame publish)."""
    from perceptd.daemon.messages import Face, Outbound, VisionMessage

    out = m.vision.infer(m.vision.preprocess(frames[0])[None])
    top = tuple(m.vision.top_k(out.probs[0], 5))
    rig = _PubRig()
    try:
        cost = measure(lambda i: rig.pub.publish_now(Outbound(VisionMessage(
            source="cam0", frame_seq=i, top=top, faces=(Face((1.0, 2.0, 3.0, 4.0), 0.9),) if i % 15 == 0
            else ()), time.monotonic_ns())), n)
        rig.drain()
    finally:
        rig.close()
    return cost


def measure_all(m, cfg, streams: list[int], batches: list[int], n_frames: int = 200) -> dict[str, Any]:
    """Every stage alone. Fusion depends on the number of camera rows, vision on the batch."""
    decode, frames = decode_frames(n_frames)
    pre = measure(lambda i: m.vision.preprocess(frames[i % len(frames)]), n_frames)
    vision = {b: vision_cost(m, frames, b, n_frames) for b in sorted(set(batches))}
    face = (measure(lambda i: m.face.detect(frames[(i * 7) % len(frames)]), 20)
            if m.face is not None else None)
    fusion = {s: fusion_cost(m, cfg, frames, s) for s in sorted(set(streams))}
    audio, asr, seg_rate = audio_cost(m, cfg)
    return {
        "decode": decode, "preprocess": pre, "vision": vision, "face": face,
        "audio_per_s": audio, "speech_asr_per_s": asr, "speech_segments_per_s": seg_rate,
        "text_per_command": text_cost(m, cfg),
        "fusion_eval": fusion, "publish_msg": publish_cost(m, frames),
    }


def costs_json(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "decode_per_frame": c["decode"].as_dict(),
        "preprocess_per_frame": c["preprocess"].as_dict(),
        "vision_per_frame_by_batch": {str(b): v.as_dict() for b, v in c["vision"].items()},
        "face_per_call": c["face"].as_dict() if c["face"] else None,
        "audio_per_second_of_audio": c["audio_per_s"].as_dict(),
        "speech_asr_per_second_of_audio": c["speech_asr_per_s"].as_dict() if c["speech_asr_per_s"] else None,
        "speech_segments_per_second_of_audio": round(c["speech_segments_per_s"], 3),
        "text_per_command": c["text_per_command"].as_dict(),
        "fusion_per_eval_by_cameras": {str(s): v.as_dict() for s, v in c["fusion_eval"].items()},
        "publish_per_message": c["publish_msg"].as_dict(),
    }


def ceiling(c: dict[str, Any], *, cores: float, streams: int, batch: int, fps_per_stream: float | None,
            face_interval_s: float, audio_sources: int, commands_per_s: float,
            other_msgs_per_s: float, key: str = "cpu_ms", device: str = "cpu") -> dict[str, Any]:
    """cores / per-frame CPU, after the time-based loads (audio, commands, faces, other messages)
    take their share: those run per second of wall time, not per frame, whatever the frame rate.

    Faces run per camera every `face_interval_s` (or every frame when frames come slower).
    On a GPU the vision encoder's own limit is its bare throughput at that batch (wall time of
    the call, measured alone) and the ceiling is the smaller of that and the CPU side's.
    """
    b = min(c["vision"], key=lambda k: abs(k - batch))
    per_frame = {
        "decode": getattr(c["decode"], key), "preprocess": getattr(c["preprocess"], key),
        f"vision_b{b}": getattr(c["vision"][b], key),
        "fusion_eval": getattr(c["fusion_eval"][streams], key),
        "publish": getattr(c["publish_msg"], key),
    }
    face_hz = 1.0 / face_interval_s if face_interval_s > 0 else float("inf")
    if fps_per_stream is not None:
        face_hz = min(face_hz, fps_per_stream)
    per_second = {  # ms of CPU per second of wall time
        "audio": audio_sources * getattr(c["audio_per_s"], key),
        "speech_asr": audio_sources * getattr(c["speech_asr_per_s"], key) if c["speech_asr_per_s"] else 0.0,
        "text": commands_per_s * getattr(c["text_per_command"], key),
        "face": (streams * face_hz * getattr(c["face"], key)) if c["face"] and face_hz != float("inf")
        else 0.0,
        "other_messages": other_msgs_per_s * getattr(c["publish_msg"], key),
    }
    frame_ms = sum(per_frame.values())
    if c["face"] and face_hz == float("inf"):
        per_frame["face"] = getattr(c["face"], key)
        frame_ms += per_frame["face"]
    left = cores - sum(per_second.values()) / 1e3
    fps = max(0.0, left) / (frame_ms / 1e3)
    cpu_fps = fps
    gpu_fps = None
    if device != "cpu":
        gpu_fps = 1e3 / c["vision"][b].wall_ms
        fps = min(cpu_fps, gpu_fps)
    amortised = {k: round(v / fps, 4) if fps else None for k, v in per_second.items()}
    return {
        "ceiling_fps": round(fps, 2), "cores": cores, "vision_batch": b,
        "cpu_side_ceiling_fps": round(cpu_fps, 2),
        "gpu_vision_ceiling_fps": round(gpu_fps, 2) if gpu_fps else None,
        "per_frame_ms": {k: round(v, 4) for k, v in per_frame.items()},
        "per_frame_total_ms": round(frame_ms, 4),
        "time_based_ms_per_s": {k: round(v, 3) for k, v in per_second.items()},
        "time_based_amortised_ms_per_frame_at_ceiling": amortised,
        "cores_left_for_frames": round(left, 4),
    }
