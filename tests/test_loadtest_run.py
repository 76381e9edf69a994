"""`hazardctl loadtest` as a user runs it: real broker, the real stages as processes, the simulated LLM
over HTTP, the report's counts checked against each other.

- Kafka, 12 cameras × 0.5 groups/s for 15 s with one key revoked at 5 s and schedule SIGKILLed (and
  restarted) at 8 s: exit 0 with the asserts met; summary.json's identity holds (offered = ok + failed
  + stale + shed + dead letters + in flight, each counted from its own topic), nothing is left in
  flight, expand produced exactly the tasks the cameras' gate predicted, every task is one line of
  tasks.jsonl, the revoked key got no request after its first 401s, consume's incidents reached a
  WebSocket client, the PNG was written, and every stage stopped with exit 0 on SIGTERM.
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
    # 12 cameras × 0.5/s × 15 s ≈ 90 tasks, and exactly what the same gate predicted from the frames sent
    assert c["offered"] == s["cameras"]["tasks_predicted_total"]
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
    assert "identity: offered" in report and "holds" in report
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
