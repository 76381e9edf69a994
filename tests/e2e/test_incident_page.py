"""Operators on the live page, in headless Chromium, against consume with its incident store: ack,
resolve and false positive from the page (seen by a second WebSocket client), the incident detail
(timeline, evidence strip fetched with the token), the history view with filters and paging.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import contextlib
import json
import time

import pytest
from websockets.sync.client import connect

from hazardctl.synthetic import risk_result
from tests.consume_proc import ConsumeProcess
from tests.e2e.conftest import ARTIFACTS
from tests.e2e.test_live_page import crop, wait_js

pytestmark = pytest.mark.timeout(150)
TOKEN = "incident-page-token-" + "q" * 20


def next_incident_event(ws, action: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no incident event {action!r} within {timeout}s")
        msg = json.loads(ws.recv(timeout=left))
        if msg.get("type") == "incident" and msg.get("event") == action:
            return msg["incident"]


def test_operators_act_from_the_page_and_browse_history(browser, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    c = ConsumeProcess("--http", "127.0.0.1:0", "--token-file", str(token_file), "--data-dir", str(tmp_path / "d"),
                       "--quiet-period", "600", "--group-ttl", "1200")
    stack = contextlib.ExitStack()
    try:
        t = time.time()
        bus, street = crop("bus.jpg", (0, 380, 810, 920)), crop("zidane.jpg", (0, 0, 1280, 720))
        c.send(risk_result("cam-03", "cam-03-g2", 60, t - 9, level="high", crop_b64=bus,
                           risk_types=["vehicle-pedestrian conflict"], description="People step in front of a bus."),
               risk_result("cam-03", "cam-03-g2", 61, t - 8, level="high", crop_b64=street,
                           risk_types=["vehicle-pedestrian conflict", "tailgating"],
                           description="Still in the lane as the bus pulls away."),
               risk_result("cam-07", "cam-07-g4", 61, t - 6, level="medium", crop_b64=street,
                           risk_types=["abrupt lane change"], description="A car cuts across two lanes."))
        # 28 older incidents on other cameras: the history needs two pages of 25
        c.send(*[risk_result(f"cam-{20 + i % 4}", f"g{i}", 5, t - 500 + i * 10, level=("medium", "high")[i % 2],
                             crop_b64=None, description=f"older scene {i}") for i in range(28)])
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.add_init_script(f"sessionStorage.setItem('hazardctl.token', {json.dumps(TOKEN)})")
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{c.http_port}/")
        page.wait_for_selector("#conn.live", timeout=15_000)
        wait_js(page, "document.querySelectorAll('#incidents .inc').length === 30", 15)
        other = stack.enter_context(connect(c.ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}))
        assert json.loads(other.recv(timeout=5))["type"] == "snapshot"

        cam3 = page.locator('#incidents .inc:has-text("cam-03")').first
        cam3.locator('button[data-act="ack"]').click()
        acked = next_incident_event(other, "ack")
        assert (acked["camera_id"], acked["disposition"]) == ("cam-03", "acked")
        wait_js(page, "[...document.querySelectorAll('#incidents .inc .disp')].some(d => d.textContent === 'acked')", 10)
        assert page.locator('#incidents .inc:has-text("cam-03") button[data-act="ack"]').first.is_disabled()

        # the detail: two results with their crops as evidence, the ack in the timeline
        cam3.locator(".desc").click()
        page.wait_for_selector("#detail:not([hidden])", timeout=5_000)
        wait_js(page, "document.querySelectorAll('#d-strip img').length === 2 && "
                      "[...document.querySelectorAll('#d-strip img')].every(i => i.naturalWidth > 0)", 15)
        wait_js(page, "document.querySelectorAll('#d-timeline .tl').length === 3", 10)
        types = page.eval_on_selector_all("#d-timeline .tl", "rows => rows.map(r => r.dataset.type)")
        assert types == ["result", "result", "action"]
        assert "Still in the lane" in page.inner_text("#d-timeline")
        page.screenshot(path=str(ARTIFACTS / "consume-incident-detail.png"))

        page.fill("#d-by", "desk 3")
        page.fill("#d-note", "bus driver warned")
        page.click('#d-acts button[data-act="resolve"]')
        resolved = next_incident_event(other, "resolve")
        assert (resolved["incident_id"], resolved["state"]) == (acked["incident_id"], "ended")
        wait_js(page, "document.querySelector('#d-msg').textContent === 'resolve recorded'", 10)
        wait_js(page, "document.querySelectorAll('#d-timeline .tl.action').length === 2", 10)
        assert "bus driver warned" in page.inner_text("#d-timeline") and "resolve · desk 3" in page.inner_text(
            "#d-timeline")
        page.click('[data-close="detail"]')
        wait_js(page, "document.querySelectorAll('#incidents .inc:not(.ended)').length === 29", 10)

        page.locator('#incidents .inc:has-text("cam-07") button[data-act="false_positive"]').first.click()
        fp = next_incident_event(other, "false_positive")
        assert (fp["camera_id"], fp["disposition"]) == ("cam-07", "false_positive")

        # history: newest first, 25 a page, "more" for the rest; filters narrow it
        page.click("#history-btn")
        wait_js(page, "document.querySelectorAll('#hist-rows tr').length === 25", 10)
        assert not page.locator("#h-more").is_hidden()
        page.click("#h-more")
        wait_js(page, "document.querySelectorAll('#hist-rows tr').length === 30", 10)
        assert page.locator("#h-more").is_hidden()
        page.select_option("#h-state", "false_positive")
        page.click('#hist-form button[type="submit"]')
        wait_js(page, "document.querySelectorAll('#hist-rows tr').length === 1", 10)
        assert "cam-07" in page.inner_text("#hist-rows")
        page.select_option("#h-state", "")
        page.fill("#h-camera", "cam-21")
        page.select_option("#h-level", "high")
        page.click('#hist-form button[type="submit"]')
        wait_js(page, "document.querySelectorAll('#hist-rows tr').length === 7", 10)
        page.screenshot(path=str(ARTIFACTS / "consume-incident-history.png"))
        assert errors == []
    finally:
        stack.close()
        c.stop()
        c.kill()
