"""expand over the real local Kafka broker: at-least-once across kill -9, the gate kept across kill -9
(rebuilt from the tasks topic), clean drain, dead letters."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import orjson
import pytest

from hazardctl.deadletter import BadInput
from hazardctl.gating import GateConfig
from hazardctl.messages import AssessmentTask, DeadLetter
from hazardctl.synthetic import detection
from hazardctl.transports.base import Record
from stages.expand import ExpandConfig, Expander
from tests.conftest import HAZARDCTL
from tests.kafka_util import consume_until, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

T0 = 1_800_000_000.0


def detections(cameras: int, frames: int) -> list[tuple[bytes, bytes]]:
    """Frames interleaved across cameras, as a fleet of cameras would publish them."""
    out = []
    for f in range(frames):
        for c in range(cameras):
            d = detection(f"cam-{c:03d}", f, T0 + f * 0.5, groups=3)
            out.append((d.camera_id.encode(), d.model_dump_json().encode()))
    return out


def expected_task_ids(items: list[tuple[bytes, bytes]], cfg: ExpandConfig) -> set[str]:
    """What one uninterrupted run emits; a restarted run may emit more (fresh gate), never fewer."""
    expander = Expander(cfg)
    ids = set()
    for _key, value in items:
        try:
            outputs = expander(Record(value=value))
        except BadInput:
            continue
        ids.update(orjson.loads(task)["task_id"] for _k, task in outputs)
    return ids


def start_expand(env, src: str, dst: str, dlq: str, group: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*HAZARDCTL, "expand", "--in", f"kafka://{src}", "--out", f"kafka://{dst}", "--dlq", f"kafka://{dlq}",
         "--group", group, *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def test_kill9_mid_run_loses_no_task(kafka_bootstrap, make_topic, hazardctl_env):
    src, dst, dlq = make_topic("det", 4), make_topic("tasks", 4), make_topic("dlq", 1)
    group = f"expand-{src}"
    items = detections(cameras=20, frames=60)  # 1200 detections, 3600 groups
    items.insert(300, (b"cam-bad", b'{"truncated": '))
    items.insert(900, (b"cam-bad", b"\xff\xfe not json"))
    # Gate open (refresh 0): every group of every frame is a task, so "none missing" is exact.
    # (With gating, a restarted local engine starts with an empty gate and re-sends groups as new;
    # which frames it picks then differs, so ids would not be comparable.)
    cfg = ExpandConfig(GateConfig(refresh_interval_s=0.0))
    expected = expected_task_ids(items, cfg)
    assert len(expected) == 3600

    proc = start_expand(hazardctl_env, src, dst, dlq, group, "--refresh", "0")
    # detections keep arriving (250/s, ~5 s) while expand runs; it is killed while still busy
    feeder = threading.Thread(target=produce, args=(kafka_bootstrap, src, items), kwargs={"rate": 250})
    feeder.start()
    partial = consume_until(kafka_bootstrap, dst, lambda m: len(m) >= 300, timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert feeder.is_alive(), "the kill must land while input is still arriving"
    assert 300 <= len(partial) < len(expected)
    feeder.join(60)

    proc = start_expand(hazardctl_env, src, dst, dlq, group, "--refresh", "0")
    try:
        def all_there(msgs):
            return expected <= {orjson.loads(m.value())["task_id"] for m in msgs}

        msgs = consume_until(kafka_bootstrap, dst, all_there, timeout=90)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    got = {orjson.loads(m.value())["task_id"] for m in msgs}
    assert expected - got == set(), f"{len(expected - got)} task ids missing after kill -9 and restart"
    assert proc.returncode == 0, err.decode()[-2000:]
    for m in msgs[:50]:
        task = AssessmentTask.model_validate_json(m.value())
        assert m.key() == task.camera_id.encode()  # per-camera order and aggregation

    dead = consume_until(kafka_bootstrap, dlq, lambda m: len(m) >= 2, timeout=20)
    letters = [DeadLetter.model_validate_json(m.value()) for m in dead]
    assert {dl.error_class for dl in letters} == {"malformed_json"}
    assert all(dl.partition is not None and dl.offset is not None and dl.source == f"kafka:{src}" for dl in letters)


def test_kill9_and_restart_keep_the_gate(kafka_bootstrap, make_topic, hazardctl_env):
    """The danger gate across a kill -9: the restarted process rebuilds its gate from the tasks topic and
    the processed input (stages/expand/restore.py), so the tasks are exactly an uninterrupted run's: none
    lost, no group re-sent as `new`, no task twice (the redelivered detections are `stale-replay`)."""
    from collections import Counter

    from tests.flink_util import detections as cued_detections

    src, dst, dlq = make_topic("det", 4), make_topic("tasks", 4), make_topic("dlq", 1)
    group = f"expand-{src}"
    items = cued_detections(cameras=12, frames=200, cues=True)  # 100 s of 12 cameras: suspect, calm, plain
    expander = Expander(ExpandConfig())
    want: Counter = Counter()
    for _key, value in items:
        want.update((t["task_id"], t["reason"]) for t in map(orjson.loads, (v for _k, v in expander(Record(value)))))
    assert {r for _i, r in want} == {"suspect", "new", "changed", "refresh"}

    proc = start_expand(hazardctl_env, src, dst, dlq, group)
    feeder = threading.Thread(target=produce, args=(kafka_bootstrap, src, items), kwargs={"rate": 300})
    feeder.start()
    partial = consume_until(kafka_bootstrap, dst, lambda m: len(m) >= sum(want.values()) // 3, timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert feeder.is_alive(), "the kill must land while input is still arriving"
    assert len(partial) < sum(want.values())

    proc = start_expand(hazardctl_env, src, dst, dlq, group)
    try:
        msgs = consume_until(kafka_bootstrap, dst, lambda m: len(m) >= sum(want.values()), timeout=90)
        feeder.join(60)
        time.sleep(2)  # anything extra would show now
        msgs = consume_until(kafka_bootstrap, dst, lambda m: False, timeout=3)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"gate rebuilt from" in err and b"gate rebuilt from 0 tasks" not in err, err.decode()[-2000:]
    got = Counter((t["task_id"], t["reason"]) for t in (orjson.loads(m.value()) for m in msgs))
    assert got == want, f"lost {sum((want - got).values())}, extra {sum((got - want).values())}: {(got - want).most_common(5)}"
    new = Counter((t["camera_id"], t["group"]["group_id"]) for t in (orjson.loads(m.value()) for m in msgs)
                  if t["reason"] == "new")
    assert max(new.values()) == 1, "no group is re-sent as new after the restart"


def test_sigterm_drains_and_commits_everything(kafka_bootstrap, make_topic, hazardctl_env):
    from confluent_kafka import Consumer, TopicPartition

    src, dst, dlq = make_topic("det", 2), make_topic("tasks", 2), make_topic("dlq", 1)
    group = f"expand-{src}"
    items = detections(cameras=8, frames=25)
    produce(kafka_bootstrap, src, items)
    proc = start_expand(hazardctl_env, src, dst, dlq, group)
    expected = expected_task_ids(items, ExpandConfig())
    consume_until(kafka_bootstrap, dst, lambda m: len(m) >= len(expected), timeout=60)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]

    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        committed = c.committed([TopicPartition(src, p) for p in range(2)], timeout=10)
        ends = [c.get_watermark_offsets(TopicPartition(src, p), timeout=10)[1] for p in range(2)]
    finally:
        c.close()
    assert sum(ends) == len(items)
    # an empty partition has no committed offset (-1001): nothing to commit there
    assert [tp.offset if e else 0 for tp, e in zip(committed, ends)] == ends, "all offsets committed on SIGTERM"


def test_unreachable_broker_is_one_clear_line(hazardctl_env):
    env = dict(hazardctl_env, HAZARDCTL_KAFKA_BOOTSTRAP="127.0.0.1:1")
    p = subprocess.run([*HAZARDCTL, "setup-topics", "--timeout", "2"], env=env, capture_output=True, timeout=60)
    assert p.returncode == 3
    lines = [ln for ln in p.stderr.decode().splitlines() if ln.strip()]
    assert len(lines) == 1 and "did not answer" in lines[0] and "127.0.0.1:1" in lines[0]


def test_setup_topics_is_idempotent_and_reports_drift(kafka_bootstrap, make_topic, hazardctl_env, tmp_path):
    import uuid

    names = [f"test-setup-{uuid.uuid4().hex[:8]}-{i}" for i in range(2)]
    cfg = tmp_path / "topics.yaml"
    cfg.write_text(json.dumps({"replication_factor": 3, "topics": [
        {"name": names[0], "partitions": 3, "config": {"retention.ms": "3600000"}},
        {"name": names[1], "partitions": 2, "config": {}},
    ]}))
    run = lambda *a: subprocess.run([*HAZARDCTL, "setup-topics", "--topics", str(cfg), *a], env=hazardctl_env,
                                    capture_output=True, timeout=60)
    try:
        dry = run("--dry-run")
        assert dry.returncode == 0 and dry.stdout.decode().count("would create") == 2
        first = run()
        assert first.returncode == 0, first.stderr.decode()
        assert first.stdout.decode().count("create") == 2
        assert "replication_factor 3 > 1 broker" in first.stderr.decode()  # clamped with a warning
        second = run()
        assert second.returncode == 0
        assert "nothing to change" in second.stdout.decode()
        assert "create" not in second.stdout.decode()

        wrong = make_topic("wrongparts", 5)
        cfg.write_text(json.dumps({"replication_factor": 1, "topics": [{"name": wrong, "partitions": 16}]}))
        drift = run()
        assert drift.returncode == 5
        assert "DRIFT" in drift.stdout.decode() and "partitions 5 (config: 16)" in drift.stderr.decode()
    finally:
        from confluent_kafka.admin import AdminClient

        AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics(names)
