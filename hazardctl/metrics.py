"""Prometheus metrics shared by every stage (spec §8); stage-specific ones live with their stage.

All series carry a `stage` label so one Grafana panel can show the whole pipeline.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from hazardctl.errors import ConfigError

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)

MESSAGES_IN = Counter("hazardctl_messages_in_total", "Messages read by a stage", ["stage"])
MESSAGES_OUT = Counter("hazardctl_messages_out_total", "Messages written by a stage", ["stage"])
DEAD_LETTERS = Counter("hazardctl_dead_letters_total", "Inputs turned into dead letters", ["stage", "reason"])
DELIVERY_FAILURES = Counter(
    "hazardctl_delivery_failures_total", "Messages the transport could not deliver", ["stage", "output"]
)
STAGE_LATENCY = Histogram(
    "hazardctl_stage_latency_seconds", "Time a stage spent on one input", ["stage"], buckets=LATENCY_BUCKETS
)
IN_FLIGHT = Gauge("hazardctl_in_flight", "Inputs read but not yet finished", ["stage"])
PAUSED = Gauge("hazardctl_input_paused", "1 while the input is paused for backpressure", ["stage"])
SUPPRESSED_GROUPS = Counter("hazardctl_suppressed_groups_total", "Groups not sent by the gate", ["stage"])
COMMITS = Counter("hazardctl_offset_commits_total", "Kafka offset commits", ["stage"])
KAFKA_CONSUMER_LAG = Gauge(
    "hazardctl_kafka_consumer_lag",
    "Records between the group's committed offset and the partition's end, per assigned partition "
    "(librdkafka statistics, every statistics.interval.ms)",
    ["stage", "topic", "partition"],
)


def serve_metrics(port: int | None, host: str = "0.0.0.0") -> None:
    """Expose /metrics on `port` (no-op when None)."""
    if port is None:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as e:
        raise ConfigError(f"--metrics-port {port}: cannot listen ({e.strerror})") from None
