"""`expand --from-time` over the real broker (issue 22.4): the stage's group, which had read everything,
is rewound and expand turns exactly the detections written from that time into tasks — the same set
an outside confluent-kafka client lists by timestamp — with its gate starting empty (a restored gate
would hold every replayed group as `stale-replay`)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from hazardctl.synthetic import detection
from tests.test_schedule_replay_kafka import _collect_then_stop, _group_that_read_everything, _iso, _produce_at, \
    _records_since

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def test_expand_from_time_rereads_exactly_the_detections_from_that_time(kafka_bootstrap, make_topic,
                                                                        hazardctl_env, tmp_path):
    t_in, t_out = make_topic("from-det", 4), make_topic("from-tasks", 4)
    now = time.time()
    dets = [detection(f"cam-{i:02d}", 1, now - 300 + 4 * i, groups=1) for i in range(40)]
    _produce_at(kafka_bootstrap, t_in, [(d.camera_id.encode(), d.model_dump_json().encode(),
                                         int(d.frame_ts * 1000)) for d in dets])
    group = _group_that_read_everything(kafka_bootstrap, t_in, 4)
    since_ms = int(dets[22].frame_ts * 1000)
    since = _iso(since_ms)
    expected = _records_since(kafka_bootstrap, t_in, since_ms, field="message_id")
    assert len(expected) == 18

    log = tmp_path / "expand.log"
    proc = subprocess.Popen([sys.executable, "-m", "hazardctl.cli", "expand", "--in", f"kafka://{t_in}",
                             "--out", f"kafka://{t_out}", "--dlq", "stderr", "--group", group, "--from-time", since,
                             "--deadline", "3600"],
                            env=hazardctl_env, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    tasks = _collect_then_stop(proc, log, kafka_bootstrap, t_out, len(expected))
    assert sorted(t["detection_id"] for t in tasks) == sorted(expected)  # each once, none before the time
    assert {t["reason"] for t in tasks} == {"new"}
    assert "18 records to read again" in log.read_text(), log.read_text()[-2000:]
