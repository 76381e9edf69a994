"""Prometheus metrics of the simulator (`hazardctl llm-sim --metrics-port N`), read from its stats at scrape time.

A collector rather than per-request counters, so serving costs nothing extra. Every series has
`stage="llm-sim"`; `scope` is `key` or `account`, `name` the key's or account's name (never a secret).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

STAGE = "llm-sim"
REASONS = ("rate", "tokens", "surge", "storm", "billing")


class SimCollector(Collector):
    def __init__(self, stats: Callable[[], dict[str, Any]]):
        self.stats = stats

    def collect(self) -> Iterator[Any]:
        s = self.stats()
        labels = ["stage", "scope", "name"]
        requests = CounterMetricFamily("hazardctl_llm_sim_requests", "Requests that reached the simulator", labels=labels)
        admitted = CounterMetricFamily("hazardctl_llm_sim_admitted", "Requests admitted by the limits", labels=labels)
        tokens = CounterMetricFamily("hazardctl_llm_sim_tokens", "Tokens of admitted requests (prompt + completion)",
                                     labels=labels)
        refused = CounterMetricFamily("hazardctl_llm_sim_refused", "Requests refused, by reason",
                                      labels=labels + ["reason"])
        ok = CounterMetricFamily("hazardctl_llm_sim_answers_ok",
                                 "Answers sent (200, no malformed fault; the --answer-mix wording is not judged)",
                                 labels=labels)
        peak = GaugeMetricFamily("hazardctl_llm_sim_max_requests_in_1s",
                                 "Most requests that reached the limiter in any 1 s sliding window", labels=labels)
        in_flight = GaugeMetricFamily("hazardctl_llm_sim_in_flight", "Requests being answered", labels=labels)
        for scope, rows in (("key", s["keys"]), ("account", s["accounts"])):
            for name, row in rows.items():
                lv = [STAGE, scope, name]
                requests.add_metric(lv, row["requests"])
                admitted.add_metric(lv, row["admitted"])
                tokens.add_metric(lv, row["tokens_admitted"])
                ok.add_metric(lv, row["ok"])
                for reason in REASONS:
                    refused.add_metric(lv + [reason], row[f"refused_{reason}"])
                peak.add_metric(lv, row["max_in_any_1s_window"])
                in_flight.add_metric(lv, row["in_flight"])
        yield from (requests, admitted, tokens, refused, ok, peak, in_flight)
