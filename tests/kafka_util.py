"""Small helpers for tests against the real local broker (plain confluent-kafka, not our transport)."""

from __future__ import annotations

import time
import uuid
from typing import Callable, Iterable

from confluent_kafka import Consumer, Producer


def produce(bootstrap: str, topic: str, items: Iterable[tuple[bytes | None, bytes]], rate: float | None = None) -> int:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    n = 0
    t0 = time.monotonic()
    for key, value in items:
        p.produce(topic, value, key)
        n += 1
        p.poll(0)
        if rate:
            ahead = t0 + n / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    assert p.flush(30) == 0, "test producer could not deliver"
    return n


def consume_until(bootstrap: str, topic: str, done: Callable[[list], bool], timeout: float = 60.0) -> list:
    """Read `topic` from the beginning with a throwaway group until `done(messages)` or timeout."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done(out):
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error() is None:
                    out.append(m)
    finally:
        c.close()
    return out
