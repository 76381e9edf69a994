"""schedule over the real local Kafka broker and the simulated LLM: `kill -9` in the middle of a run,
a restart, and every task id still ends with a result or a dead letter (at-least-once: commits only
after delivery; duplicates are allowed, a missing task is not)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tools.llm_sim import SimConfig, SimKey, SimServer
from tests.test_schedule_stage import tasks

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(240)]


def _produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    failed: list = []
    for key, value in items:
        p.produce(topic, value, key, on_delivery=lambda err, _m: failed.append(err) if err else None)
    assert p.flush(30) == 0 and not failed


class Collector:
    """Reads the output topics from the beginning, as an operator's tool would."""

    def __init__(self, bootstrap: str, topics: list[str]):
        from confluent_kafka import Consumer

        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}",
                           "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.c.subscribe(topics)
        self.by_topic: dict[str, list[dict]] = {t: [] for t in topics}

    def poll(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for m in self.c.consume(500, 0.2):
                if m.error() is None:
                    self.by_topic[m.topic()].append(json.loads(m.value()))

    def close(self) -> None:
        self.c.close()


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hazardctl.cli", "schedule", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "ab"))


def test_kill_9_mid_run_then_restart_loses_no_task(kafka_bootstrap, make_topic, hazardctl_env, tmp_path):
    t_in, t_out, t_dlq = make_topic("sched-in", 4), make_topic("sched-out", 4), make_topic("sched-dlq", 1)
    good = tasks(150, deadline_s=180)
    no_crop = tasks(3, deadline_s=180, crop=False)  # the simulator answers 400: failed result + dead letter
    no_crop = [t.model_copy(update={"task_id": f"nocrop-{i}"}) for i, t in enumerate(no_crop)]
    bad = [b"not json 0", b'{"task_id": "half a task"}']
    items = [(t.camera_id.encode(), t.model_dump_json().encode()) for t in good + no_crop] + [(b"x", v) for v in bad]
    _produce(kafka_bootstrap, t_in, items)
    expected = {t.task_id for t in good + no_crop}

    keys = [SimKey(name=f"k{i}", api_key=f"secret-{i}", qps=10) for i in range(3)]
    with SimServer(SimConfig(keys=keys, latency="uniform:0.2:0.4", port=0)) as sim:
        kf = tmp_path / "keys.yaml"
        kf.write_text(json.dumps({"keys": [{"name": k.name, "api_key": k.api_key, "qps_limit": 10,
                                            "base_url": sim.base_url} for k in keys]}))
        args = ["--keys", str(kf), "--in", f"kafka://{t_in}", "--out", f"kafka://{t_out}", "--dlq", f"kafka://{t_dlq}",
                "--group", f"sched-{uuid.uuid4().hex[:8]}", "--workers", "40"]
        log = tmp_path / "schedule.log"
        col = Collector(kafka_bootstrap, [t_out, t_dlq])
        try:
            first = _start(args, hazardctl_env, log)
            deadline = time.monotonic() + 60
            while len(col.by_topic[t_out]) < 40 and time.monotonic() < deadline:
                col.poll(0.3)
            assert len(col.by_topic[t_out]) >= 40, log.read_text()[-3000:]
            first.send_signal(signal.SIGKILL)  # mid-run: calls in flight, results not yet committed
            first.wait(10)
            before = len(col.by_topic[t_out])

            second = _start(args, hazardctl_env, log)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                col.poll(1.0)
                seen = {r["task_id"] for r in col.by_topic[t_out]}
                seen |= {json.loads(d["payload"]).get("task_id") for d in col.by_topic[t_dlq]
                         if d["payload"].startswith("{") and d["error_class"] != "validation"}
                if expected <= seen and len(col.by_topic[t_dlq]) >= len(no_crop) + len(bad):
                    break
            second.send_signal(signal.SIGTERM)
            assert second.wait(40) == 0, log.read_text()[-3000:]
        finally:
            for p in ("first", "second"):
                proc = locals().get(p)
                if proc is not None and proc.poll() is None:
                    proc.kill()
            col.poll(1.0)
            col.close()

    results = col.by_topic[t_out]
    dead = col.by_topic[t_dlq]
    by_id: dict[str, list[dict]] = {}
    for r in results:
        by_id.setdefault(r["task_id"], []).append(r)
    missing = expected - set(by_id)
    assert not missing, f"{len(missing)} tasks lost after kill -9"
    assert {r["status"] for t in good for r in by_id[t.task_id]} == {"ok"}
    assert all(r["error_class"] == "bad_request" for t in no_crop for r in by_id[t.task_id])
    dl_payloads = [d["payload"] for d in dead]
    for b in bad:
        assert b.decode() in dl_payloads
    assert {json.loads(d["payload"])["task_id"] for d in dead if d["error_class"] == "bad_request"} == \
        {t.task_id for t in no_crop}
    duplicates = len(results) - len(by_id)
    print(f"\nkill -9 after {before} results; {len(results)} results for {len(by_id)} tasks "
          f"({duplicates} redelivered duplicates), {len(dead)} dead letters")
