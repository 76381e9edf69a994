"""The API-key pool: which key may send the next LLM request, and when (spec §6).

Pure logic with the clock passed in (`now`, monotonic seconds): no HTTP, no asyncio, no secrets.
The scheduler asks `acquire(now)` for a lease, makes the call, and reports the outcome with
`release(lease, outcome, now)`; `ready_at(now)` tells it when to ask again, so it never polls.

Rules (each has a fake-clock test in tests/test_keypool.py):
- Pacing: a token bucket per key for qps (capacity `burst`, 1 by default: sends are spaced at least
  1/qps apart, which never trips a provider's bucket of capacity qps even with network jitter) and
  a sliding 60 s window for rpm (plus a small guard for arrival jitter). The pool never hands out a
  request the key's limits would refuse.
- Several requests in flight per key, up to `max_in_flight`.
- 429: cool the key until Retry-After (or `default_cooldown`); a repeated 429 extends, never
  shortens, the cooldown. Not a health failure: the key is fine, just busy.
- 401/403: DISABLED; one probe request is allowed every `reprobe_interval` seconds.
- 5xx / timeout / connection / unusable answer: `max_retry_per_key` consecutive failures cool the key
  for `default_cooldown`, then it is half-open: one probe at a time until a success closes it.
- 400/413: the request's fault, not the key's: no state change, no retry (see `should_retry`).

`AcquireQueue` (also pure) hands leases to waiting tasks in FIFO order with deadlines; `AsyncKeyPool`
is the thin asyncio shell around both.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable

RPM_WINDOW_S = 60.0
#: A request sent 60.0 s after another may arrive 59.9 s after it: keep this much extra margin.
RPM_GUARD_S = 0.5
#: Timers may fire a hair early; treat readiness within this much as ready (no re-arm spin).
EPS = 1e-6


class KeyState(str, Enum):
    AVAILABLE = "available"
    IN_USE = "in_use"
    COOLING = "cooling"
    DISABLED = "disabled"


class Outcome(str, Enum):
    """How one LLM call ended, as far as the key is concerned."""

    OK = "ok"
    RATE_LIMITED = "rate_limited"  # 429
    UNAUTHORIZED = "unauthorized"  # 401 / 403
    SERVER_ERROR = "server_error"  # 5xx
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    BAD_RESPONSE = "bad_response"  # an answer that is not a valid assessment
    BAD_REQUEST = "bad_request"  # 400 / 413: this request can never succeed
    ABANDONED = "abandoned"  # the lease was not used (task cancelled): no verdict on the key


#: Outcomes that count toward a key's failure streak.
HEALTH_FAILURES = frozenset({Outcome.SERVER_ERROR, Outcome.TIMEOUT, Outcome.CONNECTION, Outcome.BAD_RESPONSE})


def should_retry(outcome: Outcome, bad_responses: int) -> bool:
    """May the task try again (on another key)? Malformed answers are retried once; 400/413 never."""
    if outcome is Outcome.BAD_RESPONSE:
        return bad_responses <= 1
    return outcome not in (Outcome.OK, Outcome.BAD_REQUEST)


@dataclass(frozen=True)
class KeyLimits:
    name: str
    qps: float
    rpm: int | None = None
    priority: int = 0
    weight: float = 1.0
    max_in_flight: int = 20
    burst: float = 1.0


@dataclass(frozen=True)
class PoolPolicy:
    strategy: str = "round_robin"  # round_robin | least_loaded | priority | weighted
    max_retry_per_key: int = 3
    default_cooldown: float = 30.0
    reprobe_interval: float = 300.0


@dataclass(frozen=True)
class Lease:
    """Permission to send one request with one key; give it back with `release`."""

    key: str
    index: int
    sent_at: float
    probe: bool = False


@dataclass(frozen=True)
class KeyHealth:
    name: str
    state: KeyState
    in_flight: int
    tokens: float
    calls: int
    successes: int
    success_rate: float | None
    last_error: str | None  # the class (an Outcome value), e.g. "unauthorized"
    last_error_detail: str | None  # our own words, e.g. "HTTP 401 invalid_api_key" (never a provider message)
    cooldown_until: float | None
    rate_limited: int
    failures: int


@dataclass(eq=False)
class _Key:
    limits: KeyLimits
    index: int
    tokens: float = 0.0
    stamp: float = 0.0
    window: deque = field(default_factory=deque)  # send times within the rpm window
    in_flight: int = 0
    cool_until: float = float("-inf")
    half_open: bool = False  # after a failure streak: one probe at a time until a success
    disabled: bool = False  # 401/403
    probe_at: float = 0.0  # disabled: when the next probe may go
    probing: bool = False
    changed_at: float = float("-inf")  # last disable / failure cooling: older requests don't change state
    streak: int = 0
    swrr: float = 0.0  # smooth weighted round robin credit
    last_sent: float = float("-inf")
    calls: int = 0
    done: int = 0
    successes: int = 0
    failures: int = 0
    rate_limited: int = 0
    last_error: str | None = None
    last_detail: str | None = None

    @property
    def name(self) -> str:
        return self.limits.name

    def tokens_at(self, now: float) -> float:
        return min(self.limits.burst, self.tokens + (now - self.stamp) * self.limits.qps)

    def prune(self, now: float) -> None:
        w = self.window
        while w and w[0] <= now - RPM_WINDOW_S - RPM_GUARD_S:
            w.popleft()

    def ready_at(self, now: float) -> float | None:
        """Earliest time ≥ now this key may send, or None when only a release can free it."""
        lim = self.limits
        if self.disabled:
            if self.probing or self.in_flight:
                return None
            t = max(now, self.probe_at, self.cool_until)
        elif self.half_open and (self.probing or self.in_flight):
            return None
        elif self.in_flight >= lim.max_in_flight:
            return None
        else:
            t = max(now, self.cool_until)
        tokens = self.tokens_at(t)
        if tokens < 1.0 - EPS:
            t += (1.0 - tokens) / lim.qps
        if lim.rpm is not None:
            self.prune(now)
            if len(self.window) >= lim.rpm:
                t = max(t, self.window[len(self.window) - lim.rpm] + RPM_WINDOW_S + RPM_GUARD_S)
        return t

    def open(self, now: float) -> bool:
        """Serving normally: at most paced or busy, not cooling, disabled or probing."""
        return not self.disabled and now >= self.cool_until and not (self.half_open and (self.probing or self.in_flight))

    def state(self, now: float) -> KeyState:
        if self.disabled:
            return KeyState.DISABLED
        if now < self.cool_until:
            return KeyState.COOLING
        return KeyState.IN_USE if self.in_flight else KeyState.AVAILABLE


class KeyPool:
    """Key states, pacing and the choice of key. Every method takes the current time."""

    def __init__(self, keys: Iterable[KeyLimits], policy: PoolPolicy = PoolPolicy(), now: float = 0.0):
        self.policy = policy
        self.keys = [_Key(lim, i, tokens=lim.burst, stamp=now) for i, lim in enumerate(keys)]
        if not self.keys:
            raise ValueError("a key pool needs at least one key")
        if policy.strategy not in _STRATEGIES:
            raise ValueError(f"unknown strategy {policy.strategy!r}")
        self._choose = _STRATEGIES[policy.strategy]
        self._cursor = 0
        self._by_name = {k.name: k for k in self.keys}

    # -- choosing -------------------------------------------------------------------------------
    def _candidates(self, now: float, avoid: frozenset[str]) -> list[_Key]:
        """Keys a task may use: a retry prefers keys that have not failed it, as long as one of them
        is open (only paced or busy, not cooling); a disabled key only when its probe is due."""
        usable = [k for k in self.keys if not k.disabled or k.probe_at <= now]
        if avoid:
            preferred = [k for k in usable if k.name not in avoid]
            if any(k.open(now) for k in preferred):
                return preferred
        return usable or self.keys

    def acquire(self, now: float, avoid: frozenset[str] = frozenset()) -> Lease | None:
        """A lease on a key that may send right now, chosen by the strategy; None if none may."""
        ready = [k for k in self._candidates(now, avoid) if (t := k.ready_at(now)) is not None and t <= now + EPS]
        if not ready:
            return None
        key = self._choose(self, ready, now)
        lim = key.limits
        key.tokens = max(0.0, key.tokens_at(now) - 1.0)
        key.stamp = now
        if lim.rpm is not None:
            key.window.append(now)
        key.in_flight += 1
        key.calls += 1
        key.last_sent = now
        probe = key.disabled or key.half_open
        key.probing = key.probing or probe
        return Lease(key.name, key.index, now, probe)

    def ready_at(self, now: float, avoid: frozenset[str] = frozenset()) -> float | None:
        """When `acquire` could next succeed by the clock alone; None if only a release can help."""
        keys = self._candidates(now, avoid)
        keys += [k for k in self.keys if k.disabled and k.probe_at > now and k.name not in avoid and k not in keys]
        times = [t for k in keys if (t := k.ready_at(now)) is not None]
        return min(times) if times else None

    # -- outcomes -------------------------------------------------------------------------------
    def release(self, lease: Lease, outcome: Outcome, now: float, retry_after: float | None = None,
                error: str | None = None) -> None:
        """Record how the call with `lease` ended and move the key's state accordingly."""
        key = self.keys[lease.index]
        key.in_flight -= 1
        if lease.probe:
            key.probing = False
        if outcome is Outcome.ABANDONED:
            return
        key.done += 1
        if lease.probe and key.disabled and outcome is not Outcome.UNAUTHORIZED:
            key.disabled = False  # the probe got past authentication: the key is back
            key.streak = 0
        if outcome is not Outcome.OK:
            key.last_error, key.last_detail = outcome.value, error
        stale = lease.sent_at < key.changed_at and not lease.probe  # sent before the last verdict
        p = self.policy
        if outcome is Outcome.OK:
            key.successes += 1
            if stale:
                return
            key.streak = 0
            if key.disabled or key.half_open:
                key.disabled = key.half_open = False
                key.cool_until = float("-inf")
        elif outcome is Outcome.RATE_LIMITED:
            key.rate_limited += 1
            wait = retry_after if retry_after is not None and retry_after >= 0 else p.default_cooldown
            key.cool_until = max(key.cool_until, now + wait)
        elif outcome is Outcome.UNAUTHORIZED:
            key.failures += 1
            if key.disabled and stale:
                return  # an old request; the probe clock already runs
            key.disabled = True
            key.probe_at = now + p.reprobe_interval
            key.changed_at = now
        elif outcome in HEALTH_FAILURES:
            key.failures += 1
            if stale:
                return
            key.streak += 1
            if key.half_open or key.streak >= p.max_retry_per_key:
                key.cool_until = max(key.cool_until, now + p.default_cooldown)
                key.half_open = True
                key.changed_at = now
                key.streak = 0
        # BAD_REQUEST: the request was at fault; the key's state does not change

    # -- health -----------------------------------------------------------------------------------
    def snapshot(self, now: float) -> list[KeyHealth]:
        return [KeyHealth(
            name=k.name, state=k.state(now), in_flight=k.in_flight, tokens=round(k.tokens_at(now), 3),
            calls=k.calls, successes=k.successes,
            success_rate=(k.successes / k.done) if k.done else None, last_error=k.last_error,
            last_error_detail=k.last_detail,
            cooldown_until=(k.cool_until if k.cool_until > now else (k.probe_at if k.disabled else None)),
            rate_limited=k.rate_limited, failures=k.failures,
        ) for k in self.keys]

    def state(self, name: str, now: float) -> KeyState:
        return self._by_name[name].state(now)


# -- strategies: pick one of the keys that may send now --------------------------------------------

def _round_robin(pool: KeyPool, ready: list[_Key], now: float) -> _Key:
    n = len(pool.keys)
    key = min(ready, key=lambda k: (k.index - pool._cursor) % n)
    pool._cursor = (key.index + 1) % n
    return key


def _least_loaded(pool: KeyPool, ready: list[_Key], now: float) -> _Key:
    """Fewest requests in flight relative to the key's rate; ties go to the key idle the longest."""
    return min(ready, key=lambda k: (k.in_flight / k.limits.qps, k.last_sent))


def _priority(pool: KeyPool, ready: list[_Key], now: float) -> _Key:
    """The lowest priority number that may send; round robin among equals (spills over when paced)."""
    best = min(k.limits.priority for k in ready)
    return _round_robin(pool, [k for k in ready if k.limits.priority == best], now)


def _weighted(pool: KeyPool, ready: list[_Key], now: float) -> _Key:
    """Smooth weighted round robin (as in nginx) among the keys that may send."""
    total = 0.0
    for k in ready:
        k.swrr += k.limits.weight
        total += k.limits.weight
    key = max(ready, key=lambda k: (k.swrr, -k.index))
    key.swrr -= total
    return key


_STRATEGIES = {"round_robin": _round_robin, "least_loaded": _least_loaded, "priority": _priority,
               "weighted": _weighted}


# -- waiting tasks: FIFO with deadlines (pure) ------------------------------------------------------

@dataclass(eq=False)
class Waiter:
    seq: int  # arrival order of the task: a retry keeps its place
    deadline: float
    avoid: frozenset[str] = frozenset()
    lease: Lease | None = None


class AcquireQueue:
    """Hands keys to waiting tasks: a key goes to the earliest waiter that can use it.

    `dispatch(now)` grants what can be granted, expires waiters that cannot be served before their
    deadline (past it, or no key back in time), and says when to call it again.
    """

    def __init__(self, pool: KeyPool):
        self.pool = pool
        self.waiters: list[Waiter] = []

    def add(self, waiter: Waiter) -> None:
        bisect.insort(self.waiters, waiter, key=lambda w: w.seq)

    def remove(self, waiter: Waiter) -> None:
        try:
            self.waiters.remove(waiter)
        except ValueError:
            pass

    def __len__(self) -> int:
        return len(self.waiters)

    def dispatch(self, now: float) -> tuple[list[Waiter], list[Waiter], float | None]:
        granted: list[Waiter] = []
        expired: list[Waiter] = []
        kept: list[Waiter] = []
        pool = self.pool
        plain_ready: float | None = None  # once a plain waiter is stuck, every later plain one is too
        plain_blocked = False
        wake: float | None = None

        def soonest(t: float | None) -> None:
            nonlocal wake
            if t is not None and (wake is None or t < wake):
                wake = t

        for w in self.waiters:
            if w.deadline <= now:
                expired.append(w)
                continue
            if plain_blocked and not w.avoid:
                t = plain_ready
            else:
                lease = pool.acquire(now, w.avoid)
                if lease is not None:
                    w.lease = lease
                    granted.append(w)
                    continue
                t = pool.ready_at(now, w.avoid)
                if not w.avoid:
                    plain_blocked, plain_ready = True, t
            if t is not None and t > w.deadline:
                expired.append(w)  # the first key back comes after the deadline: fail now, not later
                continue
            kept.append(w)
            soonest(t)
            soonest(w.deadline)
        self.waiters = kept
        return granted, expired, wake


class NoKeyInTime(Exception):
    """No key can take the task before its deadline (all cooling, disabled or saturated)."""


class AsyncKeyPool:
    """The asyncio shell: `await acquire(deadline)` in FIFO order; sleeps exactly until a key is
    ready or a lease comes back — one timer, no polling."""

    def __init__(self, pool: KeyPool, loop: asyncio.AbstractEventLoop | None = None):
        self.pool = pool
        self.queue = AcquireQueue(pool)
        self._loop = loop or asyncio.get_running_loop()
        self._futures: dict[Waiter, asyncio.Future] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._seq = itertools.count()
        self.dispatches = 0  # for tests: proof of no busy-waiting

    def now(self) -> float:
        return self._loop.time()

    def ticket(self) -> int:
        """A place in the FIFO order, taken when a task arrives and kept across its retries."""
        return next(self._seq)

    async def acquire(self, deadline: float, avoid: frozenset[str] = frozenset(), seq: int | None = None) -> Lease:
        """A lease before `deadline` (loop time), or NoKeyInTime."""
        waiter = Waiter(self.ticket() if seq is None else seq, deadline, avoid)
        fut = self._loop.create_future()
        self._futures[waiter] = fut
        self.queue.add(waiter)
        self._dispatch()
        try:
            return await fut
        except asyncio.CancelledError:
            self.queue.remove(waiter)
            self._futures.pop(waiter, None)
            if waiter.lease is not None:
                self.release(waiter.lease, Outcome.ABANDONED)
            raise

    def release(self, lease: Lease, outcome: Outcome, retry_after: float | None = None, error: str | None = None) -> None:
        self.pool.release(lease, outcome, self.now(), retry_after, error)
        self._dispatch()

    def _dispatch(self) -> None:
        self.dispatches += 1
        granted, expired, wake = self.queue.dispatch(self.now())
        for w in granted:
            fut = self._futures.pop(w)
            if not fut.done():
                fut.set_result(w.lease)
        for w in expired:
            fut = self._futures.pop(w)
            if not fut.done():
                fut.set_exception(NoKeyInTime())
        self._arm(wake)

    def _arm(self, when: float | None) -> None:
        if self._timer is not None and (when is None or self._timer_at != when):
            self._timer.cancel()
            self._timer = None
        if when is not None and self._timer is None:
            self._timer_at = when
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()
