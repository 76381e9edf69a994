"""consume over the real local Kafka broker: commits, dead letters, and a restart that rebuilds state.

The restart story (docs/consume.md): on start, consume replays the last --replay seconds of the
results topic into its board (same incidents, same ids, no events pushed), then its live consumer
marks every record below the replay's end offsets done without applying it again. So a restart,
even after kill -9 with uncommitted offsets, neither loses an open incident nor announces it twice.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from websockets.asyncio.client import connect

from hazardctl.messages import DeadLetter
from hazardctl.synthetic import risk_result
from tests.consume_proc import ConsumeProcess, recv_json, recv_until
from tests.kafka_util import consume_until, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def kv(r) -> tuple[bytes, bytes]:
    return r.camera_id.encode(), r.model_dump_json().encode()


def committed_and_ends(bootstrap: str, topic: str, group: str, partitions: int) -> tuple[list[int], list[int]]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committed = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        ends = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        c.close()
    return [tp.offset if e else 0 for tp, e in zip(committed, ends)], ends


def test_restart_rebuilds_incidents_without_announcing_them_again(kafka_bootstrap, make_topic, hazardctl_env):
    topic, dlq = make_topic("results", 2), make_topic("dlq", 1)
    group = f"consume-{topic}"
    args = ("--in", f"kafka://{topic}", "--dlq", f"kafka://{dlq}", "--group", group)
    t = time.time()
    first = risk_result("cam-1", "g1", 1, t, level="high")

    with ConsumeProcess(*args, env=hazardctl_env, stdin=False) as c1:
        assert c1.get("/healthz")[1]["replayed"] == 0  # an empty topic
        produce(kafka_bootstrap, topic, [kv(first), kv(risk_result("cam-2", "g1", 1, t, level="low")),
                                         (b"cam-x", b'{"truncated": '), kv(first)])  # a bad record, a duplicate
        c1.applied(4, timeout=30)
        _, incs = c1.get("/incidents?open=true")
        (inc,) = incs["incidents"]
        assert c1.metric("hazardctl_consume_results_total", outcome="duplicate") == 1
        assert c1.stop() == 0
    committed, ends = committed_and_ends(kafka_bootstrap, topic, group, 2)
    assert committed == ends and sum(ends) == 4, "every record, the dead letter's too, committed on SIGTERM"
    (letter,) = [DeadLetter.model_validate_json(m.value())
                 for m in consume_until(kafka_bootstrap, dlq, lambda m: len(m) >= 1, timeout=20)]
    assert (letter.stage, letter.error_class, letter.source) == ("consume", "malformed_json", f"kafka:{topic}")

    # more results while consume is down, then kill -9 a second instance before it can commit
    produce(kafka_bootstrap, topic, [kv(risk_result("cam-1", "g1", 2, t + 1, level="medium"))])
    c2 = ConsumeProcess(*args, env=hazardctl_env, stdin=False)
    try:
        assert c2.get("/healthz")[1]["replayed"] == 4  # the bad record is skipped, the duplicate dropped
        _, incs = c2.get(f"/incidents/{inc['incident_id']}")
        assert (incs["state"], incs["level"], incs["peak_level"]) == ("open", "medium", "high")
    finally:
        c2.proc.send_signal(signal.SIGKILL)
        c2.proc.wait(10)

    with ConsumeProcess(*args, env=hazardctl_env, stdin=False) as c3:
        async def body():
            async with connect(c3.ws_url) as ws:
                snap = await recv_json(ws)
                assert [i["incident_id"] for i in snap["incidents"]] == [inc["incident_id"]]
                assert {x["camera_id"]: x["level"] for x in snap["cameras"]} == {"cam-1": "medium", "cam-2": "low"}
                await asyncio.to_thread(produce, kafka_bootstrap, topic,
                                        [kv(risk_result("cam-1", "g1", 3, time.time(), level="high"))])
                got = await recv_until(ws, lambda m: m["type"] == "incident")
                assert [(m["event"], m["incident"]["incident_id"]) for m in got if m["type"] == "incident"] == [
                    ("update", inc["incident_id"])]  # the same incident, never a second "new"

        asyncio.run(body())
        assert c3.metric("hazardctl_consume_events_total", type="incident_new") == 0
        assert c3.stop() == 0
    committed, ends = committed_and_ends(kafka_bootstrap, topic, group, 2)
    assert committed == ends and sum(ends) == 6
