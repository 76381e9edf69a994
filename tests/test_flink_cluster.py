"""expand on a real standalone Flink session cluster (scripts/flink-local.sh: JobManager and TaskManager
JVMs from the wheel), against the real broker: kill -9 of the TaskManager while detections stream in,
stop with a savepoint and resume from it, dead letters, Prometheus metrics. The cluster is torn down
whatever happens, and no JVM or Python worker may outlive it."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request

import orjson
import pytest

from stages.expand import flink_cli
from tests.conftest import HAZARDCTL, ROOT
from tests.flink_util import (BAD, SessionCluster, detections, expected_tasks, flink_yaml, has_all, ids_of,
                              python_workers, wait_for)
from tests.kafka_util import consume_until, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = SessionCluster(tmp_path_factory.mktemp("flink"), slots=1)  # thread mode: one GIL per JVM, one slot each
    try:
        c.sh("up")
        yield c
    finally:
        before = c.pids()
        workers = python_workers(before["taskmanager"])
        c.down()
        left = c.pids()
        assert left == {"jobmanager": [], "taskmanager": []}, f"JVMs left running: {left}"
        time.sleep(1)
        alive = [p for p in workers if _alive(p)]
        assert not alive, f"Python workers left running: {alive}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def submit(cluster, env, cfg, src, dst, dlq, group, *extra) -> str:
    p = subprocess.run([*HAZARDCTL, "expand", "--engine", "flink", "--jobmanager", cluster.address,
                        "--flink-config", str(cfg), "--in", f"kafka://{src}", "--out", f"kafka://{dst}",
                        "--dlq", f"kafka://{dlq}", "--group", group, *extra],
                       env=env, capture_output=True, text=True, timeout=200, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    job = p.stdout.strip().splitlines()[-1]
    assert len(job) == 32
    wait_for(lambda: flink_cli.rest(cluster.address, f"/jobs/{job}")["state"] == "RUNNING", 60, "job RUNNING")
    return job


def completed_checkpoints(cluster, job) -> int:
    return flink_cli.rest(cluster.address, f"/jobs/{job}/checkpoints")["counts"]["completed"]


def test_kill9_taskmanager_recovers_from_checkpoint(cluster, kafka_bootstrap, make_topic, hazardctl_env, tmp_path):
    src, dst, dlq = make_topic("det", 2), make_topic("tasks", 2), make_topic("dlq", 1)
    items = detections(cameras=6, frames=160, bad_every=300)  # ~16 s of input at 60/s, gated
    expected = expected_tasks(items)
    cfg = flink_yaml(tmp_path / "flink.yaml", tmp_path / "checkpoints")
    job = submit(cluster, hazardctl_env, cfg, src, dst, dlq, f"g-{src}")
    produce(kafka_bootstrap, src, items[:60])
    feeder = threading.Thread(target=produce, args=(kafka_bootstrap, src, items[60:]), kwargs={"rate": 60})
    try:
        consume_until(kafka_bootstrap, dst, lambda m: len(m) >= 10, timeout=90)
        feeder.start()
        n0 = completed_checkpoints(cluster, job)
        # a checkpoint that holds the gate state of the groups already sent (the first 60 detections)
        wait_for(lambda: completed_checkpoints(cluster, job) >= n0 + 1, 30, "a checkpoint after the first tasks")
        old_tm = cluster.pids()["taskmanager"]
        old_workers = python_workers(old_tm)  # none in thread mode (the gate runs inside the JVM)
        cluster.sh("kill-tm")
        assert feeder.is_alive(), "the kill must land while detections still arrive"
        time.sleep(2)
        cluster.sh("start-tm")
        assert cluster.pids()["taskmanager"] and set(cluster.pids()["taskmanager"]).isdisjoint(old_tm)
        feeder.join()
        assert not any(_alive(p) for p in old_workers), "kill-tm takes the TaskManager's Python workers with it"
        out = consume_until(kafka_bootstrap, dst, has_all(set(expected)), timeout=150)
    finally:
        if feeder.is_alive():
            feeder.join()
    # it really failed and recovered (not just kept running)
    exc = flink_cli.rest(cluster.address, f"/jobs/{job}/exceptions")
    assert exc.get("exceptionHistory", {}).get("entries"), "the job must have seen the TaskManager loss"
    assert flink_cli.rest(cluster.address, f"/jobs/{job}")["state"] == "RUNNING"
    # every expected task, duplicates allowed; no id that an uninterrupted gate would not send: a group
    # sent before the checkpoint is not sent again as `new` (a fresh gate would add such ids)
    got = ids_of(out)
    assert got == set(expected), f"missing {len(set(expected) - got)}, extra {len(got - set(expected))}"
    news = [orjson.loads(m.value()) for m in out]
    assert {t["task_id"] for t in news if t["reason"] == "new"} == {i for i, t in expected.items() if t["reason"] == "new"}
    print(f"kill -9 test: {len(out)} tasks read for {len(expected)} expected ({len(out) - len(expected)} duplicates)")
    # dead letters: each broken record once (replays may repeat one: count distinct offsets)
    dead = consume_until(kafka_bootstrap, dlq, lambda m: len(m) >= len(BAD), timeout=30)
    assert len({(orjson.loads(m.value())["partition"], orjson.loads(m.value())["offset"]) for m in dead}) == len(BAD)
    # the Python UDF counters reach the Prometheus reporter
    scraped = ""
    for port in cluster.prom_ports:
        try:
            scraped += urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            continue
    for name in ("hazardctl_records_in", "hazardctl_tasks_out", "hazardctl_suppressed_groups", "hazardctl_dead_letters"):
        assert name in scraped, f"{name} not exported"
    flink_cli.cancel(cluster.address, job)


def test_savepoint_at_p1_resume_at_p2_keeps_the_gate(cluster, kafka_bootstrap, make_topic, hazardctl_env, tmp_path):
    """Rescaling: stop with a savepoint at parallelism 1, resume at 2 on two TaskManagers (one slot each):
    the cameras' gate state moves to the subtask that now owns their key group; no group is new again."""
    src, dst, dlq = make_topic("det", 2), make_topic("tasks", 2), make_topic("dlq", 1)
    first, second = detections(cameras=4, frames=50), detections(cameras=4, frames=50, first=50)
    exp_first, exp_all = expected_tasks(first), expected_tasks(first + second)
    # a fresh gate would send every group again as new at frame 50: those ids are not expected
    fresh = expected_tasks(second)
    assert set(fresh) - set(exp_all), "the fixture must tell a kept gate from a fresh one"
    cfg = flink_yaml(tmp_path / "flink.yaml", tmp_path / "checkpoints")
    job = submit(cluster, hazardctl_env, cfg, src, dst, dlq, f"g-{src}")
    produce(kafka_bootstrap, src, first)
    consume_until(kafka_bootstrap, dst, has_all(set(exp_first)), timeout=90)

    p = subprocess.run([*HAZARDCTL, "flink-job", "savepoint", job, "--stop", "--jobmanager", cluster.address],
                       env=hazardctl_env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    savepoint = p.stdout.strip()
    assert "savepoint-" in savepoint
    # the savepoint completes a moment before the job reaches FINISHED
    wait_for(lambda: flink_cli.rest(cluster.address, f"/jobs/{job}")["state"] == "FINISHED", 30, "job finished")
    listed = subprocess.run([*HAZARDCTL, "flink-job", "list", "--jobmanager", cluster.address], env=hazardctl_env,
                            capture_output=True, text=True, timeout=30, cwd=ROOT).stdout
    assert f"{job} FINISHED" in listed

    produce(kafka_bootstrap, src, second)  # arrives while the job is stopped
    while len(cluster.pids()["taskmanager"]) < 2:
        cluster.sh("start-tm")
    cfg2 = tmp_path / "flink-p2.yaml"
    cfg2.write_text(cfg.read_text().replace("{source: 1, process: 1, sink: 1}", "{source: 2, process: 2, sink: 2}"))
    assert cfg2.read_text() != cfg.read_text()
    job2 = submit(cluster, hazardctl_env, cfg2, src, dst, dlq, f"g-{src}", "--from-savepoint", savepoint)
    gate = next(v for v in flink_cli.rest(cluster.address, f"/jobs/{job2}")["vertices"] if v["name"].startswith("gate"))
    assert gate["parallelism"] == 2
    hosts = flink_cli.rest(cluster.address, f"/jobs/{job2}/vertices/{gate['id']}/taskmanagers")["taskmanagers"]
    assert len({h["taskmanager-id"] for h in hosts}) == 2, "the two gate subtasks run on two TaskManagers"
    out = consume_until(kafka_bootstrap, dst, has_all(set(exp_all)), timeout=120)
    time.sleep(3)
    out = consume_until(kafka_bootstrap, dst, lambda m: False, timeout=3)
    got = ids_of(out)
    assert got == set(exp_all), f"missing {len(set(exp_all) - got)}, extra (a burst of new) {len(got - set(exp_all))}"
    new_after = [t for t in map(lambda m: orjson.loads(m.value()), out) if t["reason"] == "new" and t["frame_id"] >= 50]
    assert not new_after, f"{len(new_after)} groups sent again as new after the restart"
    p = subprocess.run([*HAZARDCTL, "flink-job", "cancel", job2, "--jobmanager", cluster.address], env=hazardctl_env,
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    wait_for(lambda: flink_cli.rest(cluster.address, f"/jobs/{job2}")["state"] == "CANCELED", 30, "job cancelled")
