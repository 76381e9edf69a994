"""Prometheus metrics shared by every stage (spec §8); stage-specific ones live with their stage.

All series carry a `stage` label so one Grafana panel can show the whole pipeline.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

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
SUPPRESSED_GROUPS = Counter("hazardctl_suppressed_groups_total", "Groups not sent by the gate, by why", ["stage", "reason"])
COMMITS = Counter("hazardctl_offset_commits_total", "Kafka offset commits", ["stage"])
KAFKA_CONSUMER_LAG = Gauge(
    "hazardctl_kafka_consumer_lag",
    "Records between the group's committed offset and the partition's end, per assigned partition "
    "(librdkafka statistics, every statistics.interval.ms)",
    ["stage", "topic", "partition"],
)

#: a hop is milliseconds on a healthy pipeline and seconds when something waits (0.5 ms … 10 s)
HOP_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5,
               1, 2.5, 5, 10)
#: capture → a point of the pipeline: tens of ms without the LLM, seconds with it
E2E_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 4, 5,
               7.5, 10, 15, 30)
HOP_LATENCY = Histogram(
    "hazardctl_hop_latency_seconds",
    "Time from one stamp of a message's `times` record to the next (hop FROM_to_TO), observed by the stage "
    "that takes the later one; stamps from other hosts' clocks, a negative hop counts as 0",
    ["stage", "hop"], buckets=HOP_BUCKETS,
)
HOP_NEGATIVE = Counter(
    "hazardctl_hop_negative_total", "Hops whose later stamp came first (hosts' clocks apart), observed as 0",
    ["stage", "hop"],
)
E2E_LATENCY = Histogram(
    "hazardctl_e2e_latency_seconds",
    "Frame capture → a point of the pipeline (span): capture_to_result (schedule, also _excl_llm and "
    "_excl_llm_key_wait), capture_to_alert and capture_to_ws_send (consume)",
    ["stage", "span"], buckets=E2E_BUCKETS,
)


class Hops:
    """One stage's view of the `times` record: `hop("published", "expand", t0, t1)` observes t1 − t0 in
    hazardctl_hop_latency_seconds{stage, hop="published_to_expand"}; `span(name, s)` the end-to-end ones.
    Stamps are time.time() of possibly different hosts: a negative hop is clamped to 0 and counted."""

    def __init__(self, stage: str):
        self.stage = stage
        self._hops: dict[tuple[str, str], tuple] = {}
        self._spans: dict[str, object] = {}

    def hop(self, src: str, dst: str, start: float | None, end: float | None) -> None:
        if start is None or end is None:
            return
        m = self._hops.get((src, dst))
        if m is None:
            name = f"{src}_to_{dst}"
            m = self._hops[(src, dst)] = (HOP_LATENCY.labels(self.stage, name), HOP_NEGATIVE.labels(self.stage, name))
        d = end - start
        if d < 0:
            m[1].inc()
            d = 0.0
        m[0].observe(d)

    def span(self, name: str, seconds: float) -> None:
        m = self._spans.get(name)
        if m is None:
            m = self._spans[name] = E2E_LATENCY.labels(self.stage, name)
        m.observe(max(0.0, seconds))


METRICS_BIND_HELP = ("Address the --metrics-port listener binds (default 127.0.0.1, this host only); "
                     "0.0.0.0 or an interface address when Prometheus scrapes from another host.")


def serve_metrics(port: int | None, host: str = "127.0.0.1", token: str | None = None) -> int | None:
    """Expose /metrics on `host`:`port` (no-op when `port` is None); returns the bound port.

    Loopback by default: metrics have no authentication of their own, so widening the address is a
    decision (`--metrics-bind`). With `token` every request must carry `Authorization: Bearer TOKEN`
    (consume's --token-file), else 401."""
    if port is None:
        return None
    import hmac
    from wsgiref.simple_server import make_server

    from prometheus_client import REGISTRY, make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer, _get_best_family, _SilentHandler

    app = make_wsgi_app(REGISTRY)
    if token is not None:
        expected, metrics_app = f"Bearer {token}".encode(), app

        def app(environ, start_response):  # noqa: F811 — the same app behind the token
            presented = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
            if hmac.compare_digest(presented, expected):
                return metrics_app(environ, start_response)
            start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                                ("WWW-Authenticate", 'Bearer realm="hazardctl"')])
            return [b"a bearer token is required (Authorization: Bearer TOKEN)\n"]

    try:
        family, _addr = _get_best_family(host, port)  # IPv6 for "::1"; a name resolved

        class Server(ThreadingWSGIServer):
            address_family = family

        httpd = make_server(host, port, app, Server, handler_class=_SilentHandler)
    except OSError as e:
        raise ConfigError(f"--metrics-port {port} (--metrics-bind {host}): cannot listen ({e.strerror})") from None
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    return httpd.server_port
