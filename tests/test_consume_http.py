"""consume's HTTP side and its life as a stage: API on both ports, metrics, dead letters, clean stop."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from hazardctl.synthetic import risk_result
from tests.conftest import HAZARDCTL, ROOT
from tests.consume_proc import ConsumeProcess

pytestmark = pytest.mark.timeout(60)


def test_http_api_on_its_own_port_and_on_the_websocket_port():
    with ConsumeProcess("--http", "127.0.0.1:0", "--cache-size", "3") as c:
        assert c.http_port != c.ws_port
        t = time.time()
        c.send(risk_result("cam-1", "g1", 1, t, level="high"), risk_result("cam-1", "g2", 1, t, level="low"),
               risk_result("cam-2", "g1", 1, t, level="none"), risk_result("cam-3", "g1", 1, t, status="failed"))
        c.applied(4)
        for port in (c.http_port, c.ws_port):
            status, health = c.get("/healthz", port)
            assert status == 200 and health["status"] == "ok" and health["incidents_open"] == 1

            _, cams = c.get("/cameras", port)
            assert [(x["camera_id"], x["level"]) for x in cams["cameras"]] == [("cam-1", "high"), ("cam-2", "none"),
                                                                              ("cam-3", "none")]
            _, cam = c.get("/cameras/cam-1", port)
            assert [g["group_id"] for g in cam["groups"]] == ["g1", "g2"]
            assert [i["level"] for i in cam["incidents"]] == ["high"] and "crop_jpeg_b64" not in cam["incidents"][0]
            assert [r["group_id"] for r in cam["recent_results"]] == ["g2"]  # the cache holds only the last 3
            assert c.get("/cameras/nope", port)[0] == 404

            _, incs = c.get("/incidents?open=true", port)
            (inc,) = incs["incidents"]
            assert inc["crop_jpeg_b64"] and inc["state"] == "open"
            _, one = c.get(f"/incidents/{inc['incident_id']}?crops=false", port)
            assert one["incident_id"] == inc["incident_id"] and "crop_jpeg_b64" not in one
            assert c.get("/incidents/inc-0000", port)[0] == 404

            _, results = c.get("/results?limit=2", port)
            assert [(r["camera_id"], r["outcome"]) for r in results["results"]] == [("cam-3", "failed"), ("cam-2", "applied")]

            status, page = c.get("/", port)
            assert status == 200 and f'content="{c.ws_port}"' in page and "<title>hazardctl" in page
            assert c.get("/nope", port)[0] == 404

        assert c.metric("hazardctl_messages_in_total", stage="consume") == 4
        assert c.metric("hazardctl_consume_results_total", outcome="applied") == 3
        assert c.metric("hazardctl_consume_results_total", outcome="failed") == 1
        assert c.metric("hazardctl_consume_events_total", type="incident_new") == 1
        assert c.metric("hazardctl_consume_incidents_open") == 1
        assert c.metric("hazardctl_consume_cameras") == 3
        assert c.metric("hazardctl_consume_clients") == 0


def test_bad_input_becomes_a_dead_letter_and_the_stage_goes_on():
    with ConsumeProcess() as c:
        c.send("not json", "", json.dumps({"schema_version": 1, "task_id": "x"}), risk_result("cam-1", "g1", 1, time.time()))
        c.applied(4)
        c.wait_for(lambda: c.get("/healthz")[1]["dead_letters"] == 3, what="3 dead letters")
        assert c.metric("hazardctl_dead_letters_total", stage="consume", reason="malformed_json") == 1
        assert c.metric("hazardctl_dead_letters_total", stage="consume", reason="empty") == 1
        assert c.metric("hazardctl_dead_letters_total", stage="consume", reason="validation") == 1
        assert c.get("/cameras/cam-1")[0] == 200
        assert c.stop() == 0
    letters = [json.loads(line) for line in c.stderr if line.startswith("{")]
    assert [(d["stage"], d["line"], d["error_class"]) for d in letters] == [
        ("consume", 1, "malformed_json"), ("consume", 2, "empty"), ("consume", 3, "validation")]


def test_exit_on_eof_and_sigterm_exit_zero():
    lines = "".join(risk_result("cam-1", "g1", i, time.time()).model_dump_json() + "\n" for i in range(5))
    done = subprocess.run([*HAZARDCTL, "consume", "--ws", "127.0.0.1:0", "--exit-on-eof"], input=lines.encode(),
                          capture_output=True, timeout=30, cwd=ROOT)
    assert done.returncode == 0, done.stderr.decode()
    assert b"results=5 events=" in done.stderr

    with ConsumeProcess() as c:  # stdin stays open: only a signal stops it
        c.proc.send_signal(signal.SIGINT)
        assert c.proc.wait(15) == 0


@pytest.mark.parametrize("args, message", [
    (["--ws", "nope"], "--ws 'nope': expected HOST:PORT"),
    (["--min-level", "severe"], "--min-level 'severe'"),
    (["--in", "/nonexistent/results.jsonl"], "cannot open input"),
])
def test_bad_flags_are_one_line_errors(args, message):
    done = subprocess.run([*HAZARDCTL, "consume", *args], capture_output=True, timeout=30, cwd=ROOT,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    err = done.stderr.decode()
    assert message in err and "Traceback" not in err


def test_busy_port_is_a_one_line_error():
    with ConsumeProcess() as c:
        done = subprocess.run([*HAZARDCTL, "consume", "--ws", f"127.0.0.1:{c.ws_port}"], capture_output=True,
                              timeout=30, cwd=ROOT, stdin=subprocess.DEVNULL)
        assert done.returncode == 2 and b"cannot listen" in done.stderr and b"Traceback" not in done.stderr
