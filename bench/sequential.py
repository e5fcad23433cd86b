"""The baseline a user would write instead of perceptd: one plain loop, one step after another.

Per frame, round robin over the streams: cv2 read, preprocess, the vision encoder (batch 1),
faces when due, then whatever audio and commands are due by the wall clock (VAD, tagger, text
encoder), the fusion evaluation, and publishing every message over the same ZeroMQ PUB.  It
runs the daemon's own models and stage code (the same ModelSet, AudioStage/TextStage.process,
FusionStage.evaluate, EventPublisher), so the work is the same and only the scheduling differs.

Real-time mode models live cameras: frame k of a stream exists from t0 + k/fps on; a loop that
falls behind skips to the newest frame (still decoding the skipped ones, as H.264 requires)
and counts them dropped; processed frames later than one frame period count as late.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from perceptd.bench import media
from perceptd.bench.rig import percentiles
from perceptd.bench.stages import _PubRig, speech_stage

NS = 1_000_000_000


@dataclass
class _Stream:
    index: int
    fps_file: int
    cap: cv2.VideoCapture
    seq: int = 0
    next_k: int = 0
    last_face_ns: int = 0

    def _reopen(self) -> None:
        """End of file: loop, as the daemon's looped sources do."""
        self.cap.release()
        self.cap = cv2.VideoCapture(str(media.video(self.index, self.fps_file)), cv2.CAP_FFMPEG)

    def grab(self) -> None:
        """Decode a frame that will not be used (a live H.264 stream cannot skip decoding)."""
        if not self.cap.grab():
            self._reopen()
            self.cap.grab()

    def read(self) -> np.ndarray | None:
        ok, img = self.cap.read()
        if not ok:
            self._reopen()
            ok, img = self.cap.read()
        return img if ok else None


class PlainLoop:
    def __init__(self, m, cfg, streams: int, realtime: bool, fps: float = 30.0, audio: bool = True,
                 commands_per_s: float = 1.0) -> None:
        from perceptd.daemon.pipeline.audio_stage import AudioStage
        from perceptd.daemon.pipeline.fusion_stage import FusionStage
        from perceptd.daemon.pipeline.queues import BoundedQueue
        from perceptd.daemon.pipeline.text_stage import TextStage

        self.m, self.cfg = m, cfg
        self.realtime, self.fps = realtime, fps
        file_fps = 30 if realtime else 240
        self.streams = [_Stream(i, file_fps, cv2.VideoCapture(str(media.video(i, file_fps)), cv2.CAP_FFMPEG))
                        for i in range(streams)]
        self.q_fusion = BoundedQueue("fusion", 1_000_000, "block")
        self.q_publish = BoundedQueue("publish", 1_000_000, "block")
        self.fusion = FusionStage(BoundedQueue("unused", 1, "block"), self.q_publish, lambda: m,
                                  cfg.events, cfg.fusion.tick_ms)
        self.q_commands = BoundedQueue("commands", 1000, "block")
        self.segments: list = []
        self.audio = AudioStage(BoundedQueue("a", 1, "block"), self.q_fusion, self.q_publish, lambda: m,
                                cfg.audio, on_segment=self.segments.append) if audio else None
        self.speech = speech_stage(m, cfg, self.q_commands, self.q_publish)
        self.text = TextStage(BoundedQueue("t", 1, "block"), self.q_fusion, lambda: m,
                              [list(e.prompts) for e in cfg.events])
        self.cmd_period_ns = int(NS / commands_per_s) if commands_per_s > 0 else 0
        self.pcm = self._speech() if audio else None
        self.rig = _PubRig()

    @staticmethod
    def _speech() -> np.ndarray:
        import soundfile as sf

        pcm, _ = sf.read(str(media.speech_wav()), dtype="float32")
        return pcm

    # ------------------------------------------------------------------ one frame's work

    def _frame(self, s: _Stream, img: np.ndarray, t_cap: int) -> None:
        from perceptd.daemon.fusion.timeline import ModalityOutput
        from perceptd.daemon.messages import Face, Outbound, VisionMessage

        m, vc = self.m, self.cfg.vision
        out = m.vision.infer(m.vision.preprocess(img)[None])
        top = tuple(m.vision.top_k(out.probs[0], vc.top_k))
        src = f"cam{s.index}"
        faces = ()
        if vc.faces and m.face is not None and t_cap - s.last_face_ns >= vc.face_interval_s * NS:
            s.last_face_ns = t_cap
            faces = tuple(m.face.detect(img))
            if faces:
                self.fusion.timeline.update(ModalityOutput("face", src, t_cap, m.face_anchor,
                                                           (("face", faces[0].score),)))
        self.fusion.timeline.update(ModalityOutput("vision", src, t_cap, out.embed[0], top))
        self.rig.pub.publish_now(Outbound(VisionMessage(
            source=src, frame_seq=s.seq, top=top,
            faces=tuple(Face(tuple(float(v) for v in f.box), float(f.score)) for f in faces)), t_cap))
        s.seq += 1

    def _due_audio(self, now: int) -> None:
        from perceptd.daemon.sources.base import CHUNK_SAMPLES, AudioChunk

        if self.audio is None:
            return
        due = (now - self.t0) * 16_000 // (CHUNK_SAMPLES * NS)
        n = len(self.pcm) // CHUNK_SAMPLES
        chunks = []
        while self.chunks_done < due:
            i = self.chunks_done % n
            t = self.t0 + (self.chunks_done + 1) * CHUNK_SAMPLES * NS // 16_000
            chunks.append(AudioChunk("wav0", self.chunks_done, t,
                                     self.pcm[i * CHUNK_SAMPLES:(i + 1) * CHUNK_SAMPLES]))
            self.chunks_done += 1
        if chunks:
            self.audio.process(chunks)
        if self.segments and self.speech is not None:  # speech recognition, inline
            self.speech.process(self.segments)
        self.segments.clear()

    def _due_commands(self, now: int) -> list:
        from perceptd.daemon.pipeline.text_stage import TextCommand

        if not self.cmd_period_ns:
            return []
        cmds = []
        while self.t0 + self.cmds_done * self.cmd_period_ns <= now:
            cmds.append(TextCommand(media.COMMANDS[self.cmds_done % 8], "control",
                                    self.t0 + self.cmds_done * self.cmd_period_ns))
            self.cmds_done += 1
        while (c := self.q_commands.get(timeout=0)) is not None:  # spoken commands
            cmds.append(c)
        if cmds:
            self.text.process(cmds)
        return cmds

    def _fuse_and_publish(self) -> None:
        commands = []
        while (item := self.q_fusion.get(timeout=0)) is not None:
            self.fusion.timeline.update(item)
            if item.modality == "text":
                commands.append(item)
        self.fusion.evaluate(commands)
        while (out := self.q_publish.get(timeout=0)) is not None:
            self.rig.pub.publish_now(out)

    # ------------------------------------------------------------------ the loop

    def _next(self, s: _Stream, now: int) -> tuple[np.ndarray | None, int, int]:
        """(frame, capture time, frames skipped) for stream s; None when nothing is due yet."""
        if not self.realtime:
            img = s.read()
            return img, time.monotonic_ns(), 0
        newest = int((now - self.t0) * self.fps // NS)
        if newest < s.next_k:
            return None, 0, 0
        for _ in range(newest - s.next_k):
            s.grab()
        skipped = newest - s.next_k
        s.next_k = newest + 1
        return s.read(), self.t0 + int(newest * NS / self.fps), skipped

    def run(self, seconds: float, warmup: float) -> dict[str, Any]:
        self.t0 = time.monotonic_ns()
        self.chunks_done = 0
        self.cmds_done = 0
        t_measure = self.t0 + int(warmup * NS)
        t_end = t_measure + int(seconds * NS)
        done = skipped = late = 0
        lat: list[float] = []
        period_ns = NS / self.fps
        c0, w0 = None, 0
        while True:
            now = time.monotonic_ns()
            if now >= t_end:
                break
            if c0 is None and now >= t_measure:
                c0, w0 = time.process_time(), now
            progressed = False
            for s in self.streams:
                img, t_cap, n_skip = self._next(s, time.monotonic_ns())
                if img is None:
                    continue
                progressed = True
                self._frame(s, img, t_cap)
                now = time.monotonic_ns()
                self._due_audio(now)
                self._due_commands(now)
                self._fuse_and_publish()
                t_pub = time.monotonic_ns()
                if t_cap >= t_measure:
                    done += 1
                    skipped += n_skip
                    lat.append((t_pub - t_cap) / 1e6)
                    late += self.realtime and (t_pub - t_cap) > period_ns
            if not progressed:
                now = time.monotonic_ns()
                self._due_audio(now)
                self._due_commands(now)
                wake = min(self.t0 + int((s.next_k * NS) / self.fps) for s in self.streams)
                time.sleep(max(0.0, min(0.005, (wake - now) / NS)))
        if c0 is None:  # nothing came after the warm-up (a very slow first frame)
            c0, w0 = time.process_time(), time.monotonic_ns()
        wall = max(1e-9, (time.monotonic_ns() - w0) / NS)
        cpu = time.process_time() - c0
        offered = (done + skipped) if self.realtime else done
        return {
            "fps": round(done / wall, 2), "frames": done, "wall_s": round(wall, 2),
            "cpu_cores": round(cpu / wall, 3),
            "offered_fps": round(offered / wall, 2),
            "dropped": skipped, "dropped_fraction": round(skipped / max(1, offered), 4),
            "late": int(late), "late_fraction": round(late / max(1, done), 4),
            "latency_ms": percentiles(lat),
        }

    def close(self) -> None:
        self.rig.drain()
        self.rig.close()
        for s in self.streams:
            s.cap.release()


def plain_vision_loop(bundle, device: str, streams: int, seconds: float, warmup: float,
                      threads: int) -> dict[str, Any]:
    """The loop a user would write first: OpenCV read -> ONNX Runtime (vision) -> print the top
    label, round robin over the streams, as fast as it goes.  No audio, no fusion, no faces:
    the floor of what a per-frame loop costs on these models."""
    import io
    import os

    from perceptd.daemon.inference.session import SessionOptions, create_session, provider_of
    from perceptd.daemon.inference.vision import preprocess

    sess = create_session(bundle.model_path("vision"), SessionOptions(device, threads))
    labels = bundle.labels("vision")
    caps = [_Stream(i, 240, cv2.VideoCapture(str(media.video(i, 240)), cv2.CAP_FFMPEG))
            for i in range(streams)]
    sink = io.TextIOWrapper(open(os.devnull, "wb"))  # noqa: SIM115 - "print" without a terminal
    t_measure = time.monotonic() + warmup
    t_end = t_measure + seconds
    done, c0, w0 = 0, None, 0.0
    try:
        while time.monotonic() < t_end:
            if c0 is None and time.monotonic() >= t_measure:
                c0, w0 = time.process_time(), time.monotonic()
            for s in caps:
                img = s.read()
                probs = sess.run(["probs"], {"image": preprocess(img)[None]})[0][0]
                print(f"cam{s.index} {labels[int(np.argmax(probs))]} {float(probs.max()):.2f}", file=sink)
                done += c0 is not None
    finally:
        sink.close()
        for s in caps:
            s.cap.release()
    if c0 is None:  # the warm-up took all the time
        c0, w0 = time.process_time(), time.monotonic()
    wall = max(1e-9, time.monotonic() - w0)
    cpu = time.process_time() - c0
    return {"fps": round(done / wall, 2), "frames": done, "cpu_cores": round(cpu / wall, 3),
            "ort_threads": threads, "provider": provider_of(sess).removesuffix("ExecutionProvider")}
