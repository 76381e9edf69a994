"""The whole pipeline over the real local Kafka broker: detect → expand → schedule → consume.

The same four real `hazardctl` processes as tests/e2e/test_pipeline_page.py, joined by Kafka topics
instead of pipes (unique names per run; detections, tasks and results 4 partitions each, dead
letters 1), each with its own consumer group. The real CenterNet detector reads a real photo; the
scheduler has no key configured, so it starts the simulated LLM by itself (the only stand-in: no
real LLM or API key is reachable here). Checked: consume's HTTP API shows the camera with results
whose stage times are in pipeline order; the results topic holds RiskAssessmentResults with status
ok keyed by the camera id, among them every result consume showed; nothing reached the dead-letter
topic; SIGTERM stops every stage with exit 0.
"""

from __future__ import annotations

import uuid

import pytest

from hazardctl.messages import RiskAssessmentResult
from tests.conftest import ROOT
from tests.pipeline_proc import (
    CAMERA,
    IMAGE,
    MODEL,
    Stage,
    assert_times_ordered,
    http_json,
    serving_port,
    stage_env,
    wait_until,
)
from tests.kafka_util import consume_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]

KAFKA_CONFIG = ["--kafka-config", str(ROOT / "config" / "kafka.yaml")]


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """High watermark of every partition of `topic`: how many records it ever received."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4().hex}"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


def test_kafka_pipeline_delivers_ordered_results_to_consume(kafka_bootstrap, make_topic, hazardctl_env, tmp_path):
    if not MODEL.is_file():
        pytest.skip(f"no detector model at {MODEL.relative_to(ROOT)}: run `make models` (make test fetches it)")
    detections, tasks = make_topic("e2e-detections", 4), make_topic("e2e-tasks", 4)
    results, dead = make_topic("e2e-results", 4), make_topic("e2e-dead", 1)
    run = uuid.uuid4().hex[:8]
    env = stage_env(hazardctl_env)
    dlq = ["--dlq", f"kafka://{dead}"]
    stages: list[Stage] = []
    try:
        # downstream first, so each stage is in its group by the time its input arrives
        consume = Stage("consume", ["--in", f"kafka://{results}", "--ws", "127.0.0.1:0", "--min-level", "low",
                                    "--replay", "0", "--group", f"e2e-consume-{run}", *dlq, *KAFKA_CONFIG],
                        tmp_path, env=env, cwd=ROOT)
        stages.append(consume)
        # cwd = an empty folder: no config/api_keys.yaml there and HAZARDCTL_KEYS unset → the simulated LLM
        schedule = Stage("schedule", ["--in", f"kafka://{tasks}", "--out", f"kafka://{results}",
                                      "--group", f"e2e-schedule-{run}", *dlq, *KAFKA_CONFIG],
                         tmp_path, env=env, cwd=tmp_path)
        stages.append(schedule)
        # the looping still image is a calm scene (nothing moves): refresh it every second like any other group
        expand = Stage("expand", ["--in", f"kafka://{detections}", "--out", f"kafka://{tasks}", "--refresh", "1",
                                  "--calm-refresh", "1", "--group", f"e2e-expand-{run}", *dlq, *KAFKA_CONFIG],
                       tmp_path, env=env, cwd=ROOT)
        stages.append(expand)
        detect = Stage("detect", ["--source", str(IMAGE), "--camera-id", CAMERA, "--loop", "--fps", "2",
                                  "--conf", "0.3", "--model", str(MODEL), "--out", f"kafka://{detections}",
                                  *KAFKA_CONFIG],
                       tmp_path, env=env, cwd=ROOT)
        stages.append(detect)

        port = serving_port(consume, stages)
        wait_until(lambda: "SIMULATED LLM" in schedule.text(), 30, "schedule to start the simulated LLM", stages)

        def two_ok_results() -> list[dict]:  # 404 until the camera's first result
            status, view = http_json(port, f"/cameras/{CAMERA}")
            ok = [r for r in view["recent_results"] if r["status"] == "ok"] if status == 200 else []
            return ok if len(ok) >= 2 else []

        seen = wait_until(two_ok_results, 60, f"consume to show ok results of {CAMERA}", stages)
        for r in seen:
            assert r["camera_id"] == CAMERA and r["key_name"].startswith("sim-key-")
            assert_times_ordered(r)
        status, health = http_json(port, "/healthz")
        assert status == 200 and health["input"] == "running" and health["dead_letters"] == 0, health

        for s in stages[::-1]:  # head first: what detect still delivers on its way out is drained downstream
            s.terminate()
        codes = {s.name: s.wait(30) for s in stages[::-1]}
        assert codes == {"detect": 0, "expand": 0, "schedule": 0, "consume": 0}, \
            f"{codes}\n" + "\n".join(s.tail() for s in stages)
        for s in stages:
            assert "Traceback" not in s.text(), s.tail(40)

        # the results topic: RiskAssessmentResults, status ok, keyed by the camera; consume showed some of them
        total = sum(end_offsets(kafka_bootstrap, results).values())
        assert total >= len(seen)
        msgs = consume_until(kafka_bootstrap, results, lambda ms: len(ms) >= total, timeout=30)
        assert len(msgs) == total
        parsed = [RiskAssessmentResult.model_validate_json(m.value()) for m in msgs]
        assert {m.key() for m in msgs} == {CAMERA.encode()}
        assert {p.status for p in parsed} == {"ok"} and {p.camera_id for p in parsed} == {CAMERA}
        assert {r["task_id"] for r in seen} <= {p.task_id for p in parsed}
        for p in parsed:
            assert_times_ordered(p.model_dump(mode="json"))

        # nothing went to the dead-letter topic, from any stage
        assert end_offsets(kafka_bootstrap, dead) == {0: 0}
        # and the detections did go through Kafka, keyed by the camera
        first = consume_until(kafka_bootstrap, detections, lambda ms: len(ms) >= 1, timeout=30)
        assert first and first[0].key() == CAMERA.encode()
    finally:
        for s in reversed(stages):
            s.terminate()
        for s in reversed(stages):
            if s.wait(10) is None:
                s.kill()
            s.kill()  # also reaps anything left in its process group (schedule's simulator)
