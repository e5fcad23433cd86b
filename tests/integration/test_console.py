"""The web console against the real daemon, driven by a real Chromium (Debian's `chromium`,
launched by Playwright with executable_path): live view, event detail, labelling a sample with
a click (checked with `perceptd samples show --json`), try-a-prompt, CSRF, and authentication
beyond loopback.  The daemon runs on the sample photo (looped as a camera) and the sample
speech (looped WAV); one daemon serves the module, a second one the token tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from perceptd.daemon.console.config import hash_token
from tests.rigs.daemon import DaemonProcess, daemon_config

REPO = Path(__file__).resolve().parents[2]
CAT = REPO / "samples" / "images" / "cat.jpg"
PHRASE = REPO / "samples" / "audio" / "turn_on_the_kitchen_lights.wav"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "s3cret-console-token-for-tests-0123456789"

playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install playwright (dev extra)")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")


def _http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None
          ) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {},
                                 method="POST" if data is not None else "GET")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003
        return None


def _samples_show(cfg: Path, sid: str) -> dict | None:
    r = subprocess.run([sys.executable, "-m", "perceptd", "samples", "show", sid, "--json", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    return json.loads(r.stdout) if r.returncode == 0 else None


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    cfg = daemon_config(
        tmp,
        sources={"cameras": [{"id": "camera0", "uri": str(CAT), "fps": 5, "loop": True}],
                 "audio_files": [{"id": "speaker", "path": str(PHRASE), "loop": True}]},
        samples={"dir": str(tmp / "samples")},
        speech={"enabled": False},  # typed commands are enough here; spare the CPU
    )
    daemon = DaemonProcess(cfg)
    try:
        daemon.wait_ready(120)
        yield {"daemon": daemon, "config": cfg, "url": daemon.http_endpoint}
    finally:
        daemon.terminate()


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser, rig):
    ctx = browser.new_context()
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(rig["url"] + "/")
    pg.wait_for_selector("#conn.ok", timeout=15_000)  # the SSE stream is open
    yield pg
    ctx.close()
    assert not errors, errors


def test_live_view_shows_sources_stages_and_events_as_they_happen(rig, page) -> None:
    page.wait_for_selector("#sources td:has-text('camera0')", timeout=10_000)
    assert "up" in page.inner_text("#sources")
    page.wait_for_selector("#stages td:has-text('vision')")
    page.wait_for_selector("#latency td:has-text('event')", timeout=15_000)
    # a command typed now arrives over SSE while the page is open, with the event it became
    rig["daemon"].request({"type": "command", "text": "turn on the lights"})
    page.wait_for_selector("#events li[data-topic='command']:has-text('turn on the lights')",
                           timeout=15_000)
    page.wait_for_selector("#events li[data-topic='event.lights_on']", timeout=15_000)
    # the camera's cat is an active event with its weight bars and top labels
    page.wait_for_selector("#active .ev[data-event='cat_present']", timeout=20_000)
    assert "vision" in page.inner_text("#active .ev[data-event='cat_present']")


def test_clicking_an_event_shows_its_weights(page) -> None:
    page.wait_for_selector("#events li[data-topic='event.cat_present']", timeout=20_000)
    page.click("#events li[data-topic='event.cat_present']")
    page.wait_for_selector("#detail:not([hidden]) #detail-body table", timeout=5_000)
    detail = page.inner_text("#detail-body")
    assert "cat_present" in detail and "vision" in detail and "weight" in detail
    assert page.locator("#timeline .tl-bar[data-event='cat_present']").count() >= 1


def test_labelling_a_sample_in_the_browser_changes_the_store(rig, page) -> None:
    reply = rig["daemon"].request({"type": "label", "sample": "now", "event": "cat_present"})
    assert reply["ok"], reply
    sid = reply["sample"]
    deadline = time.monotonic() + 20
    while (before := _samples_show(rig["config"], sid)) is None and time.monotonic() < deadline:
        time.sleep(0.3)
    assert before is not None and "dog_present" not in before["labels"]
    page.click("nav button[data-view='samples']")
    button = f"#samples button.lab[data-sample='{sid}'][data-event='dog_present']"
    page.wait_for_selector(button, timeout=10_000)
    page.click(button)
    page.wait_for_selector(f"#samples span.labelled[data-sample='{sid}']:has-text('dog_present')",
                           timeout=10_000)
    after = _samples_show(rig["config"], sid)
    assert after["labels"].get("dog_present") == 1, after["labels"]


def test_try_a_prompt_returns_a_score(page) -> None:
    page.click("nav button[data-view='teach']")
    page.fill("#try-text", "a cat sitting on the floor")
    page.click("#try-go")
    page.wait_for_selector("#try-score", timeout=20_000)
    score = float(page.inner_text("#try-score"))
    assert 0.0 <= score <= 1.0
    assert "vision" in page.inner_text("#try-result")


def test_health_view_shows_status(page) -> None:
    page.click("nav button[data-view='health']")
    page.wait_for_selector("#health-summary td:has-text('running')", timeout=10_000)
    assert page.locator("a[href='/metrics']").count() == 1


def test_post_without_csrf_token_is_refused(rig) -> None:
    body = json.dumps({"ids": ["20261206T000000-000000000000"], "event": "none"}).encode()
    for headers in ({"Content-Type": "application/json"},
                    {"Content-Type": "application/json", "X-CSRF-Token": "forged"}):
        status, _h, payload = _http(rig["url"] + "/api/samples/label", body, headers)
        assert status == 403, payload
        assert b"CSRF" in payload
    status, _h, _p = _http(rig["url"] + "/api/try", b'{"text": "a cat"}',
                           {"Content-Type": "application/json"})
    assert status == 403


def test_no_request_path_reaches_the_file_system(rig) -> None:
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fconfig.py",
                 "/static/index.html", "/../../etc/passwd", "/api/../config.yaml"):
        status, _h, body = _http(rig["url"] + path)
        assert status == 404, (path, status)
        assert b"import" not in body and b"root:" not in body
    status, headers, _b = _http(rig["url"] + "/static/console.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")


def test_non_loopback_bind_without_token_refuses_to_start(tmp_path: Path) -> None:
    cfg = daemon_config(tmp_path, http={"host": "0.0.0.0", "allow_insecure": True})
    r = subprocess.run([sys.executable, "-m", "perceptd", "run", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "console.token_hash" in r.stderr + r.stdout


def test_with_a_token_requests_without_it_get_401(tmp_path: Path) -> None:
    cfg = daemon_config(tmp_path, http={"host": "0.0.0.0", "allow_insecure": True},
                        console={"token_hash": hash_token(TOKEN)},
                        sources={"cameras": [{"id": "camera0", "uri": str(CAT), "fps": 2, "loop": True}]},
                        samples={"enabled": False}, speech={"enabled": False})
    assert TOKEN not in cfg.read_text()  # only its hash is stored
    port = yaml.safe_load(cfg.read_text())["http"]["port"]
    url = f"http://127.0.0.1:{port}"
    daemon = DaemonProcess(cfg)
    try:
        daemon.wait_ready(120)
        for path in ("/", "/api/status", "/api/stream", "/healthz", "/metrics", "/static/console.js"):
            status, headers, _b = _http(url + path)
            assert status == 401, (path, status)
        status, _h, _b = _http(url + "/", headers={"Authorization": "Bearer wrong-token"})
        assert status == 401
        status, _h, body = _http(url + "/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and json.loads(body)["ok"]
        status, headers, _b = _http(url + f"/?token={TOKEN}")  # browser login: token -> cookie
        assert status == 303 and "HttpOnly" in headers["Set-Cookie"]
        cookie = headers["Set-Cookie"].split(";")[0]
        status, _h, body = _http(url + "/", headers={"Cookie": cookie})
        assert status == 200 and b"csrf-token" in body
    finally:
        daemon.terminate()
