"""A dead camera on the live page, apart from a quiet one (issue 18.6), in headless Chromium: consume
reads detect's camera statuses from a pipe (`--camera-status`), a camera goes stale then live again.
Screenshot: test-artifacts/camera-down.png."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest

from hazardctl.messages import CameraStatus
from hazardctl.synthetic import risk_result
from tests.consume_proc import ConsumeProcess
from tests.e2e.conftest import ARTIFACTS
from tests.e2e.test_live_page import wait_js

pytestmark = pytest.mark.timeout(120)


def status(camera: str, state: str, previous: str | None, reason: str = "") -> bytes:
    now = time.time()
    return CameraStatus(camera_id=camera, state=state, previous=previous, reason=reason, since=now, ts=now,
                        heartbeat_s=10.0).model_dump_json().encode() + b"\n"


@contextlib.contextmanager
def consume_reading_statuses(tmp_path):
    """consume reading camera statuses from a pipe: (the process, the pipe's writing end)."""
    fifo = tmp_path / "camera-status"
    os.mkfifo(fifo)
    writer: list = []
    opener = threading.Thread(target=lambda: writer.append(open(fifo, "wb", buffering=0)), daemon=True)
    opener.start()  # consume opens the reading end as it starts
    c = ConsumeProcess("--http", "127.0.0.1:0", "--camera-status", str(fifo), "--quiet-period", "300")
    try:
        opener.join(10)
        yield c, writer[0]
    finally:
        for f in writer:
            f.close()
        c.stop()
        c.kill()


def test_a_dead_camera_is_shown_apart_from_a_quiet_one(browser, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    with consume_reading_statuses(tmp_path) as (c, w):
        t = time.time()
        c.send(risk_result("cam-quiet", "g1", 1, t, level="none", crop_b64=None),
               risk_result("cam-dead", "g1", 1, t, level="none", crop_b64=None))
        w.write(status("cam-quiet", "live", "stale") + status("cam-dead", "live", "stale"))
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{c.http_port}/")
        wait_js(page, "document.querySelectorAll('.cam').length === 2", 15)

        w.write(status("cam-dead", "stale", "live", "read failed: connection refused"))
        wait_js(page, "!!document.querySelector('.cam.down[data-camera=\"cam-dead\"]')", 10)
        assert page.locator('.cam[data-camera="cam-quiet"]').get_attribute("class").split()[:2] == ["cam", "none"]
        assert page.locator('.cam.down .lvl').inner_text().lower() == "down · stale"
        assert "connection refused" in page.locator('.cam.down').get_attribute("title")
        badge = page.locator(".inc .badge.camdown")
        assert badge.count() == 1 and badge.inner_text().lower() == "camera"
        page.screenshot(path=str(ARTIFACTS / "camera-down.png"))
        assert c.metric("hazardctl_consume_cameras_down") == 1

        w.write(status("cam-dead", "live", "stale", "frames arriving"))
        wait_js(page, "!document.querySelector('.cam.down')", 10)
        wait_js(page, "!!document.querySelector('.inc.ended .badge.camdown')", 10)  # among the recently ended
        assert c.metric("hazardctl_consume_cameras_down") == 0
        assert not errors, errors


def test_the_selected_cameras_snapshot_shows_its_zones(browser, tmp_path):
    """issue 19.5: the page shows the zones overlay on the camera's latest snapshot (made by detect with
    the preview's drawing, carried by its camera status). Screenshot: test-artifacts/camera-scene.png."""
    import cv2

    from hazardctl.zones import SceneConfig, build_scene
    from stages.detect.camera_status import render_snapshot
    from tests.conftest import ROOT

    ARTIFACTS.mkdir(exist_ok=True)
    image = cv2.imread(str(ROOT / "tests/data/bus.jpg"))
    scene = build_scene("cam-scene", SceneConfig(zones=[
        {"name": "road", "kind": "roadway", "polygon": [[0, 0.62], [1, 0.62], [1, 1], [0, 1]],
         "direction": [[0.5, 0.95], [0.5, 0.7]]},
        {"name": "crossing", "kind": "crosswalk", "polygon": [[0.1, 0.75], [0.9, 0.75], [0.9, 0.85], [0.1, 0.85]]}]),
        (image.shape[1], image.shape[0]))
    snap = render_snapshot(image, scene, [], time.time(), 480)
    with consume_reading_statuses(tmp_path) as (c, w):
        now = time.time()
        c.send(risk_result("cam-scene", "g1", 1, now, level="none", crop_b64=None),
               risk_result("cam-plain", "g1", 1, now, level="none", crop_b64=None))
        w.write(CameraStatus(camera_id="cam-scene", state="live", since=now, ts=now, heartbeat_s=10.0,
                             snapshot_jpeg_b64=snap.jpeg_b64, snapshot_size=snap.size,
                             snapshot_ts=snap.ts).model_dump_json().encode() + b"\n")
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{c.http_port}/")
        wait_js(page, "document.querySelectorAll('.cam').length === 2", 15)
        page.locator('.cam[data-camera="cam-scene"]').click()
        wait_js(page, "!$('scene').hidden && $('scene-img').complete && $('scene-img').naturalWidth > 0", 10)
        assert page.evaluate("[$('scene-img').naturalWidth, $('scene-img').naturalHeight]") == list(snap.size)
        assert "cam-scene" in page.locator("#scene-hint").inner_text()
        page.screenshot(path=str(ARTIFACTS / "camera-scene.png"))
        page.locator('.cam[data-camera="cam-plain"]').click()  # a camera without a snapshot: no scene shown
        wait_js(page, "$('scene').hidden", 10)
        assert c.get("/cameras/cam-plain/snapshot")[0] == 404
        assert not errors, errors
