"""The live page against a consume that requires a token, in headless Chromium.

The page asks for the token (it shows no data before), says so when a wrong one is given, connects
with the right one (sent as the WebSocket's `bearer.` subprotocol: a browser cannot set headers),
keeps it in sessionStorage for the tab (a reload does not ask again), and a new tab asks again.
"""

from __future__ import annotations

import time

import pytest

from hazardctl.synthetic import risk_result
from tests.consume_proc import ConsumeProcess
from tests.e2e.test_live_page import wait_js

pytestmark = pytest.mark.timeout(90)

TOKEN = "page-token-" + "k" * 24


def test_page_asks_for_the_token_once_per_tab_and_works_with_it(browser, tmp_path):
    token_file = tmp_path / "consume.token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    c = ConsumeProcess("--http", "127.0.0.1:0", "--token-file", str(token_file), "--quiet-period", "300")
    try:
        c.send(risk_result("cam-03", "cam-03-g2", 60, time.time(), level="high",
                           description="Pedestrians step into the lane in front of a bus."))
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{c.http_port}/")
        page.wait_for_selector("#auth:not([hidden])", timeout=10_000)
        assert page.inner_text("#conn-text") == "needs a token"
        assert page.locator("#incidents .inc").count() == 0

        page.fill("#token", "wrong-" + TOKEN)
        page.press("#token", "Enter")
        wait_js(page, "document.querySelector('#auth-msg').textContent === 'token refused'", 10)
        assert not page.locator("#auth").is_hidden()

        page.fill("#token", TOKEN)
        page.press("#token", "Enter")
        page.wait_for_selector("#conn.live", timeout=15_000)
        wait_js(page, "document.querySelectorAll('#incidents .inc').length === 1", 15)
        assert "in front of a bus" in page.inner_text("#incidents")
        assert page.locator("#auth").is_hidden()
        assert page.evaluate("sessionStorage.getItem('hazardctl.token')") == TOKEN
        assert TOKEN not in page.url

        # live updates keep coming over the authorised socket
        c.send(risk_result("cam-07", "cam-07-g4", 61, time.time(), level="high", description="second one"))
        wait_js(page, "document.querySelectorAll('#incidents .inc').length === 2", 15)

        page.reload()  # the same tab: the token is kept, no question
        page.wait_for_selector("#conn.live", timeout=15_000)
        assert page.locator("#auth").is_hidden()

        other = context.new_page()  # a new tab starts without it (sessionStorage is per tab)
        other.goto(f"http://127.0.0.1:{c.http_port}/")
        other.wait_for_selector("#auth:not([hidden])", timeout=10_000)
        assert errors == []
        context.close()
    finally:
        c.stop()
        c.kill()
    assert TOKEN not in "".join(c.stderr)
