"""`hazardctl loadtest` as a user runs it: real broker, the real stages as processes, the simulated LLM
over HTTP, the report's counts checked against each other.

- Kafka, 12 cameras × 0.5 groups/s for 15 s with one key revoked at 5 s and schedule SIGKILLed (and
  restarted) at 8 s: exit 0 with the asserts met; summary.json's identity holds (offered = ok + failed
  + stale + shed + dead letters + in flight, each counted from its own topic), nothing is left in
  flight, expand produced exactly the tasks the cameras' gate predicted, every task is one line of
  tasks.jsonl, the revoked key got no request after its first 401s, consume's incidents reached a
  WebSocket client, the PNG was written, and every stage stopped with exit 0 on SIGTERM.
- Kafka, expand SIGKILLed and restarted mid-run with a gate the prediction does not share (a wrong task
  count on purpose): `produced_vs_expected==1` fails, exit 1, the unpredicted tasks named by reason.
- Pipes, the real detect stage on a generated video (`--cameras-from`): end to end starts at the
  video frame's capture, so it includes inference; expand produced exactly the predicted tasks.
- Pipes, 4 s, with an assert that cannot hold: exit 1 and the assert reported as FAIL.
- A kill chaos over pipes is refused with one line and exit 2, before anything starts.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import HAZARDCTL, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


def keep_artifacts(out, name: str, report: str) -> None:
    """Under make test (test-artifacts/ exists): keep the report, summary, PNG and logs for a look."""
    import shutil

    dest = ROOT / "test-artifacts" / name
    if dest.parent.is_dir() and out.is_dir():
        shutil.copytree(out, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("tasks.jsonl"))
        (dest / "report.txt").write_text(report)


def lat_min_llm(s: dict) -> float:
    return s["latency"]["llm"]["p50"] * 0.5


def loadtest(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*HAZARDCTL, "loadtest", "--no-live", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.kafka
def test_kafka_loadtest_counts_add_up(kafka_bootstrap, hazardctl_env, tmp_path):
    out = tmp_path / "run"
    p = loadtest("--cameras", "12", "--rate", "0.5", "--duration", "15", "--transport", "kafka",
                 "--bootstrap", kafka_bootstrap, "--chaos", "key-401@5", "--chaos", "kill-schedule@8", "--out", str(out),
                 "--assert", "success>=0.97", "--assert", "lost==0", "--assert", "identity==1", env=hazardctl_env)
    report = p.stdout + p.stderr
    keep_artifacts(out, "loadtest-kafka", report)
    assert p.returncode == 0, report[-6000:]
    s = json.loads((out / "summary.json").read_text())
    c = s["counts"]
    assert s["identity"]["holds"], s["identity"]
    assert c["offered"] == c["ok"] + c["failed"] + c["stale"] + c["shed"] + c["dead_letter"] + c["in_flight"]
    assert c["in_flight"] == 0 and c["unknown"] == 0
    # 12 cameras × 0.5/s × 15 s ≈ 90 tasks, and exactly the ones the same gate predicted from the frames sent
    assert c["offered"] == s["cameras"]["tasks_predicted_total"] == s["production"]["expected"]
    assert s["production"]["unexpected"] == 0 and s["production"]["never_produced"] == 0
    assert 75 <= c["offered"] <= 105, c
    assert s["success"] >= 0.97  # schedule was SIGKILLed and restarted mid-run: nothing lost, little late
    assert (out / "logs" / "schedule.2.log").is_file()  # the second incarnation ran
    assert set(s["reasons"]) == {"new", "changed", "refresh"}
    lines = (out / "tasks.jsonl").read_text().splitlines()
    assert len(lines) == c["offered"]
    assert sum(json.loads(x)["outcome"] == "ok" for x in lines) == c["ok"]
    # the revoked key: the scheduler stopped using it (a probe may come later, not within 15 s)
    bad = next(k for k in s["keys"] if k["key"] == "sim-key-03")
    assert bad["http_401"] >= 1 and bad["after_first_401"] <= 1, bad
    assert [c["name"] for c in s["chaos"]] == ["key-401", "kill-schedule"]
    # the operator's end: consume pushed incidents to the loadtest's WebSocket client, timed from capture
    alert = s["latency"]["alert"]
    assert s["alerts"]["client_error"] is None and alert["n"] > 0 and alert["p50"] >= lat_min_llm(s)
    lat = s["latency"]
    assert lat["e2e"]["n"] == c["ok"] and lat["llm"]["p95"] is not None
    assert lat["e2e"]["p95"] >= lat["llm"]["p50"]  # end to end includes the LLM call
    assert (out / "loadtest.png").stat().st_size > 10_000
    assert s["exit_codes"] == {"expand": 0, "schedule": 0, "consume": 0}
    assert "produced_vs_expected 1.000" in report and "as predicted" in report and "holds" in report
    assert s["production"]["exact"] and s["lost"]["total"] == 0
    assert "everything but the LLM, per task: P95" in report and "difference of percentiles" in report
    assert {"schedule", "expand", "consume", "llm-sim"} <= set(s["cpu"]["processes"])


def test_failed_assert_exits_non_zero(tmp_path):
    out = tmp_path / "run"
    p = loadtest("--cameras", "4", "--duration", "4", "--transport", "pipes", "--out", str(out),
                 "--assert", "e2e.p95<0.001", "--assert", "success>=0.5")
    assert p.returncode == 1, (p.stdout + p.stderr)[-4000:]
    s = json.loads((out / "summary.json").read_text())
    assert [a["ok"] for a in s["asserts"]] == [False, True]
    assert s["identity"]["holds"] and s["counts"]["offered"] > 0
    assert "assert e2e.p95<0.001: FAIL" in p.stdout


def test_kill_chaos_over_pipes_is_refused_before_starting(tmp_path):
    p = loadtest("--transport", "pipes", "--chaos", "kill-schedule@3", "--out", str(tmp_path / "x"))
    assert p.returncode == 2, p.stdout + p.stderr
    assert "needs --transport kafka" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_sigterm_stops_every_process_it_started(tmp_path):
    import os
    import signal
    import time

    out = tmp_path / "run"
    p = subprocess.Popen([*HAZARDCTL, "loadtest", "--no-live", "--cameras", "4", "--duration", "60", "--transport",
                          "pipes", "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)

    def ours() -> list[int]:  # every process whose command line names this run's folder (stages, simulator)
        pids = []
        for d in os.listdir("/proc"):
            if d.isdigit() and int(d) != p.pid:
                try:
                    with open(f"/proc/{d}/cmdline", "rb") as f:
                        if str(out).encode() in f.read():
                            pids.append(int(d))
                except OSError:
                    pass
        return pids

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ((out / "logs" / "schedule.log").exists() and len(ours()) >= 3):
            time.sleep(0.2)
        time.sleep(3)  # the cameras are running
        assert len(ours()) >= 3, "the stages never started"
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=30)
        assert p.returncode == 130, stdout[-2000:] + stderr[-2000:]
        assert "interrupted" in stderr and "Traceback" not in stderr
        deadline = time.monotonic() + 10
        while ours() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ours() == []
    finally:
        if p.poll() is None:
            p.kill()


@pytest.mark.kafka
def test_kafka_kill_expand_with_a_wrong_task_count_fails_the_assert(kafka_bootstrap, hazardctl_env, tmp_path):
    """The accounting check can fail: expand runs (and is restarted) with a 3 s refresh while the
    loadtest predicts with its own 9.75 s, so expand sends refreshes nobody predicted."""
    out = tmp_path / "run"
    p = loadtest("--cameras", "6", "--duration", "12", "--transport", "kafka", "--bootstrap", kafka_bootstrap,
                 "--chaos", "kill-expand@6", "--expand-arg=--refresh", "--expand-arg=3", "--out", str(out),
                 "--assert", "produced_vs_expected==1", "--assert", "offered>=1", env=hazardctl_env)
    report = p.stdout + p.stderr
    keep_artifacts(out, "loadtest-wrong-count", report)
    assert p.returncode == 1, report[-6000:]
    s = json.loads((out / "summary.json").read_text())
    prod = s["production"]
    assert prod["produced"] > prod["expected"] > 0 and prod["produced_vs_expected"] > 1.0, prod
    assert not prod["exact"] and prod["unexpected"] > 0 and set(prod["unexpected_by_reason"]) <= {"refresh", "new",
                                                                                                  "changed"}
    assert prod["unexpected_by_reason"].get("refresh", 0) > 0, prod
    assert [a["ok"] for a in s["asserts"]] == [False, True]  # the count is wrong, not the bookkeeping
    assert s["counts"]["in_flight"] == 0 and s["identity"]["holds"]  # which could never have told
    assert [c["name"] for c in s["chaos"]] == ["kill-expand"] and (out / "logs" / "expand.2.log").is_file()
    assert "NOT AS PREDICTED" in report and "assert produced_vs_expected==1: FAIL" in report


@pytest.mark.timeout(120)
def test_cameras_from_video_runs_the_real_detect_stage(tmp_path):
    from tests.detect_scenes import walk, write_video

    model = ROOT / ".cache" / "models" / "centernet-coco.onnx"
    if not model.is_file():
        pytest.skip("run `make models` first (make test does)")
    video = write_video(walk(), tmp_path / "walk.mp4")
    out = tmp_path / "run"
    p = loadtest("--cameras", "2", "--fps", "2", "--duration", "8", "--transport", "pipes", "--cameras-from",
                 str(video), "--out", str(out), "--assert", "produced_vs_expected==1", "--assert", "lost==0")
    report = p.stdout + p.stderr
    keep_artifacts(out, "loadtest-video", report)
    assert p.returncode == 0, report[-6000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["mode"].startswith("real detect stage") and "mode: real detect stage" in report
    assert s["config"]["cameras_from"] == str(video)
    # the detections came from detect (its message ids, not the simulated cameras'), through the gate
    assert s["cameras"]["frames"] >= 10 and s["production"]["expected"] >= 2 and s["production"]["exact"]
    assert s["counts"]["ok"] == s["counts"]["offered"] >= 2
    lat = s["latency"]
    # capture is the video frame's: capture → detect is decoding + inference (simulated cameras: ~1 ms)
    assert lat["stages"]["camera lag"]["p50"] > 0.01, lat["stages"]["camera lag"]
    assert lat["e2e"]["p50"] > lat["llm"]["p50"]
    # the calm walkers give only a few `new` tasks; the simulator answers `none` to 42 % of them, which opens no
    # incident: every answer of `low` or above must have reached the WebSocket client as an alert
    assert s["alerts"]["incident_events"] >= min(1, s["alerts"]["alerting_results"]), s["alerts"]
    assert s["cpu"]["processes"]["detect"]["cpu_s"] > 1.0  # the detector really ran
    assert s["exit_codes"] == {"expand": 0, "schedule": 0, "consume": 0}
