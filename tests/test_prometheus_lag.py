"""hazardctl_kafka_consumer_lag{stage,topic,partition} from librdkafka's statistics, against the real broker.

30 records go to partition 0 and 10 to partition 1 of a fresh topic; a stage's consumer reads them
all but finishes (marks done, so the transport commits) only the first 5 of partition 0 and all of
partition 1. librdkafka's `consumer_lag` is the partition's end minus the committed offset, so the
gauge must settle at exactly 25 for partition 0 and 0 for partition 1, under the stage's name; a
consumer of the same topic opened without a stage adds no series (no statistics callback).
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from hazardctl.config import KafkaSettings
from hazardctl.transports.kafka import KafkaClients

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]


def lag_samples(stage: str, topic: str) -> dict[int, float]:
    return {int(s.labels["partition"]): s.value
            for m in REGISTRY.collect() if m.name == "hazardctl_kafka_consumer_lag"
            for s in m.samples if s.labels["stage"] == stage and s.labels["topic"] == topic}


def test_consumer_lag_per_partition_is_end_minus_committed(kafka_bootstrap, make_topic):
    topic = make_topic("lag", 2)
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for part, n in ((0, 30), (1, 10)):
        for i in range(n):
            p.produce(topic, f"{part}-{i}".encode(), partition=part)
    assert p.flush(10) == 0

    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, consumer={"statistics.interval.ms": 200})
    stage = f"lagtest-{uuid.uuid4().hex[:6]}"
    inp = KafkaClients(settings).input([topic], f"g-{stage}", stage)
    plain = KafkaClients(settings).input([topic], f"g-plain-{stage}")  # no stage: no lag metric
    try:
        read: list = []
        finished: set[tuple[int, int]] = set()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            for r in inp.poll(0.2, 100):
                read.append(r)
                if r.partition == 1 or r.offset < 5:
                    inp.done(r)
                    finished.add((r.partition, r.offset))
            plain.poll(0.05, 100)
            if len(read) == 40 and lag_samples(stage, topic) == {0: 25.0, 1: 0.0}:
                break
        assert len(read) == 40 and len(finished) == 15
        assert lag_samples(stage, topic) == {0: 25.0, 1: 0.0}
        assert {s.labels["stage"] for m in REGISTRY.collect() if m.name == "hazardctl_kafka_consumer_lag"
                for s in m.samples if s.labels["topic"] == topic} == {stage}
    finally:
        inp.close()
        plain.close()
