"""The MQTT sink against a real Mosquitto (Debian's, a temp config, a free port): QoS 1 per camera topic,
and a broker restart mid-stream — afterwards the subscriber has every event once per idempotency key,
in order per incident. Also the Kafka sink: one record per event, keyed by camera.
"""

from __future__ import annotations

import time

import orjson
import pytest

from hazardctl.sinks import SinkSettings, make_sink, parse_sink
from hazardctl.sinks.dispatcher import SinkDispatcher
from hazardctl.sinks.mqtt import topic_for
from hazardctl.sinks.outbox import RetryPolicy, Router
from hazardctl.sinks.outbox_store import OutboxJournal
from hazardctl.store import open_store
from tests.sink_receivers import Mosquitto, MqttSubscriber, Received, check_exactly_once_in_order, wait_until
from tests.test_sinks_webhook import incident_events

FAST = RetryPolicy(base_s=0.1, factor=2.0, cap_s=0.5, max_attempts=500, jitter=0.1)


def as_received(messages: list[tuple[str, bytes]]) -> list[Received]:
    return [Received(orjson.loads(body)["idempotency_key"], body, True, 0.0) for _t, body in messages]


def test_mqtt_qos1_per_camera_topic_through_a_broker_restart(tmp_path):
    broker = Mosquitto(tmp_path / "mosquitto").start()
    sub = MqttSubscriber(broker.port, "site-a/+/incident", "test-subscriber")
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    sink = make_sink(parse_sink(f"mqtt://127.0.0.1:{broker.port}/site-a"), SinkSettings(timeout_s=2.0))
    d = SinkDispatcher([sink], Router(min_level="medium"), policy=FAST, journal=OutboxJournal(store))
    events = incident_events(5, 4, prefix="mq")
    try:
        d.start()
        wait_until(lambda: sink.connected, 10, "the sink to connect")
        for action, body in events[:10]:
            d.offer("incident", action, body)
        wait_until(lambda: len(sub.snapshot()) >= 10, 10, "the first events at the subscriber")
        broker.stop()  # the broker goes away mid-stream
        for action, body in events[10:20]:
            d.offer("incident", action, body)
            time.sleep(0.05)
        time.sleep(1.0)
        assert d.pending() >= 10  # held in the outbox, not lost in a client queue
        broker.start()  # the same port and persistence file: the subscriber's session survives
        for action, body in events[20:]:
            d.offer("incident", action, body)
        want = {f"mq-{i}:{s}" for i in range(5) for s in range(1, 7)}
        wait_until(lambda: {r.key for r in as_received(sub.snapshot())} >= want, 30,
                   "every event at the subscriber after the restart")
        wait_until(lambda: d.pending() == 0, 10, "the outbox to empty")  # a PUBACK lost in the restart: re-sent
        time.sleep(0.3)  # a duplicate still on its way would show below
    finally:
        d.stop()
        sub.close()
        broker.stop()
    assert len(sub.connects) >= 2 and all(present for _t, present in sub.connects[1:]), sub.connects  # session kept
    msgs = sub.snapshot()
    check_exactly_once_in_order(as_received(msgs), want)
    for topic, body in msgs:
        assert topic == topic_for("site-a", orjson.loads(body)["camera_id"])
    assert {t for t, _ in msgs} == {f"site-a/cam-{i}/incident" for i in range(3)}


def test_mqtt_topic_never_carries_a_wildcard():
    assert topic_for("p", "a/b+c#") == "p/a_b_c_/incident"


@pytest.mark.kafka
def test_kafka_sink_keyed_by_camera(kafka_bootstrap, make_topic, tmp_path):
    from confluent_kafka import Consumer

    from hazardctl.config import KafkaSettings
    from hazardctl.transports import Endpoints

    topic = make_topic("incidents", 2)
    endpoints = Endpoints(settings=KafkaSettings(bootstrap_servers=kafka_bootstrap))
    sink = make_sink(parse_sink(f"kafka://{topic}"), SinkSettings(endpoints=endpoints, timeout_s=10))
    d = SinkDispatcher([sink], Router(min_level="medium"), policy=FAST)
    events = incident_events(4, 1, prefix="kf")
    d.start()
    try:
        for action, body in events:
            d.offer("incident", action, body)
        wait_until(lambda: d.delivered == len(events), 20, "broker confirmations")
    finally:
        d.stop()
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"t-{topic}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < len(events) and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m)
    c.close()
    assert len(got) == len(events)
    for m in got:
        doc = orjson.loads(m.value())
        assert m.key().decode() == doc["camera_id"]
    by_partition_order = {}
    for m in got:
        doc = orjson.loads(m.value())
        by_partition_order.setdefault(doc["incident_id"], []).append(doc["seq"])
    assert all(seqs == sorted(seqs) for seqs in by_partition_order.values())
