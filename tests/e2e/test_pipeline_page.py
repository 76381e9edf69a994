"""The whole pipeline on pipes, watched in a real browser: detect | expand | schedule | consume.

Four real `hazardctl` processes joined by OS pipes exactly as scripts/demo.sh joins them: the real
CenterNet detector on a real photo (tests/data/bus.jpg, looped at 2 fps), the local expand engine,
the scheduler with no key configured (so it starts the simulated LLM by itself — the simulator is
the only stand-in, because no real LLM or API key is reachable here), and consume serving the live
page, which headless Debian Chromium opens through Playwright.

Why an incident card must appear: the simulator's answer is a pure function of (crop, prompt, seed).
For this photo the detector finds one group (the people by the bus) and the simulator, seed 1,
judges its crop `low` on every frame, so with `--min-level low` consume opens an incident. The
detector runs on onnxruntime's f32 (`--runtime onnxruntime`), the reference boxes: OpenVINO's bf16
moves the group's box by a pixel or two, which makes another crop and so another draw (OpenVINO
compiled for the exact input shape drew `none`: still photo, one task, no incident). If a different
onnxruntime ever produced a crop judged `none`, `/incidents` would be empty and the test says so in
its failure message instead of timing out silently.

Needs the model (`make models`) and chromium + playwright (`scripts/install-chromium.sh`); without
them the test is skipped, unless HAZARDCTL_REQUIRE_BROWSER=1 (set by `make test`), where a missing
browser fails it.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import ARTIFACTS
from tests.pipeline_proc import (CAMERA, IMAGE, MODEL, Stage, assert_times_ordered,
                                 http_json, serving_port, stage_env, wait_js, wait_until)

pytestmark = pytest.mark.timeout(120)





def test_pipe_pipeline_shows_the_bus_camera_and_an_incident_on_the_live_page(browser, tmp_path):
    if not MODEL.is_file():
        pytest.skip(f"no detector model at {MODEL.relative_to(ROOT)}: run `make models` (make test fetches it)")
    ARTIFACTS.mkdir(exist_ok=True)
    env = stage_env()
    stages: list[Stage] = []
    try:
        detect = Stage("detect", ["--source", str(IMAGE), "--camera-id", CAMERA, "--loop", "--fps", "2",
                                  "--conf", "0.3", "--model", str(MODEL), "--runtime", "onnxruntime"],
                       tmp_path, env=env, cwd=ROOT, stdout=subprocess.PIPE)
        stages.append(detect)
        expand = Stage("expand", ["--refresh", "1"], tmp_path, env=env, cwd=ROOT,
                       stdin=detect.proc.stdout, stdout=subprocess.PIPE)
        stages.append(expand)
        detect.proc.stdout.close()  # the pipe now belongs to the two stages: EOF reaches expand when detect ends
        # cwd = an empty folder: no config/api_keys.yaml there and HAZARDCTL_KEYS unset → the simulated LLM
        schedule = Stage("schedule", [], tmp_path, env=env, cwd=tmp_path,
                         stdin=expand.proc.stdout, stdout=subprocess.PIPE)
        stages.append(schedule)
        expand.proc.stdout.close()
        # port 0: consume binds a free port itself and names it in its log (no race with another test)
        consume = Stage("consume", ["--ws", "127.0.0.1:0", "--min-level", "low"], tmp_path, env=env, cwd=ROOT,
                        stdin=schedule.proc.stdout)
        stages.append(consume)
        schedule.proc.stdout.close()

        port = serving_port(consume, stages)
        wait_until(lambda: "SIMULATED LLM" in schedule.text(), 30, "schedule to start the simulated LLM", stages)

        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#conn.live", timeout=15_000)

        tile = f'#cameras .cam[data-camera="{CAMERA}"]'
        wait_js(page, f"document.querySelector('{tile}') !== null", 60, stages)

        def incident_or_explain():
            if page.locator("#incidents .inc").count() >= 1:
                return True
            _, view = http_json(port, f"/cameras/{CAMERA}")
            levels = [r["level"] for r in (view or {}).get("recent_results", [])]
            if len(levels) >= 5 and set(levels) == {"none"}:
                raise AssertionError(f"the simulator judged every crop of {CAMERA} 'none' ({len(levels)} results): "
                                     "no incident can open; the docstring's premise no longer holds")
            return False

        wait_until(incident_or_explain, 45, "an incident card on the page", stages)

        # the page shows what the API says: the same incident, camera and level, with a decoded crop
        status, body = http_json(port, f"/incidents?open=true&camera={CAMERA}&crops=false")
        assert status == 200 and body["incidents"], body
        inc = body["incidents"][0]
        card = page.locator(f'#incidents .inc[data-id="{inc["incident_id"]}"]')
        assert card.count() == 1, page.locator("#incidents").inner_text()
        assert card.get_attribute("data-level") == inc["level"] and inc["level"] in ("low", "medium", "high")
        assert CAMERA in card.inner_text()
        wait_js(page, "[...document.querySelectorAll('#incidents .inc img')].some(i => i.naturalWidth > 0)", 10,
                stages)
        _, view = http_json(port, f"/cameras/{CAMERA}")
        wait_js(page, f"document.querySelector('{tile}').classList.contains('{view['level']}')", 10, stages)
        page.wait_for_timeout(2700)  # let the "new" flash settle: the picture shows the steady look
        page.screenshot(path=str(ARTIFACTS / "pipeline-live-page.png"))
        assert errors == []

        # every stage stamped its time, in pipeline order
        status, view = http_json(port, f"/cameras/{CAMERA}")
        assert status == 200 and view["results"] >= 1
        ok = [r for r in view["recent_results"] if r["status"] == "ok"]
        assert ok, view["recent_results"]
        for r in ok:
            assert r["camera_id"] == CAMERA and r["key_name"].startswith("sim-key-")
            assert_times_ordered(r)

        # clean stop: SIGTERM the head; expand and schedule end at EOF; consume keeps serving until told
        detect.terminate()
        assert detect.wait(20) == 0, detect.tail()
        assert expand.wait(20) == 0, expand.tail()
        assert schedule.wait(30) == 0, schedule.tail()
        wait_until(lambda: http_json(port, "/healthz")[1]["input"] == "ended", 10, "consume to see EOF", stages[3:])
        consume.terminate()
        assert consume.wait(20) == 0, consume.tail()
        for s in stages:
            assert "Traceback" not in s.text(), s.tail(40)
        for s in stages[1:]:  # each of these logs its counters on exit: nothing went to a dead letter
            assert "dead_letters=0" in s.text() and not re.search(r"dead_letters=[1-9]", s.text()), s.tail()
    finally:
        for s in reversed(stages):
            s.terminate()
        for s in reversed(stages):
            if s.wait(10) is None:
                s.kill()
            s.kill()  # also reaps anything left in its process group (schedule's simulator)
