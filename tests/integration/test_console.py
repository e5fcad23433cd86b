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

from perceptd.daemon.bundle import pointer_target
from perceptd.daemon.config import load_config
from perceptd.daemon.console.config import hash_token
from tests.rigs.bundles import link_bundle
from tests.rigs.daemon import Collector, DaemonProcess, daemon_config

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
        samples={"dir": str(tmp / "samples"), "raw_media": {"frames": True}},
        snapshots={"enabled": True, "dir": str(tmp / "snapshots")},
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


def _loaded_width(page, selector: str, ok, timeout_s: float = 10.0) -> int:
    """An <img>'s natural width once loaded, polled from here: wait_for_function compiles its
    predicate in the page, which the console's Content-Security-Policy (no eval) refuses."""
    deadline = time.monotonic() + timeout_s
    width = 0
    while time.monotonic() < deadline and not ok(width):
        width = page.eval_on_selector(selector, "i => (i.complete ? i.naturalWidth : 0)")
        time.sleep(0.2)
    return width


def test_live_view_shows_the_camera_thumbnail(rig, page) -> None:
    page.wait_for_selector("#thumbs img.thumb[data-camera='camera0']", timeout=10_000)
    assert _loaded_width(page, "#thumbs img.thumb[data-camera='camera0']", lambda w: w == 320) == 320
    status, headers, body = _http(rig["url"] + "/api/thumb/camera0")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    for cam in ("nope", "speaker", "..%2f..%2fetc%2fpasswd"):
        assert _http(rig["url"] + f"/api/thumb/{cam}")[0] == 404, cam


def test_clicking_an_event_shows_its_weights(page) -> None:
    page.wait_for_selector("#events li[data-topic='event.cat_present']", timeout=20_000)
    page.click("#events li[data-topic='event.cat_present']")
    page.wait_for_selector("#detail:not([hidden]) #detail-body table", timeout=5_000)
    detail = page.inner_text("#detail-body")
    assert "cat_present" in detail and "vision" in detail and "weight" in detail
    assert page.locator("#timeline .tl-bar[data-event='cat_present']").count() >= 1


def test_an_event_start_shows_its_snapshot(rig, page) -> None:
    """The start message carries a snapshot id; the detail shows the frame current at the start:
    the camera's cat photo (compared with the photo itself), served only through the store."""
    import cv2
    import numpy as np

    start = "#events li[data-topic='event.cat_present']:has-text('start')"
    page.wait_for_selector(start, timeout=30_000)
    page.click(start)
    img = "#detail-body .snapshot img.snap"
    page.wait_for_selector(img, timeout=10_000)
    assert _loaded_width(page, img, lambda w: w > 0) > 0
    src = page.get_attribute(img, "src")
    sid = src.split("/")[3]
    status, headers, body = _http(rig["url"] + src)
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    shot = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    ref = cv2.resize(cv2.imread(str(CAT)), (shot.shape[1], shot.shape[0]), interpolation=cv2.INTER_AREA)
    assert float(np.abs(shot.astype(int) - ref.astype(int)).mean()) < 12
    meta = json.loads(_http(rig["url"] + f"/api/snapshot/{sid}")[2])
    assert meta["event"] == "cat_present" and meta["cameras"] == ["camera0"]
    for bad in (f"/api/snapshot/{sid}/nope.jpg", "/api/snapshot/..%2f..%2fetc",
                "/api/snapshot/20261206T010203-0123456789ab"):
        assert _http(rig["url"] + bad)[0] == 404, bad
    # the store is bounded and on disk where the config says
    assert (Path(rig["config"]).parent / "snapshots" / sid / "meta.json").exists()


def test_live_view_shows_the_audio_level(page) -> None:
    meter = "#sources .meter"
    page.wait_for_selector(meter, timeout=10_000)
    deadline, loudest = time.monotonic() + 10, -120.0
    while time.monotonic() < deadline and loudest < -40:  # the looped phrase, not silence
        loudest = max(loudest, float(page.get_attribute(meter, "data-dbfs")))
        time.sleep(0.3)
    assert -40 <= loudest <= 0, loudest


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


def test_a_sample_shows_what_it_saw_and_can_be_deleted(rig, page) -> None:
    """Its kept frame (raw frames allowed in this rig), its top labels on a click (the looped
    photo is a cat), and a bulk delete that removes it from the store."""
    reply = rig["daemon"].request({"type": "label", "sample": "now", "event": "cat_present"})
    assert reply["ok"], reply
    sid = reply["sample"]
    deadline = time.monotonic() + 20
    while _samples_show(rig["config"], sid) is None and time.monotonic() < deadline:
        time.sleep(0.3)
    page.click("nav button[data-view='samples']")
    frame = f"#samples .seen[data-sample='{sid}'] img.sample-frame"
    page.wait_for_selector(frame, timeout=10_000)
    assert _loaded_width(page, frame, lambda w: w > 0) > 0
    page.click(f"#samples button.what[data-sample='{sid}']")
    tops = f"#samples .seen[data-sample='{sid}'] .tops"
    page.wait_for_selector(tops, timeout=10_000)
    text = page.inner_text(tops)
    vision = next(line for line in text.splitlines() if line.startswith("vision:"))
    assert any(w in vision.lower() for w in ("cat", "mau", "tabby")), vision
    assert "cat_present" in text
    page.on("dialog", lambda d: d.accept())
    page.check(f"#samples input.pick[value='{sid}']")
    page.click("#bulk-delete")
    page.wait_for_selector("#s-msg:has-text('deleted 1')", timeout=10_000)
    assert _samples_show(rig["config"], sid) is None
    assert page.locator(f"#samples .seen[data-sample='{sid}']").count() == 0
    # a delete needs the CSRF token like every POST
    body = json.dumps({"ids": [sid]}).encode()
    assert _http(rig["url"] + "/api/samples/delete", body, {"Content-Type": "application/json"})[0] == 403


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
    for path in ("/api/try", "/api/retrain/start", "/api/retrain/promote", "/api/retrain/rollback"):
        status, _h, _p = _http(rig["url"] + path, b'{"text": "a cat"}', {"Content-Type": "application/json"})
        assert status == 403, path


def test_no_request_path_reaches_the_file_system(rig) -> None:
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fconfig.py",
                 "/static/index.html", "/../../etc/passwd", "/api/../config.yaml",
                 "/api/retrain/1/gate.png", "/api/retrain/../../gate.png", "/api/retrain/x/gate.png"):
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
        deadline = time.monotonic() + 30  # 503 "starting" until the bundle has loaded
        while True:
            status, _h, body = _http(url + "/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
            if status != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 200 and json.loads(body)["ok"]
        status, headers, _b = _http(url + f"/?token={TOKEN}")  # browser login: token -> cookie
        assert status == 303 and "HttpOnly" in headers["Set-Cookie"]
        cookie = headers["Set-Cookie"].split(";")[0]
        status, _h, body = _http(url + "/", headers={"Cookie": cookie})
        assert status == 200 and b"csrf-token" in body
    finally:
        daemon.terminate()


# ---------------------------------------------------------------- Teach: Retrain -> gate -> Promote

# as tests/integration/test_retrain.py: a new event `my_pet` taught with labelled photo views shown
# one every 15 minutes over the last day (distinct time blocks), so the gate can judge it
MY_PET = {"name": "my_pet", "prompts": ["my pet"], "modalities": ["vision", "audio"]}
PLAN = {"cat": (14, ["my_pet", "cat_present"]), "astronaut": (6, ["person_present"]),
        "motorcycle": (6, ["vehicle_nearby"]), "coffee": (6, []), "rocket": (4, []), "space": (4, []),
        "grass": (6, []), "brick": (4, []), }
WAVS = {"turn_on_the_kitchen_lights": ["speech"], "silence": []}
VIEW_EVERY_S = 900


@pytest.fixture(scope="module")
def teach_rig(tmp_path_factory, bundle_dir):
    from tests.rigs.samples import store_dated_views

    tmp = tmp_path_factory.mktemp("console-teach")
    root = tmp / "bundle"
    v0 = link_bundle(bundle_dir, root)  # a throwaway root: promotion never touches the shared bundle
    events = yaml.safe_load((REPO / "config.yaml").read_text())["events"] + [MY_PET]
    cfg_path = daemon_config(
        tmp, bundle={"dir": str(root), "version": "current"}, events=events,
        sources={"cameras": [{"id": "camera0", "uri": str(CAT), "fps": 4, "loop": True}]},
        samples={"dir": str(tmp / "samples"), "retrain": {"gate": {"latency_budget_ms": 25}}},
        speech={"enabled": False})
    cfg = load_config(cfg_path)
    store_dated_views(cfg, root / v0, PLAN, WAVS, VIEW_EVERY_S)
    daemon = DaemonProcess(cfg_path)
    collector = Collector(daemon.events_endpoint)
    try:
        daemon.wait_ready(120)
        yield {"daemon": daemon, "collector": collector, "root": root, "v0": v0,
               "url": daemon.http_endpoint}
    finally:
        daemon.terminate()
        collector.close()


def test_retrain_gate_report_promote_and_rollback_in_the_browser(browser, teach_rig) -> None:
    t = teach_rig
    ctx = browser.new_context()
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        pg.goto(t["url"] + "/")
        pg.wait_for_selector("#conn.ok", timeout=15_000)
        pg.click("nav button[data-view='teach']")
        pg.wait_for_selector("#rt-start:not([disabled])", timeout=10_000)
        pg.click("#rt-start")
        pg.wait_for_selector("#rt-state:has-text('running')", timeout=10_000)
        status, _h, body = _http(t["url"] + "/api/retrain/start", b"{}",  # one at a time
                                 {"Content-Type": "application/json",
                                  "X-CSRF-Token": pg.get_attribute("meta[name='csrf-token']", "content")})
        assert status == 409 and b"still running" in body, body
        pg.wait_for_selector("#rt-verdict", timeout=420_000)
        verdict = pg.locator("#rt-verdict")
        version = verdict.get_attribute("data-version")
        assert verdict.get_attribute("data-passed") == "true", pg.inner_text("#rt-report")
        rules = pg.inner_text("#rt-rules")
        for rule in ("per_event_f1", "macro_f1", "baselines", "slices", "parity", "latency"):
            assert rule in rules
        pg.wait_for_selector("#rt-png", timeout=10_000)
        assert _loaded_width(pg, "#rt-png", lambda w: w > 100) > 100
        png = pg.get_attribute("#rt-png", "src")
        assert png.startswith("/api/retrain/")
        assert pointer_target(t["root"], "current") == t["v0"]  # passed, not promoted yet

        since = time.monotonic()
        pg.click("#rt-promote:not([disabled])")
        pg.wait_for_selector("#rt-msg[data-done='promote']", timeout=60_000)
        assert f"current -> {version}" in pg.inner_text("#rt-msg"), pg.inner_text("#rt-msg")
        assert pointer_target(t["root"], "current") == version
        assert pointer_target(t["root"], "previous") == t["v0"]
        msg = t["collector"].wait_for(lambda m: m.get("model_version") == version, 30, since)
        assert msg["model_version"] == version
        pg.wait_for_selector("#rt-promote[disabled]", timeout=5_000)

        pg.evaluate("delete document.querySelector('#rt-msg').dataset.done")
        since = time.monotonic()
        pg.click("#rt-rollback")
        pg.wait_for_selector("#rt-msg[data-done='rollback']", timeout=60_000)
        assert pointer_target(t["root"], "current") == t["v0"], pg.inner_text("#rt-msg")
        msg = t["collector"].wait_for(lambda m: m.get("model_version") == t["v0"], 30, since)
        assert msg["model_version"] == t["v0"]
    finally:
        ctx.close()
    assert not errors, errors
