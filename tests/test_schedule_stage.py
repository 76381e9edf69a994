"""The schedule stage against the real simulated LLM server on loopback (tools.llm_sim), over
files and pipes: results, stale tasks, dead letters, each fault class, SIGTERM, and no secret in
anything a run writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


from hazardctl.keys import KeysConfig, LLMKey
from tools.llm_sim import SimConfig, SimKey, SimServer
from hazardctl.messages import AssessmentTask, RiskAssessmentResult, task_id_for
from hazardctl.synthetic import detection
from hazardctl.transports import Endpoints
from stages import schedule

ROOT = Path(__file__).resolve().parent.parent


def tasks(n: int, *, deadline_s: float = 10.0, crop: bool = True, now: float | None = None) -> list[AssessmentTask]:
    now = time.time() if now is None else now
    out = []
    f = 0
    while len(out) < n:
        det = detection(f"cam-{f % 7:02d}", f, now, groups=3, crop_bytes=2000)
        by = {o.object_id: o for o in det.objects}
        for g in det.groups:
            if not crop:
                g = g.model_copy(update={"crop_jpeg_b64": None})
            out.append(AssessmentTask(
                task_id=task_id_for(det.message_id, g.group_id), detection_id=det.message_id, camera_id=det.camera_id,
                frame_id=det.frame_id, frame_ts=det.frame_ts, frame_width=det.frame_width,
                frame_height=det.frame_height, group=g, objects=[by[m] for m in g.member_ids], reason="new",
                deadline=now + deadline_s, times=det.times))
        f += 1
    return out[:n]


def sim_keys(n: int, qps: float = 20.0, **faults) -> list[SimKey]:
    return [SimKey(name=f"k{i}", api_key=f"secret-{i}", qps=qps, fault=faults.get(f"k{i}")) for i in range(n)]


def keys_for(sim: SimServer, n: int, qps: float = 20.0, **over) -> KeysConfig:
    kw = {k: over.pop(k) for k in list(over) if k in KeysConfig.model_fields}
    return KeysConfig(keys=[LLMKey(name=f"k{i}", api_key=f"secret-{i}", qps_limit=qps, base_url=sim.base_url, **over)
                            for i in range(n)], **kw)


def run_stage(tmp_path: Path, keys: KeysConfig, items: list, **cfg) -> tuple[list[dict], list[dict], schedule.Stats]:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join((t.model_dump_json().encode() if not isinstance(t, bytes) else t) + b"\n" for t in items))
    out, dlq = tmp_path / "out.jsonl", tmp_path / "dlq.jsonl"
    for p in (out, dlq):
        p.unlink(missing_ok=True)
    stats = schedule.run(str(src), str(out), str(dlq), keys=keys, endpoints=Endpoints(),
                         cfg=schedule.ScheduleConfig(live_every=0, **cfg))
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []  # noqa: E731
    return read(out), read(dlq), stats


def test_every_task_gets_a_valid_result_with_key_name_times_and_crop(tmp_path):
    with SimServer(SimConfig(keys=sim_keys(3), latency="fixed:0.05", port=0)) as sim:
        ts = tasks(30)
        results, dead, stats = run_stage(tmp_path, keys_for(sim, 3), ts)
        per_key = {k: v["requests"] for k, v in sim.stats()["keys"].items()}
    assert sorted(r["task_id"] for r in results) == sorted(t.task_id for t in ts) and not dead
    for r in results:
        res = RiskAssessmentResult.model_validate(r)
        assert res.status == "ok" and res.level in ("none", "low", "medium", "high")
        assert res.key_name in ("k0", "k1", "k2") and res.model == "qwen-vl-plus" and res.attempts == 1
        t = res.times
        assert t.capture <= t.dequeue <= t.llm_start < t.llm_end <= t.result
        assert res.crop_jpeg_b64 and res.error_class is None
    assert per_key == {"k0": 10, "k1": 10, "k2": 10}  # round robin
    assert stats.ok == 30


def test_stale_tasks_are_reported_not_assessed(tmp_path):
    with SimServer(SimConfig(keys=sim_keys(1), latency="fixed:0.05", port=0)) as sim:
        results, dead, stats = run_stage(tmp_path, keys_for(sim, 1), tasks(4, now=time.time() - 20))
        assert sim.stats()["totals"]["requests"] == 0
    assert [r["status"] for r in results] == ["stale"] * 4 and stats.stale == 4 and not dead


def test_bad_input_becomes_a_dead_letter_and_the_rest_goes_on(tmp_path):
    with SimServer(SimConfig(keys=sim_keys(1), latency="fixed:0.05", port=0)) as sim:
        good = tasks(2)
        results, dead, _ = run_stage(tmp_path, keys_for(sim, 1), [good[0], b"{not json", b'{"task_id": 1}', good[1]])
    assert len(results) == 2 and all(r["status"] == "ok" for r in results)
    assert [d["error_class"] for d in dead] == ["malformed_json", "validation"]
    assert dead[0]["payload"] == "{not json" and dead[0]["line"] == 2


def test_malformed_answers_are_retried_once_then_bad_response(tmp_path):
    with SimServer(SimConfig(keys=sim_keys(2, k0="malformed", k1="malformed"), latency="fixed:0.02", port=0)) as sim:
        results, dead, _ = run_stage(tmp_path, keys_for(sim, 2, max_retry_per_key=100), tasks(3))
        assert sim.stats()["totals"]["malformed"] == 6
    assert {(r["status"], r["error_class"], r["attempts"]) for r in results} == {("failed", "bad_response", 2)}
    assert len(dead) == 3 and {d["error_class"] for d in dead} == {"bad_response"}
    assert all(d["attempts"] == 2 and d["last_error"].startswith("bad response") for d in dead)
    assert json.loads(dead[0]["payload"])["task_id"] in {r["task_id"] for r in results}  # the original task


def test_one_malformed_key_is_absorbed_by_the_retry_on_another_key(tmp_path):
    with SimServer(SimConfig(keys=sim_keys(2, k1="malformed"), latency="fixed:0.02", port=0)) as sim:
        results, dead, _ = run_stage(tmp_path, keys_for(sim, 2), tasks(6))
    assert all(r["status"] == "ok" and r["key_name"] == "k0" for r in results) and not dead


def test_a_401_key_is_disabled_and_the_tasks_retry_on_the_others(tmp_path):
    with SimServer(SimConfig(keys=sim_keys(3, k1="unauthorized"), latency="fixed:0.05", port=0)) as sim:
        results, dead, _ = run_stage(tmp_path, keys_for(sim, 3), tasks(30))
        k1 = sim.stats()["keys"]["k1"]
    assert all(r["status"] == "ok" for r in results) and len(results) == 30 and not dead
    assert {r["key_name"] for r in results} == {"k0", "k2"}
    # one more request may already be on its way while the first 401 travels back (paced 50 ms apart)
    assert k1["unauthorized_401"] >= 1 and k1["requests_after_first_401"] <= 1


def test_400_is_not_retried(tmp_path):
    """The simulator answers 400 to a request without an image: the request's fault, not the key's."""
    with SimServer(SimConfig(keys=sim_keys(2), latency="fixed:0.02", port=0)) as sim:
        results, dead, _ = run_stage(tmp_path, keys_for(sim, 2), tasks(2, crop=False))
        assert sim.stats()["totals"]["requests"] == 2
    assert {(r["status"], r["error_class"], r["attempts"]) for r in results} == {("failed", "bad_request", 1)}
    assert [d["last_error"] for d in dead] == ["HTTP 400 invalid_request"] * 2


def test_5xx_burst_retries_on_another_key(tmp_path):
    with SimServer(SimConfig(keys=sim_keys(2), latency="fixed:0.02", port=0)) as sim:
        sim.set_fault("k0", "server_error_burst", count=3)
        results, dead, _ = run_stage(tmp_path, keys_for(sim, 2), tasks(10))
        assert sim.stats()["keys"]["k0"]["server_errors_5xx"] == 3
    assert all(r["status"] == "ok" for r in results) and not dead
    assert sum(r["attempts"] == 2 for r in results) == 3


def test_429_storm_cools_the_key_until_retry_after(tmp_path):
    with SimServer(SimConfig(keys=sim_keys(2), latency="fixed:0.02", port=0)) as sim:
        sim.set_fault("k0", "rate_limit_storm", retry_after=30)
        results, dead, _ = run_stage(tmp_path, keys_for(sim, 2), tasks(20))
        k0 = sim.stats()["keys"]["k0"]
    assert all(r["status"] == "ok" and r["key_name"] == "k1" for r in results)
    assert k0["rate_limited_429"] == 1 and k0["requests"] == 1  # cooled for 30 s after the first 429


def test_a_hanging_key_times_out_and_the_task_moves_on(tmp_path):
    with SimServer(SimConfig(keys=sim_keys(2, k0={"kind": "timeout", "seconds": 30}), latency="fixed:0.02", port=0)) as sim:
        keys = keys_for(sim, 2, timeout=0.3, max_retry_per_key=2)
        t0 = time.monotonic()
        results, dead, _ = run_stage(tmp_path, keys, tasks(6))
        took = time.monotonic() - t0
    assert all(r["status"] == "ok" and r["key_name"] == "k1" for r in results) and not dead
    assert took < 5.0


def test_all_keys_failing_ends_within_the_deadline_with_dead_letters(tmp_path):
    with SimServer(SimConfig(keys=sim_keys(2, k0="unauthorized", k1="unauthorized"), latency="fixed:0.02", port=0)) as sim:
        t0 = time.monotonic()
        results, dead, _ = run_stage(tmp_path, keys_for(sim, 2), tasks(3, deadline_s=3.0))
        took = time.monotonic() - t0
    assert len(results) == 3 and all(r["status"] == "failed" for r in results) and len(dead) == 3
    assert {r["error_class"] for r in results} <= {"deadline", "no_key_in_time", "unauthorized"}
    assert took < 3.0  # the first key back (a probe in 300 s) is after the deadline: fail at once


# -- as a process: SIGTERM, and a grep for secrets --------------------------------------------------

REAL_LOOKING = ["sk-" + "8d1f0c5b7a9e4f2c6b3a1d0e9f8c7b6a", "sk-" + "2b4d6f8a0c1e3a5c7e9b1d3f5a7c9e1b"]


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_in_flight_tasks_delivers_and_exits_0(tmp_path):
    with SimServer(SimConfig(keys=sim_keys(2, qps=5), latency="fixed:0.5", port=0)) as sim:
        kf = tmp_path / "keys.yaml"
        kf.write_text(json.dumps({"keys": [{"name": f"k{i}", "api_key": f"secret-{i}", "qps_limit": 5,
                                            "base_url": sim.base_url} for i in range(2)]}))
        ts = tasks(200, deadline_s=30)
        proc = subprocess.Popen([sys.executable, "-m", "hazardctl.cli", "schedule", "--keys", str(kf), "--workers", "10"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        for t in ts:  # keep stdin open: the stage only stops because of the signal
            proc.stdin.write(t.model_dump_json().encode() + b"\n")
        proc.stdin.flush()
        end = time.monotonic() + 30
        while sim.stats()["totals"]["requests"] < 15 and time.monotonic() < end:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        sent = sim.stats()["totals"]["requests"]
    results = [json.loads(line) for line in out.splitlines()]
    assert proc.returncode == 0, err.decode()[-2000:]
    assert 15 <= len(results) < 100  # what was done, plus the (at most 10) tasks in progress at the signal
    assert all(r["status"] == "ok" for r in results)
    assert len(results) == sent  # every call that was started ended in a delivered result
    assert b"stopping" in err


def test_no_secret_in_logs_outputs_dead_letters_or_metrics(tmp_path):
    """Real-looking secrets in env vars; a key answering 401, one malformed, one 400 task, a bad line."""
    keys = [SimKey(name="good", api_key=REAL_LOOKING[0], qps=20),
            SimKey(name="junk", api_key=REAL_LOOKING[1], qps=20, fault="malformed")]
    with SimServer(SimConfig(keys=keys, latency="fixed:0.05", port=0)) as sim:
        kf = tmp_path / "keys.yaml"
        kf.write_text(json.dumps({"keys": [
            {"name": "good", "api_key": "${SECRET_GOOD}", "qps_limit": 20, "base_url": sim.base_url},
            {"name": "junk", "api_key": "${SECRET_JUNK}", "qps_limit": 20, "base_url": sim.base_url},
            {"name": "revoked", "api_key": "${SECRET_REVOKED}", "qps_limit": 20, "base_url": sim.base_url}]}))
        src = tmp_path / "in.jsonl"
        src.write_bytes(b"".join(t.model_dump_json().encode() + b"\n" for t in tasks(20) + tasks(1, crop=False))
                        + b"garbage\n")
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HAZARDCTL_LOG_LEVEL": "DEBUG", "SECRET_GOOD": REAL_LOOKING[0],
               "SECRET_JUNK": REAL_LOOKING[1], "SECRET_REVOKED": "sk-" + "ffee00112233445566778899aabbccdd"}
        proc = subprocess.Popen([sys.executable, "-m", "hazardctl.cli", "schedule", "--keys", str(kf), "--in", str(src),
                                 "--out", str(tmp_path / "out.jsonl"), "--dlq", str(tmp_path / "dlq.jsonl"),
                                 "--metrics-port", str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        metrics_text = ""
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                metrics_text = _metrics(port)
            except OSError:
                pass
            time.sleep(0.2)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    written = (out + err + (tmp_path / "out.jsonl").read_bytes() + (tmp_path / "dlq.jsonl").read_bytes()
               + metrics_text.encode())
    assert b"revoked disabled" in err and b"hazardctl_llm_calls_total" in metrics_text.encode()
    assert len((tmp_path / "dlq.jsonl").read_bytes().splitlines()) >= 2
    for secret in [*REAL_LOOKING, "sk-" + "ffee00112233445566778899aabbccdd"]:
        assert secret.encode() not in written
        assert secret[-8:].encode() not in written  # not even a tail, as some providers echo


def test_a_call_cut_short_by_the_deadline_is_not_held_against_the_key(tmp_path):
    """The LLM takes 1.5 s; the first task has 0.6 s left: it fails as 'deadline', and the key (one
    failure would cool it for 60 s) serves the next tasks, which have time, right after."""
    with SimServer(SimConfig(keys=sim_keys(1), latency="fixed:1.5", port=0)) as sim:
        keys = keys_for(sim, 1, max_retry_per_key=1, default_cooldown=60, max_in_flight=1)
        short = tasks(1, deadline_s=0.6)[0]
        later = [t.model_copy(update={"task_id": f"later-{i}"}) for i, t in enumerate(tasks(2, deadline_s=10))]
        results, dead, _ = run_stage(tmp_path, keys, [short, *later])
    by_id = {r["task_id"]: r for r in results}
    assert (by_id[short.task_id]["status"], by_id[short.task_id]["error_class"]) == ("failed", "deadline")
    assert by_id["later-0"]["status"] == by_id["later-1"]["status"] == "ok" and len(dead) == 1


def test_backpressure_pauses_the_input_and_bounds_the_work_in_flight(tmp_path):
    from hazardctl.transports.pipes import open_line_input

    class Recorded:
        """The real file input, with its set_paused calls recorded."""

        def __init__(self, inner):
            self.inner, self.name, self.pauses = inner, inner.name, []

        def __getattr__(self, item):
            return getattr(self.inner, item)

        @property
        def exhausted(self):
            return self.inner.exhausted

        def set_paused(self, paused):
            self.pauses.append(paused)
            self.inner.set_paused(paused)

    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(t.model_dump_json().encode() + b"\n" for t in tasks(40)))
    with SimServer(SimConfig(keys=sim_keys(1, qps=50), latency="fixed:0.2", port=0)) as sim:
        from hazardctl.transports.pipes import open_line_output

        inp = Recorded(open_line_input(str(src)))
        out, dlq = open_line_output(str(tmp_path / "out.jsonl")), open_line_output(str(tmp_path / "dlq.jsonl"))
        import asyncio

        stats = asyncio.run(schedule.Scheduler(keys_for(sim, 1, qps=50), inp, out, dlq,
                                               schedule.ScheduleConfig(workers=5, live_every=0,
                                                                       pause_after_s=0.1)).run())
        peak = sim.stats()["keys"]["k0"]["max_in_flight"]
    assert stats.ok == 40 and True in inp.pauses and False in inp.pauses
    assert peak <= 5
