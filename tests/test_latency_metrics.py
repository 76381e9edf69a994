"""Per-hop latency on /metrics during a real run (issue 13).

detect (the real detector on a real photo), expand, schedule (the simulated LLM it starts by itself)
and consume run as real `hazardctl` processes over the real broker, each with its own
--metrics-port. Besides detect's own, synthetic detections stamped like detect stamps them go into
the detections topic until results reach consume; then each stage's
/metrics is scraped with a real HTTP client and must hold non-empty hop histograms for exactly the
hops that stage closes (hazardctl_hop_latency_seconds{stage,hop}), in ms-level buckets, and the
end-to-end spans (hazardctl_e2e_latency_seconds{stage,span}).
"""

from __future__ import annotations

import socket
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from hazardctl.synthetic import detection
from tests.conftest import ROOT
from tests.pipeline_proc import IMAGE, MODEL, Stage, serving_port, stage_env, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(150)]

KAFKA_CONFIG = ["--kafka-config", str(ROOT / "config" / "kafka.yaml")]
HOPS = {
    "detect": {"capture_to_detect", "detect_to_published"},
    "expand": {"published_to_expand"},
    "schedule": {"expand_to_dequeue", "dequeue_to_llm_start", "llm_start_to_llm_end", "llm_end_to_result"},
    "consume": {"result_to_alert", "alert_to_ws_send"},
}
SPANS = {
    "schedule": {"capture_to_result", "capture_to_result_excl_llm", "capture_to_result_excl_llm_key_wait"},
    "consume": {"capture_to_alert", "capture_to_ws_send"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """{sample name: {labels as sorted tuple: value}} from a real HTTP GET of /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def counts(samples: dict, metric: str, stage: str, label: str) -> dict[str, float]:
    """{hop or span: observation count} of one stage."""
    found = {}
    for labels, value in samples.get(f"{metric}_count", {}).items():
        d = dict(labels)
        if d.get("stage") == stage:
            found[d[label]] = value
    return found


def scrape_or_empty(port: int) -> dict:
    try:
        return scrape(port)
    except OSError:
        return {}


def test_each_stage_shows_its_hop_histograms_on_metrics(kafka_bootstrap, make_topic, hazardctl_env, tmp_path):
    detections, tasks = make_topic("lat-det", 2), make_topic("lat-tasks", 2)
    results, dead = make_topic("lat-results", 2), make_topic("lat-dead", 1)
    run = uuid.uuid4().hex[:8]
    env = stage_env(hazardctl_env)
    dlq = ["--dlq", f"kafka://{dead}"]
    if not MODEL.is_file():
        pytest.skip(f"no detector model at {MODEL.relative_to(ROOT)}: run `make models` (make test fetches it)")
    ports = {name: free_port() for name in ("detect", "expand", "schedule", "consume")}
    stages: list[Stage] = []
    try:
        consume = Stage("consume", ["--in", f"kafka://{results}", "--ws", "127.0.0.1:0", "--min-level", "low",
                                    "--replay", "0", "--group", f"lat-consume-{run}",
                                    "--metrics-port", str(ports["consume"]), *dlq, *KAFKA_CONFIG],
                        tmp_path, env=env, cwd=ROOT)
        stages.append(consume)
        schedule = Stage("schedule", ["--in", f"kafka://{tasks}", "--out", f"kafka://{results}",
                                      "--group", f"lat-schedule-{run}", "--metrics-port", str(ports["schedule"]),
                                      *dlq, *KAFKA_CONFIG],
                         tmp_path, env=env, cwd=tmp_path)  # no keys file here: the simulated LLM
        stages.append(schedule)
        expand = Stage("expand", ["--in", f"kafka://{detections}", "--out", f"kafka://{tasks}", "--refresh", "0",
                                  "--group", f"lat-expand-{run}", "--metrics-port", str(ports["expand"]),
                                  *dlq, *KAFKA_CONFIG],
                       tmp_path, env=env, cwd=ROOT)
        stages.append(expand)
        detect = Stage("detect", ["--source", str(IMAGE), "--camera-id", "lat-bus", "--loop", "--fps", "2",
                                  "--conf", "0.3", "--model", str(MODEL), "--out", f"kafka://{detections}",
                                  "--metrics-port", str(ports["detect"]), *KAFKA_CONFIG],
                       tmp_path, env=env, cwd=ROOT)
        stages.append(detect)
        serving_port(consume, stages)
        wait_until(lambda: "SIMULATED LLM" in schedule.text(), 30, "schedule to start the simulated LLM", stages)

        # detections stamped as detect stamps them, until results have reached consume
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
        frame = 0

        def results_at_consume() -> bool:
            nonlocal frame
            now = time.time()
            det = detection(f"lat-cam-{frame % 3}", frame, now - 0.02, groups=1)
            det.times.detect, det.times.published = now - 0.01, now
            producer.produce(detections, det.model_dump_json().encode(), det.camera_id.encode())
            producer.flush(10)
            frame += 1
            seen = counts(scrape_or_empty(ports["consume"]), "hazardctl_hop_latency_seconds", "consume", "hop")
            if seen.get("result_to_alert", 0) < 3:
                return False
            published = counts(scrape_or_empty(ports["detect"]), "hazardctl_hop_latency_seconds", "detect", "hop")
            return published.get("detect_to_published", 0) >= 1

        wait_until(results_at_consume, 90, "results to reach consume and detect to publish", stages)

        for stage, hops in HOPS.items():
            samples = scrape(ports[stage])
            seen = counts(samples, "hazardctl_hop_latency_seconds", stage, "hop")
            assert set(seen) == hops, f"{stage}: hops {sorted(seen)}, expected {sorted(hops)}"
            assert all(n > 0 for n in seen.values()), f"{stage}: {seen}"
            buckets = {dict(k)["le"] for k in samples["hazardctl_hop_latency_seconds_bucket"]}
            assert {"0.0005", "0.001", "10.0"} <= buckets, "ms-level buckets from 0.5 ms to 10 s"
            spans = counts(samples, "hazardctl_e2e_latency_seconds", stage, "span")
            assert set(spans) == SPANS.get(stage, set()), f"{stage}: spans {sorted(spans)}"
            assert all(n > 0 for n in spans.values()), f"{stage}: {spans}"
        # the simulated LLM answers in 1–2 s: the LLM hop's sum says so, the Kafka hops are far below it
        sched = scrape(ports["schedule"])["hazardctl_hop_latency_seconds_sum"]
        llm = next(v for k, v in sched.items() if dict(k)["hop"] == "llm_start_to_llm_end")
        n = counts(scrape(ports["schedule"]), "hazardctl_hop_latency_seconds", "schedule", "hop")["llm_start_to_llm_end"]
        assert 0.9 <= llm / n <= 3.0, f"mean LLM hop {llm / n:.2f}s"
    finally:
        for s in reversed(stages):
            s.terminate()
        for s in reversed(stages):
            if s.wait(15) is None:
                s.kill()
            s.kill()
