"""Server-side limits of the simulated provider: three limiter models, surge protection, key/account scopes.

Pure logic with the clock passed in (seconds; the app passes Unix time so fixed windows align to
wall-clock seconds and minutes), so every rule is unit-tested with a fake clock. A limit is
"`limit` units per `window_s`" (units: requests or tokens), enforced by one of three models:

- token-bucket: capacity `limit`, refilled `limit / window_s` per second, starts full.
- sliding-window: the units admitted in any window (t − window_s, t] never exceed `limit` (a true
  log of admissions, not an approximation).
- fixed-window: the units admitted in each window [k·window_s, (k+1)·window_s) never exceed `limit`.

A refused request consumes nothing anywhere, and the refusal says how long until it would fit.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

LimiterModel = Literal["token-bucket", "sliding-window", "fixed-window"]
LIMITER_MODELS: tuple[str, ...] = LimiterModel.__args__  # type: ignore[attr-defined]

#: Float slack so that exact spacing (n × 1/qps) is never refused for a rounding error (1 ns).
_EPS = 1e-9


class Limiter(Protocol):
    def wait(self, now: float, cost: float = 1.0) -> float:
        """Seconds until `cost` units fit (0.0: now; inf: never). Consumes nothing."""

    def take(self, now: float, cost: float = 1.0) -> None:
        """Count `cost` units (call only after wait() returned 0)."""


class TokenBucket:
    """`rate` units per second, at most `capacity` (default: max(rate, 1)) banked; starts full."""

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

    def wait(self, now: float, cost: float = 1.0) -> float:
        if cost > self.capacity + _EPS:
            return math.inf
        self._refill(now)
        missing = cost - self.tokens - self.tolerance_s * self.rate
        return 0.0 if missing <= _EPS else missing / self.rate

    def take(self, now: float, cost: float = 1.0) -> None:
        self._refill(now)
        self.tokens -= cost


class SlidingWindow:
    """The units admitted in any window (t − window_s, t] never exceed `limit`: a log of admissions."""

    def __init__(self, limit: float, window_s: float = 1.0, tolerance_s: float = 0.0):
        if limit <= 0:
            raise ValueError("limit must be > 0")
        self.limit = float(limit)
        self.window_s = window_s
        self.tolerance_s = tolerance_s
        self.log: deque[tuple[float, float]] = deque()
        self.used = 0.0

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s + self.tolerance_s + _EPS
        while self.log and self.log[0][0] <= horizon:
            self.used -= self.log.popleft()[1]
        if not self.log:
            self.used = 0.0  # no float drift over a long run

    def wait(self, now: float, cost: float = 1.0) -> float:
        if cost > self.limit + _EPS:
            return math.inf
        self._expire(now)
        excess = self.used + cost - self.limit
        if excess <= _EPS:
            return 0.0
        for t, c in self.log:  # the oldest admissions leave first
            excess -= c
            if excess <= _EPS:
                return max(0.0, t + self.window_s - self.tolerance_s - now)
        return math.inf  # unreachable: cost <= limit

    def take(self, now: float, cost: float = 1.0) -> None:
        self.log.append((now, cost))
        self.used += cost


class FixedWindow:
    """The units admitted in each window [k·window_s, (k+1)·window_s) never exceed `limit`."""

    def __init__(self, limit: float, window_s: float = 1.0):
        if limit <= 0:
            raise ValueError("limit must be > 0")
        self.limit = float(limit)
        self.window_s = window_s
        self.index: int | None = None
        self.used = 0.0

    def _roll(self, now: float) -> None:
        k = math.floor(now / self.window_s + _EPS)
        if k != self.index:
            self.index, self.used = k, 0.0

    def wait(self, now: float, cost: float = 1.0) -> float:
        if cost > self.limit + _EPS:
            return math.inf
        self._roll(now)
        if self.used + cost <= self.limit + _EPS:
            return 0.0
        return (self.index + 1) * self.window_s - now  # type: ignore[operator]

    def take(self, now: float, cost: float = 1.0) -> None:
        self._roll(now)
        self.used += cost


def make_limiter(model: LimiterModel, limit: float, window_s: float, now: float, tolerance_s: float = 0.0) -> Limiter:
    """`limit` units per `window_s` seconds under `model`."""
    if model == "token-bucket":
        return TokenBucket(limit / window_s, now, capacity=max(float(limit), 1.0), tolerance_s=tolerance_s)
    if model == "sliding-window":
        return SlidingWindow(limit, window_s, tolerance_s)
    if model == "fixed-window":
        return FixedWindow(limit, window_s)
    raise ValueError(f"unknown limiter model {model!r}; expected one of {', '.join(LIMITER_MODELS)}")


# --------------------------------------------------------------------------------------- surge


class SurgeGuard:
    """Surge protection: a scope may not jump from idle to full rate within a second.

    Rule, with L the scope's request limit per second (qps, else rpm/60), c1 the requests it
    admitted in (t − 1, t] and c0 those in (t − 2, t − 1]: a request at t is refused when
    c1 + 1 > max(ceil(floor · L), ceil(growth · c0)). Defaults floor 0.5, growth 2: from idle a
    scope gets half its limit in the first second, and may then double second over second; a
    steady client at the limit (c0 ≈ L) is never affected.
    """

    def __init__(self, limit_per_s: float, floor: float = 0.5, growth: float = 2.0):
        self.limit_per_s = limit_per_s
        self.floor = floor
        self.growth = growth
        self.admitted: deque[float] = deque()

    def allowance(self, now: float) -> int:
        while self.admitted and self.admitted[0] <= now - 2.0 + _EPS:
            self.admitted.popleft()
        c0 = sum(1 for t in self.admitted if t <= now - 1.0 + _EPS)
        return max(math.ceil(self.floor * self.limit_per_s - _EPS), math.ceil(self.growth * c0 - _EPS))

    def wait(self, now: float) -> float:
        allowed = self.allowance(now)
        recent = [t for t in self.admitted if t > now - 1.0 + _EPS]
        if len(recent) + 1 <= allowed:
            return 0.0
        # the earliest time the oldest of the last second leaves it (c0 may change too: a hint only)
        return max(_EPS, recent[len(recent) - allowed] + 1.0 - now) if allowed else 1.0

    def take(self, now: float) -> None:
        self.admitted.append(now)


# -------------------------------------------------------------------------------------- scopes

Reason = Literal["rate", "tokens", "surge"]


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused: which rule of which scope, and how long until it would fit."""

    reason: Reason
    scope: str  # "key" or "account"
    name: str  # the key or account name
    limit: str  # e.g. "qps 5", "tpm 60000"
    wait_s: float


@dataclass(frozen=True)
class Limits:
    """The limits of one scope; None = unlimited."""

    qps: float | None = None
    rpm: float | None = None
    tps: float | None = None
    tpm: float | None = None

    @property
    def per_second(self) -> float | None:
        """The request rate surge protection measures against: qps, else rpm/60."""
        return self.qps or (self.rpm / 60.0 if self.rpm else None)


class ScopeLimit:
    """Every limit of one key or account, under one limiter model."""

    def __init__(self, scope: str, name: str, limits: Limits, model: LimiterModel, now: float,
                 surge: tuple[float, float] | None = None, tolerance_s: float = 0.0):
        self.scope, self.name, self.limits = scope, name, limits

        def make(value: float | None, window_s: float) -> Limiter | None:
            return make_limiter(model, value, window_s, now, tolerance_s) if value else None

        self.requests = [(f"{n} {v:g}", lim) for n, v, lim in (
            ("qps", limits.qps, make(limits.qps, 1.0)), ("rpm", limits.rpm, make(limits.rpm, 60.0))) if lim]
        self.tokens = [(f"{n} {v:g}", lim) for n, v, lim in (
            ("tps", limits.tps, make(limits.tps, 1.0)), ("tpm", limits.tpm, make(limits.tpm, 60.0))) if lim]
        rate = limits.per_second
        self.surge = SurgeGuard(rate, *surge) if surge and rate else None

    def check(self, now: float, tokens: float) -> Refusal | None:
        """The first rule this request breaks (rate, then tokens, then surge), or None."""
        for reason, limiters, cost in (("rate", self.requests, 1.0), ("tokens", self.tokens, tokens)):
            waits = [(lim.wait(now, cost), label) for label, lim in limiters]
            wait, label = max(waits, default=(0.0, ""))
            if wait > 0.0:
                return Refusal(reason, self.scope, self.name, label, wait)  # type: ignore[arg-type]
        if self.surge is not None:
            wait = self.surge.wait(now)
            if wait > 0.0:
                return Refusal("surge", self.scope, self.name, f"limit {self.surge.limit_per_s:g}/s", wait)
        return None

    def take(self, now: float, tokens: float) -> None:
        for _, lim in self.requests:
            lim.take(now, 1.0)
        for _, lim in self.tokens:
            lim.take(now, tokens)
        if self.surge is not None:
            self.surge.take(now)


def admit(scopes: list[ScopeLimit], now: float, tokens: float) -> Refusal | None:
    """Admit a request of `tokens` tokens against every scope (key, then account), or refuse it.

    Either all scopes count it or none does.
    """
    for s in scopes:
        refusal = s.check(now, tokens)
        if refusal is not None:
            return refusal
    for s in scopes:
        s.take(now, tokens)
    return None


def retry_after_headers(wait_s: float) -> dict[str, str]:
    """`Retry-After` in whole seconds (rounded up, at least 1) and the exact `retry-after-ms`."""
    if math.isinf(wait_s):
        wait_s = 60.0
    return {
        "Retry-After": str(max(1, math.ceil(wait_s - _EPS))),
        "retry-after-ms": str(max(1, math.ceil(wait_s * 1000.0 - _EPS))),
    }


class RateWindow:
    """The most events seen in any 1 s window (t − 1, t] so far (a statistic of how a client paces itself)."""

    def __init__(self, window_s: float = 1.0):
        self.window_s = window_s
        self.recent: deque[float] = deque()
        self.max_seen = 0

    def add(self, now: float) -> None:
        while self.recent and self.recent[0] <= now - self.window_s:
            self.recent.popleft()
        self.recent.append(now)
        self.max_seen = max(self.max_seen, len(self.recent))
