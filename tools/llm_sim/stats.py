"""What the simulator saw: counters per key and per account, and a log of the last requests.

Tests and benchmarks read these (`GET /stats`, `GET /requests`) to check how a client behaved:
did it pace itself (the busiest 1 s window), stop using a revoked key, send what it should.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from tools.llm_sim.limits import RateWindow

COUNTERS = (
    "requests", "admitted", "ok", "rate_limited_429", "refused_rate", "refused_tokens", "refused_surge",
    "refused_storm", "refused_billing", "refused_at_account", "unauthorized_401", "server_errors_5xx", "timeouts",
    "malformed", "bad_requests_400", "too_large_413", "latency_spikes", "requests_after_first_401", "tokens_admitted",
)


class ScopeStats:
    """What one key (or account, or the unknown keys) saw.

    `max_in_any_1s_window`: the most requests that reached the limiter in any window (t − 1, t]
    (what a provider's sliding window would have seen; 429 storms and billing refusals come before
    the limiter and are not in it); `max_admitted_in_any_1s_window`: the same
    for admitted requests. `requests_after_first_401` shows whether a client stopped using a revoked key.
    """

    def __init__(self, watch_401: bool = True) -> None:
        self.in_flight = 0
        #: False for an account: one key's 401 says nothing about its account's other keys
        self.watch_401 = watch_401
        self.reset()

    def reset(self) -> None:
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.window = RateWindow(1.0)
        self.admitted_window = RateWindow(1.0)
        self.first_request_ts: float | None = None
        self.last_request_ts: float | None = None
        self.seen_401 = False
        self.max_in_flight = self.in_flight

    def arrive(self, now: float) -> None:
        self.counts["requests"] += 1
        if self.seen_401:
            self.counts["requests_after_first_401"] += 1
        self.first_request_ts = self.first_request_ts or now
        self.last_request_ts = now

    def at_limiter(self, now: float) -> None:
        """The request reached the limiter (after jitter, auth, validation, billing)."""
        self.window.add(now)

    def admit(self, now: float, tokens: int) -> None:
        self.counts["admitted"] += 1
        self.counts["tokens_admitted"] += tokens
        self.admitted_window.add(now)

    def count(self, counter: str) -> None:
        self.counts[counter] += 1
        if counter == "unauthorized_401" and self.watch_401:
            self.seen_401 = True

    def as_dict(self) -> dict[str, Any]:
        return {**self.counts, "max_in_any_1s_window": self.window.max_seen,
                "max_admitted_in_any_1s_window": self.admitted_window.max_seen, "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight, "first_request_ts": self.first_request_ts,
                "last_request_ts": self.last_request_ts}


def totals(every: list[ScopeStats]) -> dict[str, Any]:
    firsts = [s.first_request_ts for s in every if s.first_request_ts]
    lasts = [s.last_request_ts for s in every if s.last_request_ts]
    return {**{c: sum(s.counts[c] for s in every) for c in COUNTERS},
            "in_flight": sum(s.in_flight for s in every),
            "first_request_ts": min(firsts, default=None), "last_request_ts": max(lasts, default=None)}


class RequestLog:
    """The last `size` requests as dicts (GET /requests); a record is filled in as its request proceeds."""

    PROMPT_CHARS = 500

    def __init__(self, size: int):
        self.records: deque[dict[str, Any]] = deque(maxlen=size or 1)
        self.enabled = size > 0

    def add(self, record: dict[str, Any]) -> dict[str, Any]:
        if self.enabled:
            self.records.append(record)
        return record

    def select(self, limit: int | None = None, key: str | None = None) -> list[dict[str, Any]]:
        """Oldest first; only `key`'s; the last `limit`."""
        rows = [dict(r) for r in self.records if key is None or r.get("key") == key]
        return rows[-limit:] if limit else rows

    def clear(self) -> None:
        self.records.clear()
