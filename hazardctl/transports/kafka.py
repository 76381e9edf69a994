"""Kafka behind the transport interface: the only module that touches confluent_kafka's clients.

Producer: acks=all, idempotence, compression, small linger, every delivery report checked.
Consumer: no auto-commit; we commit the contiguous prefix of offsets whose outputs are delivered
(`OffsetTracker`), pause partitions for backpressure, and commit what is done on revoke and close.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from hazardctl import metrics
from hazardctl.config import KafkaSettings
from hazardctl.errors import ConfigError, DeliveryError, ServiceUnavailable
from hazardctl.offsets import OffsetTracker
from hazardctl.transports.base import DeliveryCallback, Record

log = logging.getLogger("hazardctl.kafka")

PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "compression.type": "lz4",
    # a message waits up to linger.ms for others to share its request: 5 ms (librdkafka's default) costs
    # ~4 ms per hop at our rates (tens/s: no batch ever forms) and buys nothing there; at high rates
    # batches form anyway behind the requests in flight. docs/latency.md has the figures.
    "linger.ms": 1,
    "message.max.bytes": 10 * 1024 * 1024,  # the topics' max.message.bytes are the real limits
    "queue.buffering.max.messages": 100_000,
    "queue.buffering.max.kbytes": 256 * 1024,  # bounds memory when the broker is away
    "message.timeout.ms": 120_000,
}
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "fetch.max.bytes": 16 * 1024 * 1024,
    "partition.assignment.strategy": "cooperative-sticky",
    "session.timeout.ms": 10_000,
}


#: how often a stage's consumer reports its lag (librdkafka statistics); `consumer:` in the Kafka config overrides
STATISTICS_INTERVAL_MS = 5000


class _LagReport:
    """librdkafka's statistics JSON (served from consume()) → hazardctl_kafka_consumer_lag per partition.

    `consumer_lag` is the partition's end minus the group's committed offset; librdkafka reports -1
    before the first commit and for partitions not assigned here: those are left out, and a partition
    that stopped being reported (revoked) loses its series."""

    def __init__(self, stage: str):
        self.stage = stage
        self._shown: set[tuple[str, str]] = set()

    def __call__(self, stats_json: str) -> None:
        try:
            topics = json.loads(stats_json).get("topics", {})
        except ValueError:
            return
        now: set[tuple[str, str]] = set()
        for topic, t in topics.items():
            for part, p in t.get("partitions", {}).items():
                lag = p.get("consumer_lag", -1)
                if part == "-1" or lag < 0 or not p.get("desired", True):
                    continue
                metrics.KAFKA_CONSUMER_LAG.labels(self.stage, topic, part).set(lag)
                now.add((topic, part))
        for topic, part in self._shown - now:
            metrics.KAFKA_CONSUMER_LAG.remove(self.stage, topic, part)
        self._shown = now


def refused(err: KafkaError, settings: KafkaSettings) -> str | None:
    """One line for an error that retrying cannot fix (bad SASL credentials, a broker certificate we do
    not trust), or None. librdkafka retries these forever; a stage must stop and say what to fix.
    Its messages name the mechanism and the certificate problem, never the password."""
    code, text = err.code(), err.str()
    where = f"Kafka at {settings.bootstrap_servers}"
    if code == KafkaError._AUTHENTICATION:
        reason = text.split("SASL authentication error: ", 1)[-1].split(" (after ", 1)[0]
        return (f"{where} refused the login of user {settings.sasl_username or '(none)'!r} "
                f"({settings.sasl_mechanism or 'no SASL mechanism'}): {reason}; check sasl_username and "
                "sasl_password (HAZARDCTL_KAFKA_SASL_USERNAME / HAZARDCTL_KAFKA_SASL_PASSWORD)")
    if code == KafkaError._SSL and ("certificate" in text or "handshake failed" in text):
        reason = text.split("SSL handshake failed: ", 1)[-1].split(" (after ", 1)[0]
        reason = reason.split(", verify that ssl.ca.location")[0]
        return (f"{where}: TLS handshake failed: {reason}; check ssl_ca_location (HAZARDCTL_KAFKA_SSL_CA, now "
                f"{settings.ssl_ca_location or 'the system CA store'}) and that the broker's certificate names "
                "the host in bootstrap_servers")
    return None


class _ErrorLog:
    """librdkafka repeats the same error every few ms while a broker is down: log it once a while.

    An error that retrying cannot fix (`refused`) raises ServiceUnavailable instead; confluent-kafka
    re-raises it from the poll/consume/flush that served the callback, so the stage stops with one line."""

    def __init__(self, what: str, every_s: float = 10.0, settings: KafkaSettings | None = None):
        self._what, self._every, self._last = what, every_s, {}
        self._settings = settings

    def __call__(self, err: KafkaError) -> None:
        if self._settings is not None:
            why = refused(err, self._settings)
            if why is not None:
                raise ServiceUnavailable(why)
        now = time.monotonic()
        if now - self._last.get(err.code(), -1e9) >= self._every:
            self._last[err.code()] = now
            log.warning("%s: %s", self._what, err.str())


def _client_conf(settings: KafkaSettings, defaults: dict[str, Any], overrides: dict[str, Any], what: str) -> dict:
    conf = {**settings.common(), "log_level": 2, **defaults, **overrides}
    conf["error_cb"] = _ErrorLog(f"kafka {what} ({settings.bootstrap_servers})", settings=settings)
    return conf


def admin_client(settings: KafkaSettings, quiet: bool = False) -> AdminClient:
    """An admin client; `quiet` while waiting for a broker (the caller reports the outcome)."""
    conf = _client_conf(settings, {}, {}, "admin")
    if quiet:
        conf["log_level"], conf["error_cb"] = 0, lambda _err: None
    return _make(AdminClient, conf, "admin")


_COORDINATOR_SETTLING = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                         KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._WAIT_COORD}


def _coordinator_settling(err: KafkaError) -> bool:
    """True for the answers a broker gives while a group's coordinator is elected or loading."""
    return err.code() in _COORDINATOR_SETTLING or err.retriable()


def _make(cls, conf: dict, what: str):
    try:
        return cls(conf)
    except KafkaException as e:  # e.g. a Java-client property name in the overrides
        raise ConfigError(f"kafka {what} settings: {e.args[0].str()}") from None


def wait_for_broker(settings: KafkaSettings, timeout: float = 30.0, topics: list[str] | None = None) -> int:
    """Block until the cluster answers (returns the broker count); check that `topics` exist.

    Bad credentials or an untrusted broker certificate fail at once (within a second or two), with
    one line that says what to fix, instead of after `timeout`."""
    conf = _client_conf(settings, {}, {}, "admin")
    conf["log_level"] = 0
    refusals: list[str] = []

    def on_error(err: KafkaError) -> None:
        why = refused(err, settings)
        if why is not None:
            refusals.append(why)

    conf["error_cb"] = on_error
    admin = _make(AdminClient, conf, "admin")
    deadline = time.monotonic() + timeout
    while True:
        try:
            md = admin.list_topics(timeout=min(2.0, max(0.5, deadline - time.monotonic())))
            break
        except KafkaException:
            admin.poll(0)  # serves error_cb
            if refusals:
                raise ServiceUnavailable(refusals[0]) from None
            if time.monotonic() >= deadline:
                raise ServiceUnavailable(
                    f"Kafka at {settings.bootstrap_servers} did not answer within {timeout:.0f}s "
                    f"(is it running? try `make kafka-up`; does its listener speak {settings.security_protocol}?)"
                ) from None
            time.sleep(0.5)
    missing = [t for t in topics or [] if t not in md.topics]
    if missing:
        raise ConfigError(f"Kafka topic(s) {', '.join(missing)} do not exist: run `hazardctl setup-topics`")
    return len(md.brokers)


def topic_max_message_bytes(settings: KafkaSettings, topic: str, timeout: float = 10.0) -> int | None:
    """The topic's max.message.bytes (what one record must stay under), or None if it cannot be read."""
    from confluent_kafka.admin import ConfigResource

    admin = admin_client(settings, quiet=True)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        configs = admin.describe_configs([res], request_timeout=timeout)[res].result(timeout)
        return int(configs["max.message.bytes"].value)
    except Exception as e:  # not authorised to describe, or an old broker: the caller uses a default
        log.debug("cannot read max.message.bytes of %s: %s", topic, e)
        return None


def consumer_group_lag(settings: KafkaSettings, groups: list[str], timeout: float = 5.0) -> dict[str, dict[str, int]]:
    """Lag per group and topic as an operator's tool reads it from the broker: each partition's high
    watermark minus the group's committed offset, over the partitions the group has committed.
    A group with no commits is left out; an unreachable broker raises ServiceUnavailable."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    admin = admin_client(settings, quiet=True)
    probe = Consumer({**settings.common(), "group.id": "hazardctl-lag-probe", "log_level": 0,
                      "enable.auto.commit": False, "error_cb": lambda _err: None})
    out: dict[str, dict[str, int]] = {}
    try:
        for group in groups:  # the admin API takes one group per request
            fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                    request_timeout=timeout)[group]
            for tp in fut.result(timeout).topic_partitions or []:
                if tp.offset < 0:
                    continue
                _low, high = probe.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout)
                topics = out.setdefault(group, {})
                topics[tp.topic] = topics.get(tp.topic, 0) + max(0, high - tp.offset)
        return out
    except (KafkaException, TimeoutError):
        # TimeoutError (= concurrent.futures.TimeoutError): the admin future's own wait ran out before
        # librdkafka's request timeout failed it, the usual way with no broker at all
        raise ServiceUnavailable(f"Kafka at {settings.bootstrap_servers} did not answer within {timeout:.0f}s") from None
    finally:
        probe.close()


class KafkaOutput:
    """Produces to one topic; several outputs of a process share one producer."""

    #: how long send() waits for room in a full local queue before failing the message
    buffer_full_timeout = 30.0

    def __init__(self, producer: Producer, topic: str):
        self.name = f"kafka:{topic}"
        self.topic = topic
        self._producer = producer

    def send(self, value: bytes, key: bytes | None = None, on_delivered: DeliveryCallback | None = None) -> None:
        cb = None
        if on_delivered is not None:

            def cb(err: KafkaError | None, _msg: Any) -> None:
                on_delivered(None if err is None else DeliveryError(f"{self.name}: {err.str()}"))

        give_up = None
        while True:
            try:
                self._producer.produce(self.topic, value, key, on_delivery=cb)
                return
            except BufferError:  # local queue full (broker slow or away): wait, bounded memory
                now = time.monotonic()
                give_up = give_up or now + self.buffer_full_timeout
                if now >= give_up:
                    err = DeliveryError(f"{self.name}: local queue still full after {self.buffer_full_timeout:.0f}s")
                    if on_delivered is None:
                        raise err from None
                    on_delivered(err)
                    return
                self._producer.poll(0.1)
            except KafkaException as e:
                err = DeliveryError(f"{self.name}: {e.args[0].str()}")
                if on_delivered is None:
                    raise err from None
                on_delivered(err)
                return

    def poll(self, timeout: float = 0.0) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        return self._producer.flush(timeout)

    def close(self) -> None:
        self._producer.flush(10.0)


class KafkaInput:
    """Consumes topics in a group; commits only offsets whose outputs are all delivered."""

    def __init__(self, consumer: Consumer, topics: list[str], commit_interval: float = 0.5):
        self.name = f"kafka:{','.join(topics)}"
        self._consumer = consumer
        self._tracker = OffsetTracker()
        self._paused = False
        self._commit_interval = commit_interval
        self._last_commit = time.monotonic()
        self._topics = topics
        self.on_taken_over = None
        """called with the partitions a rebalance hands this member after its first assignment (they
        were another member's: a stage with in-memory state rebuilds it for them before reading on)"""
        self._assigned_before = False
        self._subscribe()

    def _subscribe(self) -> None:
        self._consumer.subscribe(self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)

    # rebalance callbacks (run inside consume())
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._paused and partitions:
            consumer.pause(partitions)
        elif partitions:  # librdkafka keeps a partition's pause across unassign: one paused before a
            consumer.resume(partitions)  # leave (hand-over) would come back paused for good
        if partitions and self._assigned_before and self.on_taken_over is not None:
            self.on_taken_over(sorted({tp.partition for tp in partitions}))
        self._assigned_before = self._assigned_before or bool(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit(sync=True)
        for tp in partitions:
            self._tracker.forget(tp.topic, tp.partition)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._tracker.forget(tp.topic, tp.partition)

    def poll(self, timeout: float, max_records: int = 500) -> list[Record]:
        out = self._records(self._fetch(timeout, max_records))
        if time.monotonic() - self._last_commit >= self._commit_interval:
            self._commit(sync=False)
        return out

    def _fetch(self, timeout: float, max_records: int) -> list:
        """The first message as soon as it arrives (waiting at most `timeout`), then what is already
        buffered, up to `max_records`, without waiting: no added latency at a low rate, batches at a
        high one. (`consume(max_records, timeout)` alone holds the first message until the batch is
        full or the timeout passes: at ordinary rates every message waited ~timeout/2 per hop.)"""
        first = self._consumer.poll(timeout)
        if first is None:
            return []
        if max_records <= 1:
            return [first]
        return [first, *self._consumer.consume(num_messages=max_records - 1, timeout=0)]

    def _records(self, msgs: list) -> list[Record]:
        out: list[Record] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: %s", self.name, err.str())
                continue
            topic, part, off = m.topic(), m.partition(), m.offset()
            self._tracker.read(topic, part, off)
            out.append(Record(value=m.value() or b"", key=m.key(), source=f"kafka:{topic}", topic=topic, partition=part, offset=off))
        return out

    @property
    def exhausted(self) -> bool:
        return False  # a topic never ends

    @property
    def in_flight(self) -> int:
        return self._tracker.in_flight

    def done(self, record: Record) -> None:
        self._tracker.finish(record.topic, record.partition, record.offset)

    def set_paused(self, paused: bool) -> None:
        if paused == self._paused:
            return
        assignment = self._consumer.assignment()
        if assignment:
            (self._consumer.pause if paused else self._consumer.resume)(assignment)
        self._paused = paused

    # hand-over (issue 20.5): a schedule shard that cannot serve leaves the group, the others take its partitions
    def leave(self) -> None:
        """Commit what is done and leave the consumer group (its partitions go to the other members at
        the rebalance this starts). Records read but not done stay uncommitted: their new owner reads
        them again (at-least-once; results carry the task id). A static member (`group.instance.id`)
        sends no LeaveGroup: its partitions move only after session.timeout.ms."""
        self._commit(sync=True)
        assignment = self._consumer.assignment()
        for tp in assignment:
            self._tracker.forget(tp.topic, tp.partition)
        if assignment:
            self._consumer.resume(assignment)  # no pause carried over to whoever holds them next here
        self._consumer.unsubscribe()
        self._consumer.poll(0)  # serves the revoke (incremental, cooperative-sticky) at once

    def rejoin(self) -> None:
        """Join the consumer group again after `leave` (a rebalance hands this member its share)."""
        self._subscribe()

    def _commit(self, sync: bool) -> None:
        """Async while running; sync (every position, even unchanged ones) on revoke and close,
        so an async commit that failed earlier is not lost at the end."""
        self._last_commit = time.monotonic()
        positions = self._tracker.positions() if sync else self._tracker.to_commit()
        if not positions:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=not sync)
            self._tracker.committed(positions)
        except KafkaException as e:
            log.warning("%s: commit failed, will retry: %s", self.name, e.args[0].str())

    def close(self) -> None:
        self._commit(sync=True)
        self._consumer.close()


class KafkaReplay:
    """Reads a topic from a point in time up to the end it had when opened: no group, no commits.

    A stage that keeps state in memory rebuilds it from here on start (spec §10); `ends` tells its
    live input which records the replay already covered (offset < end), so none is applied twice.
    Each record carries its Kafka timestamp (seconds) in `extra["ts"]`.
    """

    def __init__(self, settings: KafkaSettings, topic: str, since_ts: float, timeout: float = 30.0,
                 partitions: set[int] | None = None):
        overrides = {**settings.consumer, "group.id": "hazardctl-replay", "enable.auto.commit": False}
        self._consumer = _make(Consumer, _client_conf(settings, CONSUMER_DEFAULTS, overrides, "replay"), "replay")
        self.topic = topic
        self.ends: dict[tuple[str, int], int] = {}
        self._left: dict[int, int] = {}
        try:
            meta = self._consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if meta is None or meta.error is not None:
                raise ConfigError(f"Kafka topic {topic} does not exist: run `hazardctl setup-topics`")
            wanted = [TopicPartition(topic, p, int(since_ts * 1000)) for p in sorted(meta.partitions)
                      if partitions is None or p in partitions]
            starts = self._consumer.offsets_for_times(wanted, timeout=timeout)
            assign = []
            for tp in starts:
                _low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout)
                self.ends[(topic, tp.partition)] = high
                if 0 <= tp.offset < high:  # -1: nothing written since since_ts
                    assign.append(TopicPartition(topic, tp.partition, tp.offset))
                    self._left[tp.partition] = high
        except KafkaException as e:
            self._consumer.close()
            raise ServiceUnavailable(f"Kafka replay of {topic}: {e.args[0].str()}") from None
        if assign:
            self._consumer.assign(assign)

    def batches(self, max_records: int = 500, timeout: float = 60.0, wait_s: float = 0.05):
        """Yield lists of Records until every partition reached its end (or `timeout` passed).

        `wait_s`: librdkafka's consume() waits that long unless `max_records` arrive, so a long wait
        is paid by every short batch, the last one always (0.5 s made a restart's replay ~0.5 s slower
        per topic; a stage is down while it replays)."""
        deadline = time.monotonic() + timeout
        while self._left and time.monotonic() < deadline:
            out: list[Record] = []
            for m in self._consumer.consume(num_messages=max_records, timeout=wait_s):
                if m.error() is not None:
                    continue
                part, off = m.partition(), m.offset()
                end = self._left.get(part)
                if end is None or off >= end:
                    continue
                ts_type, ts_ms = m.timestamp()
                out.append(Record(value=m.value() or b"", key=m.key(), source=f"kafka:{self.topic}", topic=self.topic,
                                  partition=part, offset=off, extra={"ts": ts_ms / 1000 if ts_type else None}))
                if off >= end - 1:
                    del self._left[part]
            if not out and self._left:  # gaps (e.g. transaction markers): trust the position
                for tp in self._consumer.position([TopicPartition(self.topic, p) for p in self._left]):
                    if tp.offset >= self._left[tp.partition]:
                        del self._left[tp.partition]
            if out:
                yield out
        if self._left:
            log.warning("kafka replay of %s stopped after %.0fs with %d partition(s) unfinished",
                        self.topic, timeout, len(self._left))

    def close(self) -> None:
        self._consumer.close()


class KafkaClients:
    """Creates the consumer and one shared producer for a stage process."""

    def __init__(self, settings: KafkaSettings):
        self.settings = settings
        self._producer: Producer | None = None

    def producer(self) -> Producer:
        if self._producer is None:
            conf = _client_conf(self.settings, PRODUCER_DEFAULTS, self.settings.producer, "producer")
            self._producer = _make(Producer, conf, "producer")
        return self._producer

    def output(self, topic: str) -> KafkaOutput:
        return KafkaOutput(self.producer(), topic)

    def input(self, topics: list[str], group_id: str, stage: str | None = None) -> KafkaInput:
        """The stage's consumer; with `stage`, its lag per partition goes to hazardctl_kafka_consumer_lag."""
        lag = {"statistics.interval.ms": STATISTICS_INTERVAL_MS, "stats_cb": _LagReport(stage)} if stage else {}
        overrides = {"group.id": group_id, **lag, **self.settings.consumer}
        conf = _client_conf(self.settings, CONSUMER_DEFAULTS, overrides, "consumer")
        return KafkaInput(_make(Consumer, conf, "consumer"), topics)

    def replay(self, topic: str, since_ts: float, partitions: set[int] | None = None) -> KafkaReplay:
        """The records of `topic` (of `partitions` only, when given) written since `since_ts` (epoch
        seconds), for rebuilding state."""
        return KafkaReplay(self.settings, topic, since_ts, partitions=partitions)

    def committed(self, topic: str, group_id: str, timeout: float = 30.0) -> dict[int, int]:
        """The consumer group's committed offset per partition of `topic` (partitions without one are
        left out), read without joining the group: what a stage restarting in that group processed."""
        overrides = {**self.settings.consumer, "group.id": group_id, "enable.auto.commit": False}
        consumer = _make(Consumer, _client_conf(self.settings, CONSUMER_DEFAULTS, overrides, "committed"), "committed")
        try:
            meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if meta is None or meta.error is not None:
                raise ConfigError(f"Kafka topic {topic} does not exist: run `hazardctl setup-topics`")
            partitions = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
            deadline = time.monotonic() + timeout
            while True:  # a group coordinator that just moved or is still loading answers "not coordinator"
                try:
                    got = consumer.committed(partitions, timeout=max(1.0, deadline - time.monotonic()))
                    return {tp.partition: tp.offset for tp in got if tp.offset >= 0}
                except KafkaException as e:
                    if not _coordinator_settling(e.args[0]) or time.monotonic() >= deadline:
                        raise
                    time.sleep(0.5)
        except KafkaException as e:
            raise ServiceUnavailable(f"Kafka committed offsets of {group_id} on {topic}: {e.args[0].str()}") from None
        finally:
            consumer.close()
