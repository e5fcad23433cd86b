"""Screenshots of the web console for docs/img/: a real daemon on the sample photo and speech,
a real Chromium (the system `chromium` package, through Playwright).

    python scripts/console_screenshots.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.rigs.daemon import DaemonProcess, daemon_config  # noqa: E402

CAT = REPO / "samples" / "images" / "cat.jpg"
PHRASE = REPO / "samples" / "audio" / "turn_on_the_kitchen_lights.wav"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        cfg = daemon_config(
            tmp,
            sources={"cameras": [{"id": "camera0", "uri": str(CAT), "fps": 5, "loop": True}],
                     "audio_files": [{"id": "speaker", "path": str(PHRASE), "loop": True}]},
            samples={"dir": str(tmp / "samples"), "raw_media": {"frames": True}},
            snapshots={"enabled": True, "dir": str(tmp / "snapshots")},
        )
        daemon = DaemonProcess(cfg)
        try:
            daemon.wait_ready(180)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(daemon.http_endpoint + "/")
                page.wait_for_selector("#conn.ok", timeout=20_000)
                for text in ("turn on the lights", "play some music"):
                    daemon.request({"type": "command", "text": text})
                    time.sleep(1.0)
                page.wait_for_selector("#active .ev[data-event='cat_present']", timeout=60_000)
                page.wait_for_selector("#sources .meter", timeout=20_000)
                deadline = time.monotonic() + 8.0  # thumbnails settle; the meter shows the phrase
                while time.monotonic() < deadline and float(
                        page.get_attribute("#sources .meter", "data-dbfs") or -120) < -45:
                    time.sleep(0.1)
                page.screenshot(path=str(args.out / "console-live.png"), full_page=True)
                page.click("#events li[data-topic='event.cat_present']:has-text('start')")
                page.wait_for_selector("#detail-body .snapshot img.snap", timeout=20_000)
                time.sleep(1.5)
                page.screenshot(path=str(args.out / "console-timeline.png"), full_page=True)
                page.click("nav button[data-view='teach']")
                page.fill("#try-text", "a cat sitting on the floor")
                page.click("#try-go")
                page.wait_for_selector("#try-score", timeout=30_000)
                page.screenshot(path=str(args.out / "console-teach.png"), full_page=True)
                daemon.request({"type": "label", "sample": "now", "event": "cat_present"})
                time.sleep(2.0)
                page.click("nav button[data-view='samples']")
                page.wait_for_selector("#samples button.what", timeout=20_000)
                page.click("#samples button.what >> nth=0")
                page.wait_for_selector("#samples .tops", timeout=20_000)
                time.sleep(1.0)
                page.screenshot(path=str(args.out / "console-samples.png"), full_page=True)
                browser.close()
        finally:
            daemon.terminate()
    for png in sorted(args.out.glob("console-*.png")):
        print(f"{png.relative_to(REPO)}  {png.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
