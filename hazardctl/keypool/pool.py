"""The pool's rules: key states, which key may send now, and what each outcome does to a key (spec §6,
issue 8).

Pure logic with the clock passed in (`now`, monotonic seconds): no HTTP, no asyncio, no secrets.
The scheduler asks `acquire(now, cost=tokens)` for a lease, makes the call, and reports the outcome
with `release(lease, outcome, now, usage=tokens)`; `ready_at(now)` tells it when to ask again, so it
never polls. The pacing itself (per key and per account) is `rates.Rate`.

Rules (each has a fake-clock test in tests/test_keypool.py or tests/test_keypool_limits.py):
- Accounts: keys may share an account with its own qps / rpm / tpm; a send needs both the key's
  and the account's permission and counts in both.
- AIMD: a 429 (requests, tokens, surge) slows the tighter limit: the account's when its keys claim
  more than it allows, else the key's; successes recover it.
- 429: cool the key until Retry-After; without one, `rate_limit_cooldown` seconds, doubling while
  429s repeat (capped by `default_cooldown`). Not a health failure: the key is fine, just busy.
- 401/403 and insufficient quota (billing): DISABLED; one probe every `reprobe_interval` seconds.
- 5xx / timeout / connection: `max_retry_per_key` consecutive failures cool the key for
  `default_cooldown`, then it is half-open: one probe at a time until a success closes it.
- An unusable answer (BAD_RESPONSE) is the model's, not the key's: it never cools a key (issue 12).
- 400/413: the request's fault, not the key's: no state change, no retry (see `should_retry`).
- Variants (issue 22): a request may be limited to some keys (`only`); a shadow request takes a key only
  while another key stays ready (`spare`), so it never takes the last slot a primary task could use.
- Reload (`reconfigure`): a removed key takes no new request and finishes its in-flight ones; an added
  key starts with slow start; changed limits apply at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Iterable

from hazardctl.keypool.rates import EPS, Rate


class KeyState(str, Enum):
    AVAILABLE = "available"
    IN_USE = "in_use"
    COOLING = "cooling"
    DISABLED = "disabled"


class Outcome(str, Enum):
    """How one LLM call ended, as far as the key is concerned (the value is the `error_class`)."""

    OK = "ok"
    RATE_LIMITED = "rate_limited_requests"  # 429 for the request rate (or a 429 we cannot tell apart)
    RATE_LIMITED_TOKENS = "rate_limited_tokens"  # 429 for the token quota ("Allocated quota exceeded")
    SURGE = "surge"  # 429 "Request rate increased too quickly"
    INSUFFICIENT_QUOTA = "insufficient_quota"  # billing: the account cannot pay; like 401 until it can
    UNAUTHORIZED = "unauthorized"  # 401 / 403
    SERVER_ERROR = "server_error"  # 5xx
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    BAD_RESPONSE = "bad_response"  # an answer that is not a valid assessment
    BAD_REQUEST = "bad_request"  # 400 / 413: this request can never succeed
    ABANDONED = "abandoned"  # the lease was not used (task cancelled): no verdict on the key


#: 429s: the key is fine but we (or its account) went too fast.
RATE_LIMITS = frozenset({Outcome.RATE_LIMITED, Outcome.RATE_LIMITED_TOKENS, Outcome.SURGE})
#: The key cannot be used until a probe says otherwise.
DISABLING = frozenset({Outcome.UNAUTHORIZED, Outcome.INSUFFICIENT_QUOTA})
#: Outcomes that count toward a key's failure streak. Not BAD_RESPONSE: an unusable answer says
#: nothing about the key (the same model answers the same way on every key; issue 12).
HEALTH_FAILURES = frozenset({Outcome.SERVER_ERROR, Outcome.TIMEOUT, Outcome.CONNECTION})


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
    tpm: int | None = None
    account: str | None = None


@dataclass(frozen=True)
class AccountLimits:
    """Limits shared by every key of one provider account (DashScope counts per account)."""

    name: str
    qps: float | None = None
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True)
class PoolPolicy:
    strategy: str = "round_robin"  # round_robin | least_loaded | priority | weighted
    max_retry_per_key: int = 3
    default_cooldown: float = 30.0
    reprobe_interval: float = 300.0
    jitter_allowance: float = 0.04
    """seconds two requests' travel times may differ; pacing spreads qps over 1 s + this"""
    catch_up: float = 0.005
    """seconds of a late send (timer, busy loop) the next send may make up, out of jitter_allowance
    (40 ms = 30 ms provider-side jitter + 5 ms catch-up + 5 ms from the grant to the actual send)"""
    rate_limit_cooldown: float = 1.0
    """a 429 without Retry-After cools the key this long, doubling while 429s repeat"""
    aimd_decrease: float = 0.7
    aimd_recovery_s: float = 5.0
    """seconds of successes for a rate to recover from 0 to its limit (additive increase)"""
    slow_start: float = 0.3
    """share of its rate a key or account starts at after `idle_s` without sends (1 = off)"""
    ramp_s: float = 2.0
    """seconds of the linear ramp from `slow_start` to the full rate (4 s: no surge 429 even under the
    simulator's strict rule, half the limit in the first second then at most double)"""
    idle_s: float = 10.0


@dataclass(frozen=True)
class Lease:
    """Permission to send one request with one key; give it back with `release`."""

    key: str
    index: int
    sent_at: float
    probe: bool = False
    cost: float = 0.0  # estimated tokens charged at acquire


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
    effective_qps: float = 0.0  # the key's own send rate now (limit × AIMD × slow start ÷ jitter margin)


@dataclass(eq=False)
class _Key:
    limits: KeyLimits
    index: int
    rate: Rate
    account: Rate | None = None
    account_binding: bool = False  # its account allows less than its keys claim: a 429 is the account's
    in_flight: int = 0
    cool_until: float = float("-inf")
    half_open: bool = False  # after a failure streak: one probe at a time until a success
    disabled: bool = False  # 401/403, insufficient quota
    probe_at: float = 0.0  # disabled: when the next probe may go
    probing: bool = False
    changed_at: float = float("-inf")  # last disable / failure cooling: older requests don't change state
    streak: int = 0
    limited_streak: int = 0  # 429s in a row (without a success between them)
    limited_at: float = float("-inf")  # the last 429 that counted
    swrr: float = 0.0  # smooth weighted round robin credit
    last_sent: float = float("-inf")
    calls: int = 0
    done: int = 0
    successes: int = 0
    failures: int = 0
    rate_limited: int = 0
    last_error: str | None = None
    last_detail: str | None = None
    retired: bool = False  # removed by a reload: finishes its in-flight requests, takes no new one

    @property
    def name(self) -> str:
        return self.limits.name

    def tokens_at(self, now: float) -> float:
        return self.rate.req_at(now)

    def ready_at(self, now: float, cost: float = 0.0) -> float | None:
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
        t = self.rate.ready_at(t, cost)
        if self.account is not None:
            for _ in range(8):  # the key's own pacing may be later again at the account's time
                t2 = self.account.ready_at(self.rate.ready_at(t, cost), cost)
                if t2 <= t + EPS:
                    break
                t = t2
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


def _claims(keys: Iterable[KeyLimits], attr: str) -> float | None:
    """What the keys claim together; None: unlimited (a key without rpm still has qps × 60)."""
    values = [k.qps * 60 if attr == "rpm" and k.rpm is None else getattr(k, attr) for k in keys]
    return None if any(v is None for v in values) else sum(values)


def over_claimed(keys: Iterable[KeyLimits], accounts: Iterable[AccountLimits]) -> list[tuple[str, str, float, float | None]]:
    """(account, limit name, account limit, what its keys claim together or None = unlimited) for each
    limit of an account that is lower than what its keys claim: there, the account is the bottleneck."""
    keys = list(keys)
    out = []
    for acc in accounts:
        mine = [k for k in keys if k.account == acc.name]
        for attr in ("qps", "rpm", "tpm"):
            limit, claim = getattr(acc, attr), _claims(mine, attr)
            if limit is not None and mine and (claim is None or claim > limit):
                out.append((acc.name, attr, limit, claim))
    return out


def account_warnings(keys: Iterable[KeyLimits], accounts: Iterable[AccountLimits]) -> list[str]:
    """One line per account limit that its keys together claim more than."""
    per = {"qps": "/s", "rpm": " requests/min", "tpm": " tokens/min"}
    return [f"keys of account {name} claim {'unlimited' if claim is None else f'{claim:g} {attr}'}, "
            f"account allows {limit:g}: the pool will do <= {limit:g}{per[attr]}"
            for name, attr, limit, claim in over_claimed(keys, accounts)]


class KeyPool:
    """Key states, pacing and the choice of key. Every method takes the current time."""

    def __init__(self, keys: Iterable[KeyLimits], policy: PoolPolicy = PoolPolicy(), now: float = 0.0,
                 accounts: Iterable[AccountLimits] = ()):
        self.policy = policy
        accounts, keys = list(accounts), list(keys)
        # an account limit its keys cannot exceed together (their own windows sum to at most it) is
        # not paced again: a second bucket at the same rate would only lose slots to lateness
        tight = {(name, attr) for name, attr, *_ in over_claimed(keys, accounts)}
        self.accounts = {a.name: Rate(*(getattr(a, attr) if (a.name, attr) in tight else None
                                        for attr in ("qps", "rpm", "tpm")), policy, now=now) for a in accounts}
        self.keys = []
        for i, lim in enumerate(keys):
            if lim.account is not None and lim.account not in self.accounts:
                raise ValueError(f"key {lim.name!r}: unknown account {lim.account!r}")
            self.keys.append(_Key(lim, i, Rate(lim.qps, lim.rpm, lim.tpm, policy, burst=lim.burst, now=now),
                                  self.accounts.get(lim.account) if lim.account else None))
        if not self.keys:
            raise ValueError("a key pool needs at least one key")
        for k in self.keys:
            k.account_binding = any(name == k.limits.account for name, _ in tight)
        if policy.strategy not in _STRATEGIES:
            raise ValueError(f"unknown strategy {policy.strategy!r}")
        self._choose = _STRATEGIES[policy.strategy]
        self._cursor = 0
        self._by_name = {k.name: k for k in self.keys}

    # -- choosing -------------------------------------------------------------------------------
    def serving(self) -> list[_Key]:
        """The keys of the current config (none retired by a reload)."""
        return self._serving(None)

    def _serving(self, only: frozenset[str] | None) -> list[_Key]:
        """The keys of the current config (not retired), within `only` when given (a variant's keys)."""
        return [k for k in self.keys if not k.retired and (only is None or k.name in only)]

    def _candidates(self, now: float, avoid: frozenset[str], only: frozenset[str] | None = None) -> list[_Key]:
        """Keys a task may use: a retry prefers keys that have not failed it, as long as one of them
        is open (only paced or busy, not cooling); a disabled key only when its probe is due."""
        serving = self._serving(only)
        usable = [k for k in serving if not k.disabled or k.probe_at <= now]
        if avoid:
            preferred = [k for k in usable if k.name not in avoid]
            if any(k.open(now) for k in preferred):
                return preferred
        return usable or serving

    def acquire(self, now: float, avoid: frozenset[str] = frozenset(), cost: float = 0.0,
                only: frozenset[str] | None = None, spare: int = 0) -> Lease | None:
        """A lease on a key that may send a request of `cost` tokens right now; None if none may.
        `only`: one of these keys; `spare`: only while this many other keys of the pool stay ready."""
        ready = [k for k in self._candidates(now, avoid, only)
                 if (t := k.ready_at(now, cost)) is not None and t <= now + EPS]
        if not ready:
            return None
        if spare and self.ready_count(now, cost) <= spare:
            return None
        key = self._choose(self, ready, now)
        key.rate.take(now, cost)
        if key.account is not None:
            key.account.take(now, cost)
        key.in_flight += 1
        key.calls += 1
        key.last_sent = now
        probe = key.disabled or key.half_open
        key.probing = key.probing or probe
        return Lease(key.name, key.index, now, probe, cost)

    def ready_count(self, now: float, cost: float = 0.0) -> int:
        """How many keys of the pool could send a request of `cost` right now."""
        return sum(1 for k in self._serving(None) if not k.disabled
                   and (t := k.ready_at(now, cost)) is not None and t <= now + EPS)

    def ready_at(self, now: float, avoid: frozenset[str] = frozenset(), cost: float = 0.0,
                 only: frozenset[str] | None = None) -> float | None:
        """When `acquire` could next succeed by the clock alone; None if only a release can help."""
        keys = self._candidates(now, avoid, only)
        keys += [k for k in self._serving(only) if k.disabled and k.probe_at > now and k.name not in avoid
                 and k not in keys]
        times = [t for k in keys if (t := k.ready_at(now, cost)) is not None]
        return min(times) if times else None

    def any_open(self, now: float, only: frozenset[str] | None = None) -> bool:
        """Is some key serving (merely paced or busy)? If so, a task that waits is waiting for capacity."""
        return any(k.open(now) for k in self._serving(only))

    # -- reload -----------------------------------------------------------------------------------
    def reconfigure(self, keys: Iterable[KeyLimits], policy: PoolPolicy, now: float,
                    accounts: Iterable[AccountLimits] = (), replaced: Iterable[str] = ()) -> dict[str, list[str]]:
        """Apply a reloaded key file without dropping a request (issue 22). A key no longer listed (or
        `replaced`: same name, new secret or address) is retired: its in-flight requests finish and are
        released as usual, it takes no new one. A new key starts idle, so with slow start. A kept key
        keeps its state (cooling, in flight, AIMD) and takes its new limits at once. Returns
        {"added": [...], "removed": [...], "changed": [...]} by name."""
        keys, accounts = list(keys), list(accounts)
        if not keys:
            raise ValueError("a key pool needs at least one key")
        if policy.strategy not in _STRATEGIES:
            raise ValueError(f"unknown strategy {policy.strategy!r}")
        tight = {(name, attr) for name, attr, *_ in over_claimed(keys, accounts)}
        for a in accounts:
            limits = [getattr(a, attr) if (a.name, attr) in tight else None for attr in ("qps", "rpm", "tpm")]
            rate = self.accounts.get(a.name)
            if rate is None:
                self.accounts[a.name] = Rate(*limits, policy, now=now)
            else:
                rate.reconfigure(*limits, policy, now=now)
        replaced = set(replaced)
        wanted = {lim.name: lim for lim in keys}
        report: dict[str, list[str]] = {"added": [], "removed": [], "changed": []}
        for k in self.keys:
            if k.retired:
                continue
            if k.name not in wanted or k.name in replaced:
                k.retired = True
                report["removed" if k.name not in wanted else "changed"].append(k.name)
        for lim in keys:
            if lim.account is not None and lim.account not in self.accounts:
                raise ValueError(f"key {lim.name!r}: unknown account {lim.account!r}")
            old = self._by_name.get(lim.name)
            account = self.accounts.get(lim.account) if lim.account else None
            if old is not None and not old.retired:
                if old.limits != lim:
                    report["changed"].append(lim.name)
                old.limits, old.account = lim, account
                old.rate.reconfigure(lim.qps, lim.rpm, lim.tpm, policy, now=now, burst=lim.burst)
            else:
                k = _Key(lim, len(self.keys), Rate(lim.qps, lim.rpm, lim.tpm, policy, burst=lim.burst, now=now), account)
                self.keys.append(k)
                self._by_name[lim.name] = k
                if old is None:
                    report["added"].append(lim.name)
        for k in self.keys:
            k.account_binding = any(name == k.limits.account for name, _ in tight)
        self.policy = policy
        self._choose = _STRATEGIES[policy.strategy]
        return report

    # -- outcomes -------------------------------------------------------------------------------
    def release(self, lease: Lease, outcome: Outcome, now: float, retry_after: float | None = None,
                error: str | None = None, usage: float | None = None) -> None:
        """Record how the call with `lease` ended and move the key's state accordingly; `usage` is
        the tokens the answer reported (the estimate charged at acquire is corrected to it)."""
        key = self.keys[lease.index]
        key.in_flight -= 1
        if lease.probe:
            key.probing = False
        if usage is None and outcome not in (Outcome.OK, Outcome.BAD_RESPONSE):
            usage = 0.0  # refused, failed or never sent: the provider counted no tokens
        if usage is not None and lease.cost:
            for r in (key.rate, key.account):
                if r is not None:
                    r.correct(lease.cost - usage, now, lease.cost)
        if outcome is Outcome.ABANDONED:
            return
        key.done += 1
        if lease.probe and key.disabled and outcome not in DISABLING:
            key.disabled = False  # the probe got past authentication and billing: the key is back
            key.streak = 0
        if outcome is not Outcome.OK:
            key.last_error, key.last_detail = outcome.value, error
        stale = lease.sent_at < key.changed_at and not lease.probe  # sent before the last verdict
        p = self.policy
        if outcome is Outcome.OK:
            key.successes += 1
            for r in (key.rate, key.account):
                if r is not None:
                    r.grow(now)
            if stale:
                return
            key.streak = 0
            key.limited_streak = 0
            if key.disabled or key.half_open:
                key.disabled = key.half_open = False
                key.cool_until = float("-inf")
        elif outcome in RATE_LIMITS:
            key.rate_limited += 1
            # the tighter limit went too fast: the account's when its keys claim more than it allows,
            # else the key's (slowing a whole account for one key's 429 would cost every key)
            (key.account if key.account_binding else key.rate).decrease(now, lease.sent_at)
            if retry_after is not None and retry_after >= 0:
                wait = retry_after
            else:
                if lease.sent_at >= key.limited_at:  # a new 429, not one more answer to the same burst
                    key.limited_streak += 1
                    key.limited_at = now
                wait = min(p.default_cooldown, p.rate_limit_cooldown * 2 ** max(0, key.limited_streak - 1))
            key.cool_until = max(key.cool_until, now + wait)
        elif outcome in DISABLING:
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
        # BAD_REQUEST, BAD_RESPONSE: the request or the model was at fault; the key's state does not change

    # -- health -----------------------------------------------------------------------------------
    def effective_qps(self, name: str, now: float) -> float:
        """The rate the key sends at now, at most (its own limit; its account may hold it lower)."""
        k = self._by_name[name]
        mine = k.rate.qps_now(now)
        acc = k.account.qps_now(now) if k.account is not None else None
        if mine is None or (acc is not None and acc < mine):
            return acc or 0.0
        return mine

    def snapshot(self, now: float) -> list[KeyHealth]:
        return [KeyHealth(
            name=k.name, state=k.state(now), in_flight=k.in_flight, tokens=round(k.tokens_at(now), 3),
            calls=k.calls, successes=k.successes,
            success_rate=(k.successes / k.done) if k.done else None, last_error=k.last_error,
            last_error_detail=k.last_detail,
            cooldown_until=(k.cool_until if k.cool_until > now else (k.probe_at if k.disabled else None)),
            rate_limited=k.rate_limited, failures=k.failures, effective_qps=round(self.effective_qps(k.name, now), 3),
        ) for k in self._serving(None)]

    def state(self, name: str, now: float) -> KeyState:
        return self._by_name[name].state(now)

    # -- cover (issue 20.5, cover.py) ---------------------------------------------------------------
    def serving_at(self, now: float) -> float | None:
        """When the first key is open for ordinary tasks (≥ now; a cooling key when its cooling ends);
        None when every key is disabled (only a probe can bring one back)."""
        times = [max(now, k.cool_until) for k in self._serving(None) if not k.disabled]
        return min(times) if times else None

    def next_probe_at(self) -> float | None:
        """When the next probe of a disabled key may go (None: no disabled key waits for one)."""
        times = [k.probe_at for k in self._serving(None) if k.disabled and not k.probing and not k.in_flight]
        return min(times) if times else None

    def open_qps(self, now: float) -> float:
        """The send rate of the keys open now, together (what the shard can serve)."""
        return sum(self.effective_qps(k.name, now) for k in self._serving(None) if k.open(now))


# -- strategies: pick one of the keys that may send now --------------------------------------------

def _round_robin(pool: KeyPool, ready: list[_Key], now: float) -> _Key:
    n = len(pool.keys) or 1
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
