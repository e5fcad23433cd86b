"""The daemon with the GPU's vision path forced on a CPU: raw frames of two cameras of
different sizes go through the preprocess stage untouched, are batched together, resized by
the bundle's `vision_resize` graph, and the published labels still name each photo."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rigs.daemon import Collector, DaemonProcess, daemon_config
from tests.rigs.ffmpeg_stream import FfmpegStream, ffmpeg_available

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "samples" / "images"
CAT_LABELS = {"tabby cat", "tiger cat", "Egyptian Mau", "Persian cat", "Siamese cat", "lynx"}
COFFEE_LABELS = {"espresso", "cup", "coffee mug", "tea cup"}

pytestmark = pytest.mark.skipif(not ffmpeg_available(), reason="ffmpeg is not installed")


def test_device_resize_path_names_both_photos(tmp_path: Path) -> None:
    cat = FfmpegStream(PHOTOS / "cat.jpg", kind="udp", size=(640, 480), fps=10, log_dir=tmp_path).start()
    coffee = FfmpegStream(PHOTOS / "coffee.jpg", kind="udp", size=(320, 240), fps=10,
                          log_dir=tmp_path).start()
    cams = [{"id": cid, "uri": s.url, "fps": 10, "read_timeout_s": 1.0, "backoff_initial_s": 0.2,
             "backoff_max_s": 1.0} for cid, s in (("cat", cat), ("coffee", coffee))]
    cfg = daemon_config(tmp_path, sources={"cameras": cams}, runtime={"device": "cpu", "gpu_resize": "on"},
                        vision={"max_batch": 4, "max_wait_ms": 20, "faces": False})
    daemon = DaemonProcess(cfg)
    collector = Collector(daemon.events_endpoint)
    try:
        status = daemon.wait_ready(90)
        assert status["vision_path"]["resize"] == "device", status["vision_path"]
        for source, labels in (("cat", CAT_LABELS), ("coffee", COFFEE_LABELS)):
            msg = collector.wait_for(lambda m, s=source: m["topic"] == "vision" and m["source"] == s,
                                     timeout=30)
            assert {label for label, _p in msg["top"]} & labels, (source, msg["top"])
        assert daemon.request({"type": "status"})["stages"]["vision"]["errors"] == 0
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
        collector.close()
        cat.stop()
        coffee.stop()
