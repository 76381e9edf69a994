"""Rate arithmetic: how fast one sender (a key or an account) may send, in requests and tokens.

Pure logic with the clock passed in (`now`, monotonic seconds).
- Pacing that holds under jitter: a key (and an account) sends at most `qps / (1 + J)` per second,
  evenly spaced (bucket capacity `burst`, 1 by default), where J = `jitter_allowance` (seconds) is
  the most two requests' travel times may differ. Any provider window of 1 s then sees ≤ qps
  arrivals: arrivals in [a, a+1) were sent in [a−J, a+1), a half-open span of 1+J seconds that holds
  at most qps sends spaced (1+J)/qps apart. That holds for sliding and fixed windows and for a
  bucket of capacity qps alike. Up to `catch_up` (5 ms, part of J) of a late send is made up.
  rpm: a sliding 60 s window (plus a guard).
- Tokens: `tpm` paces estimated tokens at tpm/60/(1+J) per second (capacity: the request's own
  cost); a usage report refunds or charges the difference between the estimate and the usage.
- AIMD: `decrease` multiplies the rate by `aimd_decrease` once per congestion event (answers to
  requests sent before the last decrease don't decrease again); `grow` recovers it additively,
  `1/aimd_recovery_s` of the limit per second. Slow start: a sender idle for `idle_s` restarts at
  `slow_start` of its rate and ramps to the full rate over `ramp_s` (no surge from idle to full rate).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hazardctl.keypool.pool import PoolPolicy

RPM_WINDOW_S = 60.0
#: A request sent 60.0 s after another may arrive 59.9 s after it: keep this much extra margin.
RPM_GUARD_S = 0.5
#: Timers may fire a hair early; treat readiness within this much as ready (no re-arm spin).
EPS = 1e-6
#: AIMD never takes a rate below this share of its limit.
MIN_FACTOR = 0.1


@dataclass(eq=False)
class Rate:
    """The pacing of one sender, a key or an account: requests, requests per minute, tokens.

    Both buckets refill at the current rate (limit × AIMD factor × slow-start ramp ÷ (1 + J)); the
    request bucket holds at most `burst` sends (plus `catch_up` seconds of rate, so a late send is
    made up), the token bucket refills up to the asking request's cost (a usage refund may exceed it).
    """

    qps: float | None
    rpm: int | None
    tpm: int | None
    policy: PoolPolicy
    burst: float = 1.0
    now: float = 0.0
    factor: float = 1.0  # AIMD
    grown_at: float = 0.0  # last time the factor was updated
    decreased_at: float = float("-inf")
    ramp_from: float = float("-inf")  # slow start began here
    last_sent: float = float("-inf")
    req: float = 0.0
    req_stamp: float = 0.0
    tok: float = 0.0
    tok_stamp: float = 0.0
    last_cost: float = 1.0  # tokens of the last request: the token bucket's cap between requests
    window: deque = field(default_factory=deque)  # send times within the rpm window

    def __post_init__(self) -> None:
        self.req, self.req_stamp, self.tok, self.tok_stamp = self.burst, self.now, math.inf, self.now

    def ramp(self, now: float) -> float:
        p = self.policy
        if p.slow_start >= 1.0:
            return 1.0
        if now - self.last_sent > p.idle_s:  # idle: the next send starts a new ramp
            return p.slow_start
        x = (now - self.ramp_from) / p.ramp_s if p.ramp_s > 0 else 1.0
        return min(1.0, p.slow_start + (1.0 - p.slow_start) * max(0.0, x))

    def scale(self, now: float) -> float:
        return self.factor * self.ramp(now) / (1.0 + self.policy.jitter_allowance)

    def qps_now(self, now: float) -> float | None:
        return None if self.qps is None else self.qps * self.scale(now)

    def req_at(self, now: float) -> float:
        if self.qps is None:
            return math.inf
        rate = self.qps * self.scale(now)
        cap = self.burst + rate * min(self.policy.catch_up, self.policy.jitter_allowance)
        return min(cap, self.req + max(0.0, now - self.req_stamp) * rate)

    def tok_at(self, now: float, cap: float) -> float:
        if self.tpm is None:
            return math.inf
        if self.tok == math.inf:  # never used: full
            return max(cap, 0.0)
        refilled = min(max(cap, 0.0), self.tok + max(0.0, now - self.tok_stamp) * self.tpm / 60.0 * self.scale(now))
        return max(self.tok, refilled)  # refill stops at the cap; a refund above it is kept, not lost

    def prune(self, now: float) -> None:
        w = self.window
        while w and w[0] <= now - RPM_WINDOW_S - RPM_GUARD_S:
            w.popleft()

    def ready_at(self, t: float, cost: float) -> float:
        """Earliest time ≥ t this sender may send a request of `cost` tokens."""
        if self.qps is not None:
            have = self.req_at(t)
            if have < 1.0 - EPS:
                t += (1.0 - have) / (self.qps * self.scale(t))
        if self.tpm is not None and cost > 0:
            have = self.tok_at(t, cost)
            if have < cost - EPS:
                t += (cost - have) / (self.tpm / 60.0 * self.scale(t))
        if self.rpm is not None:  # (no pruning here: t may be a future time)
            w = self.window
            inside = len(w) - bisect.bisect_right(w, t - RPM_WINDOW_S - RPM_GUARD_S)
            if inside >= self.rpm:
                t = max(t, w[len(w) - self.rpm] + RPM_WINDOW_S + RPM_GUARD_S)
        return t

    def take(self, now: float, cost: float) -> None:
        if now - self.last_sent > self.policy.idle_s:
            self.ramp_from = now
        if self.qps is not None:
            self.req, self.req_stamp = max(0.0, self.req_at(now) - 1.0), now
        if self.tpm is not None:
            self.tok, self.tok_stamp = self.tok_at(now, max(cost, 1.0)) - cost, now
            self.last_cost = max(cost, 1.0)
        if self.rpm is not None:
            self.prune(now)
            self.window.append(now)
        self.last_sent = now

    def correct(self, tokens: float, now: float, cap: float) -> None:
        """Add back (or charge, if negative) tokens after the answer reported its usage: refill up to
        now first (capped at `cap`, a request's cost), then the difference on top, kept whole."""
        if self.tpm is not None and self.tok != math.inf:
            self.tok, self.tok_stamp = self.tok_at(now, cap) + tokens, now

    def _settle(self, now: float) -> None:
        """Refill both buckets up to now at the rate in force, before the rate changes."""
        if self.qps is not None:
            self.req, self.req_stamp = self.req_at(now), now
        if self.tpm is not None and self.tok != math.inf:
            self.tok, self.tok_stamp = self.tok_at(now, self.last_cost), now

    def reconfigure(self, qps: float | None, rpm: int | None, tpm: int | None, policy: PoolPolicy, *,
                    now: float, burst: float | None = None) -> None:
        """New limits from a reloaded config, in force at once: what was refilled so far at the old rate
        is kept (capped by the new bucket), sends in the rpm window still count, AIMD and slow start go on."""
        self._settle(now)
        self.qps, self.rpm, self.tpm, self.policy = qps, rpm, tpm, policy
        if burst is not None:
            self.burst = burst
        if qps is not None:
            self.req = min(self.req, self.burst) if self.req != math.inf else self.burst
        if tpm is None:
            self.tok = math.inf
        self.req_stamp = self.tok_stamp = now

    def decrease(self, now: float, sent_at: float) -> bool:
        """Multiplicative decrease, once per congestion event. True if the rate went down."""
        if sent_at < self.decreased_at:
            return False  # sent before the last decrease: the same event
        self._settle(now)
        self.factor = max(MIN_FACTOR, self.factor * self.policy.aimd_decrease)
        self.decreased_at = self.grown_at = now
        return True

    def grow(self, now: float) -> None:
        """Additive increase while calls succeed."""
        if self.factor < 1.0:
            self._settle(now)
            self.factor = min(1.0, self.factor + max(0.0, now - self.grown_at) / self.policy.aimd_recovery_s)
        self.grown_at = now
