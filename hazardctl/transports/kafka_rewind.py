"""Rewind a stage's consumer group to a point in time before it starts (`--from-time`, issue 22).

What `kafka-consumer-groups --reset-offsets --to-datetime` does, from the stage itself: for every
partition of the topic, the first offset whose record timestamp is at or after the time
(offsets_for_times), or the partition's end when nothing is that recent; committed for the group
with the admin API. The group must have no live member (a running instance would keep its own
positions): that is refused with one line, as are a time before the topic's retention and a topic
that does not exist. Nothing is committed unless every partition's offset was found.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import ConfigResource

from hazardctl.config import KafkaSettings
from hazardctl.errors import ConfigError, ServiceUnavailable
from hazardctl.from_time import check_retention
from hazardctl.transports.kafka import CONSUMER_DEFAULTS, _client_conf, _make, admin_client

log = logging.getLogger("hazardctl.kafka")


def retention_ms(settings: KafkaSettings, topic: str, timeout: float = 10.0) -> int | None:
    """The topic's retention.ms, or None if it cannot be read (then the broker decides)."""
    admin = admin_client(settings, quiet=True)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        return int(admin.describe_configs([res], request_timeout=timeout)[res].result(timeout)["retention.ms"].value)
    except Exception as e:  # not authorised to describe: the offsets still say where the topic starts
        log.debug("cannot read retention.ms of %s: %s", topic, e)
        return None


def offsets_at(settings: KafkaSettings, topic: str, ts: float, timeout: float = 30.0) -> dict[int, int]:
    """{partition: first offset with a timestamp >= ts, or the end when none is}."""
    overrides = {**settings.consumer, "group.id": "hazardctl-rewind-probe", "enable.auto.commit": False}
    consumer = _make(Consumer, _client_conf(settings, CONSUMER_DEFAULTS, overrides, "rewind"), "rewind")
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            raise ConfigError(f"Kafka topic {topic} does not exist: run `hazardctl setup-topics`")
        wanted = [TopicPartition(topic, p, int(ts * 1000)) for p in sorted(meta.partitions)]
        out: dict[int, int] = {}
        for tp in consumer.offsets_for_times(wanted, timeout=timeout):
            if tp.error is not None:
                raise ServiceUnavailable(f"Kafka offsets of {topic}[{tp.partition}] at a time: {tp.error.str()}")
            if tp.offset < 0:  # nothing written since ts: start at the end
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout)
                out[tp.partition] = high
            else:
                out[tp.partition] = tp.offset
        return out
    except KafkaException as e:
        raise ServiceUnavailable(f"Kafka offsets of {topic} at a time: {e.args[0].str()}") from None
    finally:
        consumer.close()


def rewind_group(settings: KafkaSettings, topic: str, group_id: str, ts: float, text: str,
                 timeout: float = 30.0) -> dict[int, int]:
    """Commit, for `group_id`, the offsets of `topic` at time `ts`; returns them. `text` is the flag as
    given, for the error lines."""
    check_retention(text, ts, time.time(), topic, retention_ms(settings, topic))
    offsets = offsets_at(settings, topic, ts, timeout)
    admin = admin_client(settings, quiet=True)
    request = ConsumerGroupTopicPartitions(group_id, [TopicPartition(topic, p, o) for p, o in sorted(offsets.items())])
    try:
        done = admin.alter_consumer_group_offsets([request], request_timeout=timeout)[group_id].result(timeout)
        errors = [tp.error for tp in done.topic_partitions or [] if tp.error is not None]
    except KafkaException as e:
        errors = [e.args[0]]
    except TimeoutError:
        raise ServiceUnavailable(f"Kafka: rewinding group {group_id} on {topic}: no answer in {timeout:.0f}s") from None
    if errors:  # the broker answers per partition: a live member makes every one UNKNOWN_MEMBER_ID
        err = errors[0]
        if any(word in err.name() for word in ("UNKNOWN_MEMBER_ID", "NOT_EMPTY", "REBALANCE", "ILLEGAL_GENERATION")):
            raise ConfigError(f"--from-time: consumer group {group_id} has running members; stop them first "
                              f"(or give this run its own --group)")
        raise ServiceUnavailable(f"Kafka: rewinding group {group_id} on {topic}: {err.str()}")
    log.info("%s: group %s rewound to %s: %d records to read again", topic, group_id, text,
             _backlog(settings, topic, offsets, timeout))
    return offsets


def _backlog(settings: KafkaSettings, topic: str, offsets: dict[int, int], timeout: float) -> int:
    consumer = _make(Consumer, _client_conf(settings, CONSUMER_DEFAULTS, {"group.id": "hazardctl-rewind-probe"},
                                            "rewind"), "rewind")
    try:
        return sum(max(0, consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1] - o)
                   for p, o in offsets.items())
    except KafkaException:
        return -1
    finally:
        consumer.close()
