"""The key pool against real providers' rules (issue 8), on a fake clock: pacing that holds under
arrival jitter for the three window models, accounts, tokens with usage correction, AIMD and slow
start, 429 classes, billing, priorities and shedding.

The window checkers below are exact and independent of the pool: they replay the pool's send times,
each delayed by a random 0..J, and count what a provider's sliding window, fixed (calendar) window
or token bucket would see.
"""

from __future__ import annotations

import math
import random

import pytest

from hazardctl.keypool import (
    REFRESH,
    URGENT,
    AccountLimits,
    AcquireQueue,
    KeyLimits,
    KeyPool,
    Outcome,
    PoolPolicy,
    Waiter,
    account_warnings,
)

J = 0.03  # the simulator's --jitter-ms 30: each request reaches the provider 0..30 ms late


def greedy(p: KeyPool, until: float, cost: float = 0.0, start: float = 0.0, usage=None) -> list[tuple[float, str]]:
    """Send whenever the pool allows, answers at once (usage: tokens the answer reports, or None)."""
    now, sends = start, []
    while now <= until:
        lease = p.acquire(now, cost=cost)
        if lease is None:
            nxt = p.ready_at(now, cost=cost)
            assert nxt is not None and nxt > now
            now = nxt
            continue
        sends.append((now, lease.key))
        p.release(lease, Outcome.OK, now, usage=usage)
    return sends


def arrivals(times: list[float], jitter: float, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return sorted(t + rng.uniform(0.0, jitter) for t in times)


def max_sliding(ts: list[float], window: float = 1.0) -> int:
    """Most arrivals in any half-open window [a, a + window)."""
    best, j = 0, 0
    for i in range(len(ts)):
        while ts[i] - ts[j] >= window:
            j += 1
        best = max(best, i - j + 1)
    return best


def max_fixed(ts: list[float]) -> int:
    """Most arrivals in one calendar second [k, k+1)."""
    counts: dict[int, int] = {}
    for t in ts:
        counts[math.floor(t)] = counts.get(math.floor(t), 0) + 1
    return max(counts.values())


def bucket_refusals(ts: list[float], rate: float, capacity: float) -> int:
    tokens, last, refused = capacity, ts[0] if ts else 0.0, 0
    for t in ts:
        tokens = min(capacity, tokens + (t - last) * rate)
        last = t
        if tokens >= 1.0 - 1e-9:
            tokens -= 1.0
        else:
            refused += 1
    return refused


def policy(**kw) -> PoolPolicy:
    return PoolPolicy(**{"slow_start": 1.0, **kw})


# -- pacing under jitter ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_paced_sends_hold_in_every_window_model_under_30ms_jitter(seed):
    p = KeyPool([KeyLimits("a", 5.0)], policy(jitter_allowance=0.04))
    sends = [t for t, _ in greedy(p, 120.0)]
    got = arrivals(sends, J, seed)
    assert max_sliding(got) <= 5
    assert max_fixed(got) <= 5
    assert max_fixed([t + 0.5 for t in got]) <= 5  # calendar seconds at another phase
    assert bucket_refusals(got, 5.0, 5.0) == 0
    assert len(sends) / 120.0 >= 5.0 / 1.04 * 0.99  # the cost: J/(1+J) of the limit, no more


def late_client(p: KeyPool, until: float, late_max: float, seed: int = 1) -> list[float]:
    """A client whose sends go out 0..late_max after the pool said ready (timer, busy event loop);
    returns the moments it acquired (= when the request left)."""
    rng = random.Random(seed)
    now, sends = 0.0, []
    while now <= until:
        lease = p.acquire(now)
        if lease is None:
            now = p.ready_at(now) + rng.uniform(0.0, late_max)
            continue
        sends.append(now)
        p.release(lease, Outcome.OK, now)
    return sends


def test_a_late_client_makes_up_its_lateness_and_the_windows_still_hold():
    """Sends 0–5 ms late (the `catch_up` share of the 40 ms allowance) and arrivals 0–30 ms later
    still: every window holds, and the lateness does not cost throughput."""
    for seed in range(3):
        p = KeyPool([KeyLimits("acct", 25.0)], policy(jitter_allowance=0.04, catch_up=0.005))
        sends = late_client(p, 60.0, 0.005, seed)
        got = arrivals(sends, J, seed)
        assert max_sliding(got) <= 25 and max_fixed(got) <= 25 and bucket_refusals(got, 25.0, 25.0) == 0
        assert len(sends) / 60.0 >= 25 / 1.04 * 0.995
    no_catch_up = KeyPool([KeyLimits("acct", 25.0)], policy(jitter_allowance=0.04, catch_up=0.0))
    assert len(late_client(no_catch_up, 60.0, 0.005)) / 60.0 < 25 / 1.04 * 0.95  # each late ms lost


def test_without_the_margin_the_same_jitter_breaks_a_sliding_window():
    """The reason for the margin: pacing at exactly 1/qps lets 6 arrivals into some 1 s window."""
    p = KeyPool([KeyLimits("a", 5.0)], policy(jitter_allowance=0.0))
    worst = max(max_sliding(arrivals([t for t, _ in greedy(p, 120.0)], J, seed)) for seed in range(5))
    assert worst == 6


def test_a_fixed_window_never_sees_a_double_burst_at_the_second_boundary():
    """N at the end of one second + N at the start of the next is legal for a fixed window, not for a
    sliding one: the pool never produces it, whatever the phase of the provider's calendar seconds."""
    p = KeyPool([KeyLimits("a", 5.0, burst=1.0)], policy())
    got = arrivals([t for t, _ in greedy(p, 30.0, start=0.9)], J)
    assert max_sliding(got, 1.0) <= 5
    assert all(max_fixed([t + phase / 10 for t in got]) <= 5 for phase in range(10))


def test_several_keys_each_hold_their_own_window():
    p = KeyPool([KeyLimits(f"k{i}", 5.0) for i in range(10)], policy())
    sends = greedy(p, 60.0)
    for i in range(10):
        mine = arrivals([t for t, k in sends if k == f"k{i}"], J, i)
        assert max_sliding(mine) <= 5
    assert len(sends) / 60.0 >= 48.0 * 0.99


# -- accounts -----------------------------------------------------------------------------------

def test_an_account_paces_its_keys_together_below_its_own_limit():
    keys = [KeyLimits(f"k{i}", 5.0, account="A") for i in range(10)]
    p = KeyPool(keys, policy(), accounts=[AccountLimits("A", qps=25.0)])
    sends = greedy(p, 60.0)
    assert max_sliding(arrivals([t for t, _ in sends], J)) <= 25
    assert 25 / 1.04 * 0.98 <= len(sends) / 60.0 <= 25.0
    per_key = [sum(1 for _, k in sends if k == f"k{i}") for i in range(10)]
    assert max(per_key) - min(per_key) <= 2  # round robin shares the account fairly


def test_two_accounts_each_hold_their_limit_and_add_up():
    keys = [KeyLimits(f"k{i}", 5.0, account="A" if i < 5 else "B") for i in range(10)]
    p = KeyPool(keys, policy(), accounts=[AccountLimits("A", qps=25.0), AccountLimits("B", qps=25.0)])
    sends = greedy(p, 60.0)
    for acc, names in (("A", {f"k{i}" for i in range(5)}), ("B", {f"k{i}" for i in range(5, 10)})):
        assert max_sliding(arrivals([t for t, k in sends if k in names], J)) <= 25
    assert len(sends) / 60.0 >= 48.0 * 0.99


def test_account_rpm_is_a_sliding_minute_over_all_its_keys():
    keys = [KeyLimits(f"k{i}", 5.0, account="A") for i in range(3)]
    p = KeyPool(keys, policy(), accounts=[AccountLimits("A", rpm=60)])
    sends = [t for t, _ in greedy(p, 150.0)]
    assert max_sliding(sends, 60.0) <= 60


def test_a_warning_names_the_real_ceiling_when_keys_claim_more_than_their_account():
    keys = [KeyLimits(f"k{i}", 5.0, account="one") for i in range(10)]
    lines = account_warnings(keys, [AccountLimits("one", qps=25.0)])
    assert lines == ["keys of account one claim 50 qps, account allows 25: the pool will do <= 25/s"]
    assert account_warnings(keys[:5], [AccountLimits("one", qps=25.0)]) == []


def test_a_key_naming_an_unknown_account_is_refused():
    with pytest.raises(ValueError, match="unknown account"):
        KeyPool([KeyLimits("k", 5.0, account="nope")], policy())


# -- tokens ---------------------------------------------------------------------------------------

def test_token_pacing_holds_tpm_and_reaches_it():
    """tpm 60,000, 1,000 tokens a request: 1 request/s less the jitter margin, every window holds."""
    p = KeyPool([KeyLimits("a", 5.0, tpm=60_000)], policy())
    sends = [t for t, _ in greedy(p, 120.0, cost=1000, usage=1000)]
    assert max_sliding(arrivals(sends, J), 1.0) * 1000 <= 1000  # per second: tpm/60
    assert max_sliding(sends, 60.0) * 1000 <= 60_000
    assert len(sends) / 120.0 >= 1 / 1.04 * 0.99


def test_usage_refunds_an_overestimate_and_charges_an_underestimate():
    def rate(estimate, usage):
        p = KeyPool([KeyLimits("a", 100.0, tpm=60_000)], policy(jitter_allowance=0.0))
        return len(greedy(p, 60.0, cost=estimate, usage=usage)) / 60.0

    assert rate(1000, 1000) == pytest.approx(1.0, rel=0.03)
    assert rate(1400, 1000) == pytest.approx(1.0, rel=0.03)  # refunded: the estimate is not the rate
    assert rate(600, 1000) == pytest.approx(1.0, rel=0.03)  # charged the difference: no overrun
    assert rate(1000, None) == pytest.approx(1.0, rel=0.03)  # no usage: the estimate stands


def test_usage_that_comes_back_seconds_later_still_reaches_the_limit_and_never_exceeds_it():
    """As in the benchmark: estimate 1,338 tokens (max_tokens reserved), the provider counts 1,000,
    the answer (and its usage) comes 1–2 s after the send. A refund is kept whole even when it lifts
    the bucket above the next request's cost."""
    import heapq

    rng = random.Random(1)
    p = KeyPool([KeyLimits("a", 5.0, tpm=60_000)], policy())
    now, sends, pending = 0.0, [], []
    while now < 200.0:
        while pending and pending[0][0] <= now:
            t, _, lease = heapq.heappop(pending)
            p.release(lease, Outcome.OK, t, usage=1000)
        lease = p.acquire(now, cost=1338)
        if lease is not None:
            sends.append(now)
            heapq.heappush(pending, (now + rng.uniform(1.0, 2.0), len(sends), lease))
            continue
        now = min(p.ready_at(now, cost=1338), pending[0][0] if pending else math.inf)
    steady = [t for t in sends if t >= 20.0]
    assert len(steady) / (steady[-1] - steady[0]) >= 0.99 / 1.04  # tpm/60/1000 per s, less the margin
    got = arrivals(sends, J)
    assert max_sliding(got, 1.0) <= 1 and max_sliding(got, 60.0) * 1000 <= 60_000


def test_a_refused_or_abandoned_request_gives_its_tokens_back():
    p = KeyPool([KeyLimits("a", 100.0, tpm=60_000)], policy(jitter_allowance=0.0))
    lease = p.acquire(0.0, cost=1000)
    assert p.acquire(0.0, cost=1000) is None and p.ready_at(0.0, cost=1000) == pytest.approx(1.0)
    p.release(lease, Outcome.RATE_LIMITED_TOKENS, 0.1, retry_after=0.0)
    assert p.ready_at(0.1, cost=1000) == pytest.approx(0.1)  # the tokens are back (else ~1.4 s at 0.7x)
    lease = p.acquire(1.1, cost=1000)
    p.release(lease, Outcome.ABANDONED, 1.2)
    assert p.acquire(1.2, cost=1000) is not None  # never sent: nothing spent


def test_tokens_are_shared_by_the_keys_of_an_account():
    keys = [KeyLimits(f"k{i}", 5.0, account="A") for i in range(4)]
    p = KeyPool(keys, policy(jitter_allowance=0.0), accounts=[AccountLimits("A", tpm=120_000)])
    assert len(greedy(p, 60.0, cost=1000, usage=1000)) / 60.0 == pytest.approx(2.0, rel=0.03)


def test_a_request_larger_than_a_seconds_tokens_still_goes_after_a_longer_wait():
    p = KeyPool([KeyLimits("a", 5.0, tpm=60_000)], policy(jitter_allowance=0.0))
    sends = [t for t, _ in greedy(p, 30.0, cost=2500, usage=2500)]
    assert len(sends) / 30.0 == pytest.approx(0.4, rel=0.1)


# -- AIMD and slow start -----------------------------------------------------------------------------

def test_a_429_steps_the_rate_down_and_successes_bring_it_back_additively():
    p = KeyPool([KeyLimits("a", 5.0)], policy(jitter_allowance=0.0, aimd_decrease=0.7, aimd_recovery_s=5.0))
    assert p.effective_qps("a", 0.0) == pytest.approx(5.0)
    lease = p.acquire(0.0)
    p.release(lease, Outcome.RATE_LIMITED, 0.1, retry_after=0.0)
    assert p.effective_qps("a", 0.1) == pytest.approx(3.5)
    p.release(p.acquire(1.1), Outcome.OK, 1.1)  # 1 s of success: +1/5 of the limit
    assert p.effective_qps("a", 1.1) == pytest.approx(4.5)
    p.release(p.acquire(3.0), Outcome.OK, 3.0)
    assert p.effective_qps("a", 3.0) == pytest.approx(5.0)  # never above the limit


def test_answers_to_one_burst_decrease_the_rate_once():
    p = KeyPool([KeyLimits("a", 100.0, burst=5)], policy(jitter_allowance=0.0))
    leases = [p.acquire(0.0) for _ in range(5)]
    for i, lease in enumerate(leases):
        p.release(lease, Outcome.RATE_LIMITED, 0.2 + i * 0.01, retry_after=0.0)
    assert p.effective_qps("a", 0.3) == pytest.approx(70.0)


def test_a_429_slows_the_tighter_limit_the_account_when_its_keys_claim_more():
    keys = [KeyLimits("k0", 5.0, account="A"), KeyLimits("k1", 5.0, account="A")]
    p = KeyPool(keys, policy(jitter_allowance=0.0), accounts=[AccountLimits("A", qps=6.0)])
    p.release(p.acquire(0.0), Outcome.SURGE, 0.1, retry_after=0.0)
    assert p.effective_qps("k1", 0.1) == pytest.approx(4.2)  # the account's 6 × 0.7, below k1's own 5
    # an account with room for all its keys: only the key that got the 429 slows down
    p = KeyPool(keys, policy(jitter_allowance=0.0), accounts=[AccountLimits("A", qps=10.0)])
    lease = p.acquire(0.0)
    p.release(lease, Outcome.RATE_LIMITED, 0.1, retry_after=0.0)
    other = "k1" if lease.key == "k0" else "k0"
    assert p.effective_qps(lease.key, 0.1) == pytest.approx(3.5) and p.effective_qps(other, 0.1) == pytest.approx(5.0)


def test_slow_start_ramps_an_idle_key_instead_of_bursting():
    p = KeyPool([KeyLimits("a", 5.0)], PoolPolicy(jitter_allowance=0.0, slow_start=0.3, ramp_s=2.0, idle_s=10.0))
    sends = [t for t, _ in greedy(p, 5.0)]
    first = sum(1 for t in sends if t < 1.0)
    assert first <= 3  # half a limit or less in the first second (a provider's surge rule allows that)
    later = [t for t in sends if 3.0 <= t < 5.0]
    assert len(later) >= 9  # full rate after the ramp
    # idle again for longer than idle_s: the ramp restarts
    resumed = [t for t, _ in greedy(p, 21.0, start=20.0)]
    assert sum(1 for t in resumed if t < 21.0) <= 3


# -- 429 classes and billing -----------------------------------------------------------------------------

@pytest.mark.parametrize("outcome", [Outcome.RATE_LIMITED, Outcome.RATE_LIMITED_TOKENS, Outcome.SURGE])
def test_every_429_class_cools_briefly_without_retry_after_and_counts_as_rate_limited(outcome):
    p = KeyPool([KeyLimits("a", 100.0), KeyLimits("b", 100.0)], policy(default_cooldown=30.0))
    lease = p.acquire(0.0)
    p.release(lease, outcome, 0.5, error="HTTP 429 Throttling.RateQuota")
    h = {x.name: x for x in p.snapshot(0.5)}[lease.key]
    assert (h.last_error, h.rate_limited, h.failures) == (outcome.value, 1, 0)
    assert h.cooldown_until == pytest.approx(1.5)  # seconds, not default_cooldown


def test_insufficient_quota_disables_the_key_and_reprobes_it_like_a_401():
    p = KeyPool([KeyLimits("bill", 1000.0), KeyLimits("ok", 1000.0)], policy(reprobe_interval=60.0))
    lease = p.acquire(0.0)
    assert lease.key == "bill"
    p.release(lease, Outcome.INSUFFICIENT_QUOTA, 0.1)
    assert p.snapshot(0.1)[0].state.value == "disabled"
    used = set()
    for i in range(50):
        lease = p.acquire(1.0 + i * 0.01)
        used.add(lease.key)
        p.release(lease, Outcome.OK, 1.0 + i * 0.01)
    assert used == {"ok"}  # nothing goes to the unpaid key before its probe
    probe = next(lease for i in range(3) if (lease := p.acquire(60.2 + i * 0.01)).key == "bill")
    assert probe.probe
    p.release(probe, Outcome.OK, 61.0)  # paid: back in service
    assert p.snapshot(61.0)[0].state.value != "disabled"


# -- priorities and shedding -------------------------------------------------------------------------

def test_urgent_tasks_go_before_earlier_refreshes_when_keys_are_the_bottleneck():
    p = KeyPool([KeyLimits("a", 1.0)], policy(jitter_allowance=0.0))
    q = AcquireQueue(p)
    ws = [Waiter(0, 100.0, priority=REFRESH), Waiter(1, 100.0, priority=REFRESH),
          Waiter(2, 100.0, priority=URGENT), Waiter(3, 100.0, priority=URGENT)]
    for w in ws:
        q.add(w)
    order, now = [], 0.0
    while len(order) < 4:
        granted, _, wake = q.dispatch(now)
        order += [w.seq for w in granted]
        now = wake
    assert order == [2, 3, 0, 1]  # priority, then arrival


def test_a_waiter_that_cannot_start_a_call_in_time_is_expired_early():
    """With `reserve`, a key is only worth having while the expected call time (kept current by the
    scheduler: a running P99) still fits before the deadline: the task is shed at once when the
    first key back is later than deadline − reserve, or as soon as that moment passes."""
    p = KeyPool([KeyLimits("a", 1.0)], policy(jitter_allowance=0.0))
    q = AcquireQueue(p)
    q.add(Waiter(0, 10.0))
    assert len(q.dispatch(0.0)[0]) == 1  # the key's next send is at 1.0
    q.reserve = 0.5
    late = Waiter(1, 1.4, priority=REFRESH, reserve=True)  # 1.4 − 0.5 < 1.0: no call can end in time
    fits = Waiter(2, 1.6, priority=REFRESH, reserve=True)
    q.add(late)
    q.add(fits)
    granted, expired, wake = q.dispatch(0.0)
    assert not granted and expired == [late] and wake == pytest.approx(1.0)
    assert p.any_open(0.0)  # the keys are busy, not broken: the scheduler reports `stale` (shed)
    q.reserve = 0.7  # calls got slower while it waited: 1.6 − 0.7 < 1.0
    granted, expired, _ = q.dispatch(0.5)
    assert not granted and expired == [fits]
    retry = Waiter(3, 1.2, reserve=False)  # a retry: the deadline itself, no reserve
    q.add(retry)
    assert q.dispatch(1.0)[0] == [retry]


def test_under_overload_refreshes_absorb_the_shortfall():
    """Offered 1.4× what the key allows, 30 % refreshes, each task may wait 3 s: every urgent task
    gets a key in time; the refreshes are the ones shed."""
    p = KeyPool([KeyLimits("a", 10.0)], policy(jitter_allowance=0.0))
    q = AcquireQueue(p)
    rng = random.Random(3)
    t, seq, now = 0.0, 0, 0.0
    served = {URGENT: 0, REFRESH: 0}
    shed = {URGENT: 0, REFRESH: 0}
    offered = {URGENT: 0, REFRESH: 0}
    arrivals_at = []
    while t < 60.0:
        arrivals_at.append(t)
        t += 1 / 14.0
    i = 0
    while now < 65.0:
        while i < len(arrivals_at) and arrivals_at[i] <= now:
            pr = REFRESH if rng.random() < 0.3 else URGENT
            q.add(Waiter(seq, arrivals_at[i] + 3.0, priority=pr))
            offered[pr] += 1
            seq, i = seq + 1, i + 1
        granted, expired, wake = q.dispatch(now)
        for w in granted:
            served[w.priority] += 1
            p.release(w.lease, Outcome.OK, now)
        for w in expired:
            shed[w.priority] += 1
        nxt = arrivals_at[i] if i < len(arrivals_at) else 1e9
        now = min(wake if wake is not None else 1e9, nxt)
    assert shed[URGENT] == 0 and served[URGENT] == offered[URGENT]
    assert shed[REFRESH] > 0
    assert served[URGENT] + served[REFRESH] + shed[URGENT] + shed[REFRESH] == seq  # every task accounted for


# -- the same send times through the simulator's own limiters (tools/llm_sim/limits.py) ---------------

def refusals_by_sim(times: list[float], model: str, limit: float, surge: bool = False) -> int:
    from tools.llm_sim.limits import SurgeGuard, make_limiter

    lim = make_limiter(model, limit, 1.0, times[0] if times else 0.0)
    guard = SurgeGuard(limit) if surge else None
    refused = 0
    for t in times:
        if lim.wait(t) > 0 or (guard is not None and guard.wait(t) > 0):
            refused += 1
            continue
        lim.take(t)
        if guard is not None:
            guard.take(t)
    return refused


@pytest.mark.parametrize("model", ["token-bucket", "sliding-window", "fixed-window"])
def test_the_simulators_limiters_refuse_none_of_our_jittered_sends(model):
    """60 s of greedy sends (default policy, slow start included) of one 5-qps key and of an account
    of 25 qps over ten keys, each arrival 0–30 ms late: the simulator's limiter refuses nothing."""
    for seed in range(3):
        p = KeyPool([KeyLimits("a", 5.0)], PoolPolicy())
        assert refusals_by_sim(arrivals([t for t, _ in greedy(p, 60.0)], J, seed), model, 5) == 0
        keys = [KeyLimits(f"k{i}", 5.0, account="A") for i in range(10)]
        p = KeyPool(keys, PoolPolicy(), accounts=[AccountLimits("A", qps=25.0)])
        assert refusals_by_sim(arrivals([t for t, _ in greedy(p, 60.0)], J, seed), model, 25) == 0


def test_a_4s_slow_start_passes_the_simulators_surge_rule_from_idle():
    """The simulator's surge rule (half the limit in the first second after idle, then at most double
    second over second) refuses nothing of a ramp from 0.3 over 4 s (`slow_start_s: 4`), for a key
    and for an account, over 8 jitter draws; the 2 s default ramp is cheaper (3.4 instead of 6.7
    requests per 5-qps key per idle period) and trips that strict rule about once per start."""
    for seed in range(8):
        p = KeyPool([KeyLimits("a", 5.0)], PoolPolicy(slow_start=0.3, ramp_s=4.0))
        assert refusals_by_sim(arrivals([t for t, _ in greedy(p, 15.0)], J, seed), "sliding-window", 5, surge=True) == 0
        keys = [KeyLimits(f"k{i}", 5.0, account="A") for i in range(10)]
        p = KeyPool(keys, PoolPolicy(slow_start=0.3, ramp_s=4.0), accounts=[AccountLimits("A", qps=25.0)])
        assert refusals_by_sim(arrivals([t for t, _ in greedy(p, 15.0)], J, seed), "sliding-window", 25, surge=True) == 0
    no_ramp = KeyPool([KeyLimits("a", 5.0)], PoolPolicy(slow_start=1.0))
    assert refusals_by_sim(arrivals([t for t, _ in greedy(no_ramp, 15.0)], J, 0), "sliding-window", 5, surge=True) > 0
