"""Two local expand instances in one consumer group over the real broker: when one leaves, the other
takes its partitions and first rebuilds the gate entries of their cameras from what the leaver sent
(stages/expand/restore.take_over), so their groups are not sent again as `new` (a burst of LLM calls for
scenes the model has just judged). The same run without the rebuild would send every such group again."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.flink_util import T0
from tests.kafka_util import produce
from tests.test_schedule_kafka import Collector
from hazardctl.synthetic import detection

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(150)]
CAMERAS = 8


def frames(first: int, last: int) -> list[tuple[bytes, bytes]]:
    """Frames first..last of every camera, 0.5 s apart in event time: each camera one slowly drifting group."""
    return [(f"cam-{c}".encode(), detection(f"cam-{c}", f, T0 + f * 0.5, groups=1, seed=c).model_dump_json().encode())
            for f in range(first, last + 1) for c in range(CAMERAS)]


def start(name: str, det: str, tasks: str, group: str, env: dict, tmp_path) -> tuple[subprocess.Popen, object]:
    log = (tmp_path / f"{name}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "hazardctl.cli", "expand", "--in", f"kafka://{det}",
                             "--out", f"kafka://{tasks}", "--dlq", "stderr", "--group", group, "--deadline", "1e9"],
                            env={**env, "HAZARDCTL_LOG_LEVEL": "INFO"}, stdout=subprocess.DEVNULL, stderr=log)
    return proc, tmp_path / f"{name}.log"


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_instance_left_standing_does_not_resend_the_leavers_groups(kafka_bootstrap, make_topic, hazardctl_env,
                                                                       tmp_path):
    det, tasks = make_topic("to-det", 4), make_topic("to-tasks", 4)
    group = f"expand-{det}"
    a, a_log = start("a", det, tasks, group, hazardctl_env, tmp_path)
    b, b_log = start("b", det, tasks, group, hazardctl_env, tmp_path)
    col = Collector(kafka_bootstrap, [tasks])
    try:
        time.sleep(6)  # both joined: two partitions each
        produce(kafka_bootstrap, det, frames(0, 7))
        wait_for(lambda: col.poll(0.3) or len(col.by_topic[tasks]) >= CAMERAS, 30, "a new task per camera")
        time.sleep(2)  # and the rest of frames 0..7 processed (3.5 s of event time: no refresh yet)
        col.poll(0.5)
        before = Counter(t["reason"] for t in col.by_topic[tasks])
        assert before == {"new": CAMERAS}, before

        a.send_signal(signal.SIGTERM)  # leaves the group: b is handed a's partitions
        assert a.wait(30) == 0, a_log.read_text()[-2000:]
        try:  # the rebalance takes a few seconds; the take-over is asserted below, after what matters
            wait_for(lambda: "took over partitions" in b_log.read_text(), 12, "b to take a's partitions over")
        except AssertionError:
            pass
        produce(kafka_bootstrap, det, frames(8, 17))  # up to 8.5 s of event time
        time.sleep(5)
        col.poll(1.0)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (a, b):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        col.close()
    after = Counter(t["reason"] for t in col.by_topic[tasks]) - before
    # refreshes come on each group's phase grid as they would have on the leaver; nothing is new again
    assert after["new"] == 0, f"sent again as new after the take-over: {after}"
    (line,) = [x for x in b_log.read_text().splitlines() if "took over partitions" in x]
    print(line)
    assert "(4 cameras)" in line and "from 4 tasks" in line
