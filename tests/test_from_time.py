"""`--from-time` (issue 22): parsing, the refusals, and the deadline a replayed task is judged by. Pure."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from hazardctl.errors import ConfigError
from hazardctl.from_time import check_retention, parse_from_time
from stages.schedule import replay_deadline
from tests.test_schedule_stage import tasks

NOW = datetime(2026, 12, 7, 2, 0, 0, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("text, seconds_ago", [
    ("-2h", 7200), ("-15m", 900), ("-90s", 90), ("-1h30m", 5400), ("-1d", 86400), ("-0.5h", 1800),
    ("2026-12-07T01:00:00Z", 3600), ("2026-12-07T09:00:00+08:00", 3600), ("2026-12-07 01:30", 1800),
    ("2026-12-07T01:59:59.500Z", 0.5),
])
def test_times_and_durations(text, seconds_ago):
    assert parse_from_time(text, NOW) == pytest.approx(NOW - seconds_ago)


@pytest.mark.parametrize("text, line", [
    ("2026-12-07T03:00:00Z", "is in the future (2026-12-07T03:00:00Z; now 2026-12-07T02:00:00Z)"),
    ("+2h", "expected ISO 8601"), ("-", "expected ISO 8601"), ("two hours ago", "expected ISO 8601"),
])
def test_refusals_are_one_line(text, line):
    with pytest.raises(ConfigError) as e:
        parse_from_time(text, NOW)
    assert line in str(e.value) and "\n" not in str(e.value)


def test_a_time_before_retention_is_refused_and_unlimited_retention_is_not():
    with pytest.raises(ConfigError, match=r"before what topic t keeps \(retention.ms=3600000"):
        check_retention("-2h", NOW - 7200, NOW, "t", 3_600_000)
    check_retention("-2h", NOW - 7200, NOW, "t", 3 * 3_600_000)
    check_retention("-2h", NOW - 7200, NOW, "t", -1)  # kept forever
    check_retention("-2h", NOW - 7200, NOW, "t", None)  # not readable: the broker decides


def test_a_replayed_task_gets_its_deadline_budget_from_when_it_is_read():
    (old,) = tasks(1, deadline_s=10, now=NOW - 3600)  # made an hour ago: deadline long past
    old = old.model_copy(update={"times": old.times.model_copy(update={"capture": NOW - 3600, "expand": NOW - 3600})})
    assert replay_deadline(old, replay_before=NOW - 5, now=NOW) == pytest.approx(NOW + 10)
    assert replay_deadline(old, replay_before=None, now=NOW) == old.deadline  # no --from-time: its own
    (live,) = tasks(1, deadline_s=10, now=NOW)  # made after the stage started: its own deadline
    live = live.model_copy(update={"times": live.times.model_copy(update={"expand": NOW})})
    assert replay_deadline(live, replay_before=NOW - 5, now=NOW + 3) == live.deadline


@pytest.mark.parametrize("stage, args, line", [
    ("expand", ["--in", "-", "--from-time", "-1h"], "--from-time needs a kafka:// input"),
    ("expand", ["--in", "kafka://detection-results", "--from-time", "2999-01-01T00:00:00Z"], "is in the future"),
    ("expand", ["--in", "kafka://detection-results", "--from-time", "-1h", "--engine", "flink", "--from-savepoint",
                "/tmp/sp"], "--from-time and --from-savepoint"),
    ("consume", ["--in", "-", "--from-time", "-1h", "--ws", "127.0.0.1:0"], "--from-time needs a kafka:// input"),
    ("consume", ["--in", "kafka://risk-assessment-results", "--from-time", "soon", "--ws", "127.0.0.1:0"],
     "expected ISO 8601"),
])
def test_every_kafka_input_takes_from_time_and_refuses_before_starting(stage, args, line):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, "-m", "hazardctl.cli", stage, *args], capture_output=True, text=True,
                       timeout=60, cwd=root, env={**os.environ, "PYTHONPATH": str(root),
                                                 "HAZARDCTL_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, input="")
    err = p.stderr.strip()
    assert p.returncode == 2 and line in err and len(err.splitlines()) == 1, err
