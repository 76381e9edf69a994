"""Server-side rate limits of one simulated API key: a qps token bucket and an rpm sliding window.

Pure logic with the clock passed in (seconds, any monotonic origin), so the rules are unit-tested
with a fake clock. The semantics are the common server-side ones the scheduler must respect:
- qps: a token bucket with capacity = qps, refilled at qps tokens/s. A client that spaces its
  requests 1/qps apart never runs out; a burst of more than qps at once does.
- rpm: at most rpm accepted requests in any sliding 60 s window.
A rejected request consumes nothing, and the rejection says exactly how long to wait.
"""

from __future__ import annotations

import math
from collections import deque

#: Float slack so that exact spacing (n × 1/qps) is never rejected for a rounding error.
_EPS = 1e-9


class TokenBucket:
    """`rate` tokens per second, at most `capacity` (default: rate) banked; starts full."""

    def __init__(self, rate: float, now: float, capacity: float | None = None, tolerance_s: float = 0.0):
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = float(rate)
        self.capacity = float(capacity if capacity is not None else max(rate, 1.0))
        self.tolerance_s = tolerance_s
        self.tokens = self.capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait(self, now: float) -> float:
        """Seconds until one token is available (0.0: available now). Does not take it."""
        self._refill(now)
        missing = 1.0 - self.tokens - self.tolerance_s * self.rate
        return 0.0 if missing <= _EPS else missing / self.rate

    def take(self, now: float) -> None:
        """Consume one token (call only after wait() returned 0); may dip below 0 by the tolerance."""
        self._refill(now)
        self.tokens -= 1.0


class RequestWindow:
    """At most `limit` accepted requests in any sliding window of `window_s` seconds."""

    def __init__(self, limit: int, window_s: float = 60.0, tolerance_s: float = 0.0):
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.window_s = window_s
        self.tolerance_s = tolerance_s
        self.accepted: deque[float] = deque()

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s + self.tolerance_s + _EPS
        while self.accepted and self.accepted[0] <= horizon:
            self.accepted.popleft()

    def wait(self, now: float) -> float:
        """Seconds until one more request fits in the window (0.0: it fits now)."""
        self._expire(now)
        if len(self.accepted) < self.limit:
            return 0.0
        return max(0.0, self.accepted[0] + self.window_s - self.tolerance_s - now)

    def take(self, now: float) -> None:
        self.accepted.append(now)


class KeyLimit:
    """Both limits of one key: a request is accepted only if both allow it, and then counts in both."""

    def __init__(self, qps: float, rpm: int | None, now: float, tolerance_s: float = 0.0):
        self.bucket = TokenBucket(qps, now, tolerance_s=tolerance_s)
        self.window = RequestWindow(rpm, 60.0, tolerance_s) if rpm else None

    def admit(self, now: float) -> float:
        """0.0 and the request is counted, or the seconds to wait (nothing consumed)."""
        wait = self.bucket.wait(now)
        if self.window is not None:
            wait = max(wait, self.window.wait(now))
        if wait > 0.0:
            return wait
        self.bucket.take(now)
        if self.window is not None:
            self.window.take(now)
        return 0.0


def retry_after_headers(wait_s: float) -> dict[str, str]:
    """`Retry-After` in whole seconds (rounded up, at least 1) and the exact `retry-after-ms`."""
    return {
        "Retry-After": str(max(1, math.ceil(wait_s - _EPS))),
        "retry-after-ms": str(max(1, math.ceil(wait_s * 1000.0 - _EPS))),
    }


class RateWindow:
    """The most events seen in any 1 s window so far (a statistic of how a client paces itself)."""

    def __init__(self, window_s: float = 1.0):
        self.window_s = window_s
        self.recent: deque[float] = deque()
        self.max_seen = 0

    def add(self, now: float) -> None:
        while self.recent and self.recent[0] <= now - self.window_s:
            self.recent.popleft()
        self.recent.append(now)
        self.max_seen = max(self.max_seen, len(self.recent))
