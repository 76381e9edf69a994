"""The loadtest's own Kafka: fresh topics per run, and readers that watch the pipeline's topics.

Topic names carry the run id, so runs never see each other's messages. The results topic uses
`message.timestamp.type=LogAppendTime`: the broker stamps each result when it lands on the topic,
which is where "end to end" ends (capture → result on the results topic).
"""

from __future__ import annotations

import threading
import uuid
from typing import Callable

from confluent_kafka import Consumer
from confluent_kafka.admin import NewTopic

from hazardctl.config import KafkaSettings
from hazardctl.errors import ServiceUnavailable
from hazardctl.transports.kafka import admin_client, wait_for_broker

#: (role, partitions, extra config)
TOPICS = (
    ("detections", 8, {"compression.type": "lz4", "max.message.bytes": "4194304"}),
    ("tasks", 8, {"compression.type": "lz4", "max.message.bytes": "4194304"}),
    ("results", 8, {"compression.type": "lz4", "max.message.bytes": "4194304",
                    "message.timestamp.type": "LogAppendTime"}),
    ("dead", 1, {"max.message.bytes": "10485760"}),
)


def replication(brokers: int) -> tuple[int, dict[str, str]]:
    """Replication of a run's topics: 3 with min.insync.replicas 2 on a cluster of three or more brokers
    (a broker may die mid-run and nothing acknowledged is lost), else 1 (the single local broker)."""
    if brokers >= 3:
        return 3, {"min.insync.replicas": "2"}
    return 1, {}


def create_topics(settings: KafkaSettings, run_id: str, timeout: float = 30.0) -> dict[str, str]:
    """role → topic name, all created (retention 1 h: a run's topics are deleted at its end anyway)."""
    brokers = wait_for_broker(settings, timeout)
    admin = admin_client(settings)
    names = {role: f"loadtest-{run_id}-{role}" for role, _, _ in TOPICS}
    rf, durable = replication(brokers)
    new = [NewTopic(names[role], parts, rf, config={"retention.ms": "3600000", **durable, **cfg})
           for role, parts, cfg in TOPICS]
    for name, fut in admin.create_topics(new, request_timeout=timeout).items():
        try:
            fut.result(timeout)
        except Exception as e:
            raise ServiceUnavailable(f"cannot create topic {name} on {settings.bootstrap_servers}: {e}") from None
    return names


def delete_topics(settings: KafkaSettings, names: list[str], timeout: float = 15.0) -> None:
    admin = admin_client(settings, quiet=True)
    for fut in admin.delete_topics(names, request_timeout=timeout).values():
        try:
            fut.result(timeout)
        except Exception:
            pass  # best effort: a run's topics expire after an hour anyway


class TopicReader:
    """Reads one topic from the beginning in a thread; calls `on_message(value, ts_seconds)`."""

    def __init__(self, settings: KafkaSettings, topic: str, on_message: Callable[[bytes, float], None]):
        self.topic = topic
        self.on_message = on_message
        self.errors = 0
        self._consumer = Consumer({**settings.common(), "group.id": f"loadtest-reader-{uuid.uuid4().hex[:8]}",
                                   "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                   "fetch.wait.max.ms": 20, "log_level": 0, "error_cb": lambda _e: None})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reader-{topic}", daemon=True)

    def start(self) -> "TopicReader":
        self._consumer.subscribe([self.topic])
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for m in self._consumer.consume(num_messages=500, timeout=0.1):
                    if m.error() is not None:
                        continue
                    ts_type, ts_ms = m.timestamp()
                    try:
                        self.on_message(m.value(), ts_ms / 1000.0)
                    except Exception:
                        self.errors += 1
        finally:
            self._consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def groups_stable(settings: KafkaSettings, groups: list[str], timeout: float = 5.0) -> bool:
    """True when every consumer group is Stable with at least one member that holds partitions."""
    from confluent_kafka import ConsumerGroupState

    admin = admin_client(settings, quiet=True)
    try:
        for group, fut in admin.describe_consumer_groups(groups, request_timeout=timeout).items():
            d = fut.result(timeout)
            if d.state != ConsumerGroupState.STABLE or not any(m.assignment.topic_partitions for m in d.members):
                return False
        return True
    except Exception:
        return False
