"""Shards that cover for each other (issue 20.5), over the real broker: two `hazardctl schedule` processes
(`--shard 0/2`, `--shard 1/2`, one consumer group, `--hand-over`) on the simulated LLM; every key of
shard 0 is revoked (401) mid-run, later restored.

Must show: after a short gap every task ends ok; the healthy shard serves all four partitions of the tasks
topic meanwhile; when the keys come back, shard 0 rejoins (its probe while out of the group finds a key)
and the work is split again. Without --hand-over half the tasks failed `no_key_in_time` (issue 20).
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from pathlib import Path

import orjson
import yaml
from confluent_kafka import Consumer, Producer

from tests.conftest import HAZARDCTL
from tests.test_schedule_stage import sim_keys, tasks
from tools.llm_sim import SimConfig, SimServer

PARTITIONS = 4
RATE = 10.0  # tasks per second, 2.5 per partition; each shard alone can serve 25/s
REVOKE_AT, RESTORE_AT, END_AT = 8.0, 22.0, 36.0
GAP_S = 6.0  # what we allow after the revocation: the 1 s hold, the rebalance, the tasks read meanwhile
EVEN = [f"k{i}" for i in range(0, 10, 2)]  # shard 0/2: keys at positions 0, 2, 4, ... of the file


def keys_file(path: Path, sim) -> Path:
    keys = [{"name": f"k{i}", "api_key": f"secret-{i}", "qps_limit": 5.0, "base_url": sim.base_url}
            for i in range(10)]
    path.write_text(yaml.safe_dump({"reprobe_interval": 3.0, "keys": keys}))
    return path


def shard(i: int, keys: Path, tasks_topic: str, results: str, dead: str, group: str, env: dict, log: Path):
    args = [*HAZARDCTL, "schedule", "--keys", str(keys), "--in", f"kafka://{tasks_topic}", "--out", f"kafka://{results}",
            "--dlq", f"kafka://{dead}", "--group", group, "--shard", f"{i}/2", "--hand-over"]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))


class Results(threading.Thread):
    """Every result on the results topic: task id → [(status, key name, arrival)]."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                           "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.c.subscribe([topic])
        self.by_task: dict[str, list[tuple[str, str | None, float]]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            m = self.c.poll(0.2)
            if m is not None and m.error() is None:
                r = orjson.loads(m.value())
                self.by_task.setdefault(r["task_id"], []).append((r["status"], r.get("key_name"), time.time()))
        self.c.close()

    def ok(self, task_id: str) -> str | None:
        """The key of the task's ok result (None: none ok)."""
        return next((k for s, k, _ in self.by_task.get(task_id, []) if s == "ok"), None)


def test_two_shards_cover_for_each_other(kafka_bootstrap, make_topic, hazardctl_env, tmp_path):
    tasks_topic, results_topic, dead = make_topic("tasks", PARTITIONS), make_topic("results", PARTITIONS), make_topic("dead", 1)
    group = f"cover-{uuid.uuid4().hex[:8]}"
    env = {**hazardctl_env, "HAZARDCTL_LOG_LEVEL": "INFO"}
    env.pop("HAZARDCTL_KEYS", None)
    with SimServer(SimConfig(keys=sim_keys(10, qps=5), latency="fixed:0.3", port=0)) as sim:
        keys = keys_file(tmp_path / "keys.yaml", sim)
        logs = [tmp_path / "shard0.log", tmp_path / "shard1.log"]
        procs = [shard(i, keys, tasks_topic, results_topic, dead, group, env, logs[i]) for i in (0, 1)]
        reader = Results(kafka_bootstrap, results_topic)
        reader.start()
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 1})
        sent: list[tuple[str, int, float]] = []  # (task id, partition, seconds into the run when produced)

        def send(i: int, at: float) -> str:
            t = tasks(1, deadline_s=10.0)[0]
            tid = f"cover-{i:05d}-{uuid.uuid4().hex[:6]}"
            producer.produce(tasks_topic, t.model_copy(update={"task_id": tid}).model_dump_json().encode(),
                             partition=i % PARTITIONS)
            producer.poll(0)
            sent.append((tid, i % PARTITIONS, at))
            return tid

        try:
            # both shards serving: warm-up tasks until each shard's keys have answered one
            deadline, i = time.time() + 60, 0
            while time.time() < deadline:
                send(i, -1.0)
                i += 1
                time.sleep(0.1)
                used = {k for tid, _, _ in sent if (k := reader.ok(tid))}
                if used & set(EVEN) and used - set(EVEN):
                    break
                assert all(p.poll() is None for p in procs), [lg.read_text()[-2000:] for lg in logs]
            else:
                raise AssertionError("both shards never served: " + " | ".join(lg.read_text()[-1500:] for lg in logs))
            start, revoked, restored = time.time(), False, False
            while (now := time.time() - start) < END_AT:
                if not revoked and now >= REVOKE_AT:
                    for k in EVEN:
                        sim.set_fault(k, "unauthorized")
                    revoked = True
                if not restored and now >= RESTORE_AT:
                    for k in EVEN:
                        sim.set_fault(k, None)
                    restored = True
                send(i, now)
                i += 1
                time.sleep(1 / RATE)
            producer.flush(10)
            wanted = [tid for tid, _, at in sent if at >= 0]
            wait_until = time.time() + 25
            while time.time() < wait_until and not all(reader.ok(t) for t in wanted):
                time.sleep(0.5)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
            reader.stop.set()
            reader.join(5)
    log0 = logs[0].read_text()
    timed = [(tid, part, at, reader.ok(tid)) for tid, part, at in sent if at >= 0]
    assert not [t for t in timed if t[0] not in reader.by_task], "a task without any result: lost"
    after_gap = [t for t in timed if t[2] >= REVOKE_AT + GAP_S]
    ok_after = sum(1 for t in after_gap if t[3])
    assert ok_after / len(after_gap) >= 0.99, (ok_after, len(after_gap), log0[-3000:])
    # the gap, as it happened: the first second from which every task produced ended ok
    failed_at = [at for _, _, at, k in timed if k is None]
    print(f"\ncover: {len(timed)} tasks, {ok_after}/{len(after_gap)} ok after revocation + {GAP_S:g} s; "
          f"failed {len(failed_at)}, last failure produced {max(failed_at, default=REVOKE_AT) - REVOKE_AT:.1f} s after revocation")
    # out of the group, shard 1 (odd keys) served every partition of the tasks topic
    out = [t for t in timed if REVOKE_AT + GAP_S <= t[2] < RESTORE_AT]
    assert out and all(t[3] not in EVEN for t in out if t[3])
    assert {t[1] for t in out} == set(range(PARTITIONS))
    assert "leaving the consumer group" in log0, log0[-3000:]
    # keys back: shard 0 probed, rejoined, and serves again (the work is split again)
    assert "rejoining the consumer group" in log0, log0[-3000:]
    late = [t for t in timed if t[2] >= END_AT - 6]
    assert any(t[3] in EVEN for t in late) and any(t[3] and t[3] not in EVEN for t in late), late
    assert sum(1 for t in late if t[3]) / len(late) >= 0.99
