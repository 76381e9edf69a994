"""The live page in a real headless Chromium (Debian's package, driven by Playwright).

Results go through the real pipeline end (`hazardctl consume` with results on its stdin); the page
must show them without a reload, follow updates, and reconnect when the server comes back. A
screenshot is saved to test-artifacts/ for a human to look at.

Needs `scripts/install-chromium.sh` (run by `make test`). Without chromium or playwright the test
is skipped, unless HAZARDCTL_REQUIRE_BROWSER=1 (set by `make test`), where it fails instead.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import pytest

from hazardctl.synthetic import risk_result
from tests.consume_proc import ConsumeProcess
from tests.e2e.conftest import ARTIFACTS

pytestmark = pytest.mark.timeout(120)

DATA = Path(__file__).resolve().parent.parent / "data"




def crop(name: str, box: tuple[int, int, int, int]) -> str:
    """A real JPEG crop of a test image, as the detect stage would send it (base64)."""
    raw = (DATA / name).read_bytes()
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with the detect extra; the whole image is a fine thumbnail too
        return base64.b64encode(raw).decode()
    img = Image.open(io.BytesIO(raw)).convert("RGB").crop(box)
    img.thumbnail((320, 320))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return base64.b64encode(out.getvalue()).decode()


def scene(t: float) -> list:
    """A dozen cameras as an operator would see them: most calm, three incidents."""
    bus_people = crop("bus.jpg", (0, 380, 810, 920))
    street = crop("zidane.jpg", (0, 0, 1280, 720))
    people = crop("zidane.jpg", (100, 40, 1180, 720))
    out = []
    for i in range(1, 13):
        cam = f"cam-{i:02d}"
        out.append(risk_result(cam, f"{cam}-g1", 40 + i, t - 20 + i, level=("none", "low")[i % 2],
                               description="light traffic, normal spacing", crop_b64=None))
    out += [
        risk_result("cam-03", "cam-03-g2", 60, t - 9, level="high", crop_b64=bus_people,
                    risk_types=["vehicle-pedestrian conflict", "crossing outside crosswalk"],
                    description="Pedestrians step into the lane directly in front of a bus pulling away from the stop."),
        risk_result("cam-07", "cam-07-g4", 61, t - 6, level="medium", crop_b64=street,
                    risk_types=["abrupt lane change"],
                    description="A vehicle cuts across two lanes close behind slowing traffic."),
        risk_result("cam-11", "cam-11-g2", 62, t - 3, level="high", crop_b64=people,
                    risk_types=["vehicle-pedestrian conflict"],
                    description="Two people stand in the carriageway next to a moving car."),
    ]
    return out


def wait_js(page, expression: str, timeout_s: float) -> None:
    """Poll a JS expression (page.wait_for_function would need 'unsafe-eval', which the page's CSP forbids)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for: {expression}")
        time.sleep(0.05)


def test_live_page_shows_incidents_updates_and_reconnects(browser):
    ARTIFACTS.mkdir(exist_ok=True)
    c = ConsumeProcess("--http", "127.0.0.1:0", "--quiet-period", "300")
    try:
        page = browser.new_page(viewport={"width": 1440, "height": 860})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{c.http_port}/")
        page.wait_for_selector("#conn.live", timeout=15_000)
        page.evaluate("window.__loaded_once = true")  # gone if the page ever reloads

        t = time.time()
        c.send(*scene(t))
        wait_js(page, "document.querySelectorAll('#incidents .inc').length === 3", 15)
        first = page.locator("#incidents .inc").first
        assert first.get_attribute("data-level") == "high"
        text = page.locator("#incidents").inner_text()
        assert "cam-03" in text and "vehicle-pedestrian conflict" in text and "in front of a bus" in text
        assert "abrupt lane change" in text
        # the thumbnails are real decoded JPEGs from the results' crops
        widths = page.eval_on_selector_all("#incidents .inc img", "imgs => imgs.map(i => i.naturalWidth)")
        assert len(widths) == 3 and all(w > 0 for w in widths)
        assert page.locator("#cameras .cam").count() == 12
        assert page.locator('#cameras .cam[data-camera="cam-03"]').get_attribute("class").split()[1] == "high"
        assert page.inner_text("#n-open") == "3" and page.inner_text("#n-high") == "2"

        # an update changes the card in place, without a reload
        c.send(risk_result("cam-07", "cam-07-g4", 63, t - 1, level="high", risk_types=["abrupt lane change", "tailgating"],
                           description="The vehicle is now tailgating a van at speed.",
                           crop_b64=crop("zidane.jpg", (0, 0, 1280, 720))))
        wait_js(page, "document.querySelector('#n-high').textContent === '3'", 10)
        assert "tailgating a van" in page.locator("#incidents").inner_text()
        assert page.evaluate("window.__loaded_once === true")
        page.wait_for_timeout(2700)  # let the "new" flash settle: the picture shows the steady look
        page.screenshot(path=str(ARTIFACTS / "consume-live-page.png"))

        # the server goes away and comes back on the same port: the page reconnects by itself
        ws_port, http_port = c.ws_port, c.http_port
        c.stop()
        page.wait_for_selector("#conn.down", timeout=10_000)
        # same ports: the page's origin (its --http address) must stay the server's own (Origin check)
        c = ConsumeProcess("--ws", f"127.0.0.1:{ws_port}", "--http", f"127.0.0.1:{http_port}")
        c.send(risk_result("cam-05", "cam-05-g9", 80, time.time(), level="high", description="after the restart"))
        wait_js(page, "document.querySelector('#incidents').innerText.includes('after the restart')", 20)
        assert page.locator("#incidents .inc").count() == 1  # the new server's state replaced the old one
        assert page.evaluate("window.__loaded_once === true")
        assert errors == []
    finally:
        c.stop()
        c.kill()
