"""schedule over the real local Kafka broker catches up after a slowdown: a backlog of expired tasks is
answered `stale` at the stage's own speed, not at the speed of its workers' LLM calls.

The bug this guards against: every time the last worker slot was taken, schedule paused its Kafka
partitions, and librdkafka drops a paused partition's read-ahead, so each resume waited for a new
fetch (0.2-1 s). With 16 workers it read ~16 tasks/s whatever the tasks were: after an LLM latency
spike the backlog aged past its deadlines and was then answered stale at 16/s while 35/s were offered,
so every task arrived expired for good. Over pipes (no pause) it caught up. docs/schedule.md."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.test_schedule_kafka import Collector, _produce, _start
from tests.test_schedule_stage import tasks
from tools.llm_sim import SimConfig, SimKey, SimServer

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]

EXPIRED = 400
BUSY = 2  # long calls holding half of the 4 workers for the whole drain


def test_an_expired_backlog_drains_at_stage_speed_not_worker_speed(kafka_bootstrap, make_topic, hazardctl_env,
                                                                    tmp_path):
    t_in, t_out, t_dlq = make_topic("catchup-in", 1), make_topic("catchup-out", 1), make_topic("catchup-dlq", 1)
    run = uuid.uuid4().hex[:8]
    busy = [t.model_copy(update={"task_id": f"busy-{run}-{i}"}) for i, t in enumerate(tasks(BUSY, deadline_s=60))]
    expired = [t.model_copy(update={"task_id": f"expired-{run}-{i}"})
               for i, t in enumerate(tasks(EXPIRED, deadline_s=-1.0))]  # a backlog that aged past its deadline
    # one partition: the busy tasks are read first, the expired backlog behind them
    _produce(kafka_bootstrap, t_in, [(t.camera_id.encode(), t.model_dump_json().encode()) for t in busy + expired])

    with SimServer(SimConfig(keys=[SimKey(name="k0", api_key="secret-0", qps=20)], latency="fixed:8.0",
                             port=0)) as sim:
        kf = tmp_path / "keys.yaml"
        kf.write_text(json.dumps({"keys": [{"name": "k0", "api_key": "secret-0", "qps_limit": 20,
                                            "base_url": sim.base_url}]}))
        log = tmp_path / "schedule.log"
        col = Collector(kafka_bootstrap, [t_out, t_dlq])
        proc = _start(["--keys", str(kf), "--in", f"kafka://{t_in}", "--out", f"kafka://{t_out}",
                       "--dlq", f"kafka://{t_dlq}", "--group", f"catchup-{run}", "--workers", "4"], hazardctl_env, log)
        try:
            # 30 s for the start and the group join plus the drain; the drain itself is timed below
            # from the tasks' own dequeue stamps. At the old ~2-4 tasks/s it would need 100+ s.
            end = time.monotonic() + 30
            stale: list[dict] = []
            while time.monotonic() < end:
                col.poll(0.3)
                stale = [r for r in col.by_topic[t_out] if r["task_id"].startswith("expired-")]
                if len({r["task_id"] for r in stale}) >= EXPIRED:
                    break
            # The second busy call may still be on its way when the drain ends (slow start spaces the key's
            # first sends by ~170 ms; on a loaded CI box more): wait for it, then a little longer so that a
            # call spent on an expired task would be counted too.
            calls_by = time.monotonic() + 5
            while sim.stats()["totals"]["requests"] < BUSY and time.monotonic() < calls_by:
                time.sleep(0.05)
            time.sleep(0.5)
            requests = sim.stats()["totals"]["requests"]
        finally:
            proc.terminate()
            proc.wait(30)
            col.close()
    assert len({r["task_id"] for r in stale}) == EXPIRED, (
        f"{len(stale)} of {EXPIRED} expired tasks answered in 30 s\n{log.read_text()[-2000:]}")
    assert all(r["status"] == "stale" and r["error_class"] == "expired" and r["attempts"] == 0 for r in stale)
    assert not col.by_topic[t_dlq]  # stale results are results, not dead letters
    assert requests == BUSY  # no call spent on an expired task; the two busy calls still hold their workers
    assert not [r for r in col.by_topic[t_out] if r["task_id"].startswith("busy-")]  # they did, for the whole drain
    dequeued = sorted(r["times"]["dequeue"] for r in stale)
    span = dequeued[-1] - dequeued[0]
    # two free workers and 8 s calls: worker speed is 0.25 tasks/s; the old pause/resume churn read ~2
    # per resume (~4/s, 100 s for the backlog). Stage speed is hundreds per second even on a loaded box.
    assert span < 8.0, f"{EXPIRED} expired tasks took {span:.1f} s from first to last dequeue"
    print(f"\n{EXPIRED} expired tasks answered stale in {span:.2f} s ({EXPIRED / max(span, 1e-3):.0f}/s) "
          f"with 2 of 4 workers in 8 s calls")
