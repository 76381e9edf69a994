"""The key pool's rules, one test each, on a fake clock (plain floats): no HTTP, no sleeping.

The last tests run the asyncio shell on a real event loop for well under a second each.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from hazardctl.keypool import (
    AcquireQueue,
    AsyncKeyPool,
    KeyLimits,
    KeyPool,
    KeyState,
    NoKeyInTime,
    Outcome,
    PoolPolicy,
    Waiter,
    should_retry,
)


def pool(*limits: KeyLimits, **policy) -> KeyPool:
    """A pool without jitter margin or slow start, so these tests see the plain rules (the margin,
    slow start and AIMD have their own tests in tests/test_keypool_limits.py)."""
    return KeyPool(limits, PoolPolicy(**{"jitter_allowance": 0.0, "slow_start": 1.0, **policy}))


def keys(n: int, qps: float = 5.0, **kw) -> list[KeyLimits]:
    return [KeyLimits(f"k{i}", qps, **kw) for i in range(n)]


def use(p: KeyPool, now: float, avoid: frozenset = frozenset()) -> str | None:
    """One call that succeeds at once; the key's name (None if no key may send)."""
    lease = p.acquire(now, avoid)
    if lease is None:
        return None
    p.release(lease, Outcome.OK, now)
    return lease.key


def drain(p: KeyPool, until: float, start: float = 0.0, avoid: frozenset = frozenset()) -> list[tuple[float, str]]:
    """Greedy client: acquire whenever the pool says a key is ready, release at once (OK)."""
    now, sends = start, []
    while now <= until:
        lease = p.acquire(now, avoid)
        if lease is None:
            nxt = p.ready_at(now, avoid)
            assert nxt is not None and nxt > now, "pool said not ready but gave no future time"
            now = nxt
            continue
        sends.append((now, lease.key))
        p.release(lease, Outcome.OK, now)
    return sends


# -- pacing -----------------------------------------------------------------------------------------

def test_qps_pacing_spaces_sends_evenly():
    p = pool(KeyLimits("a", 5.0))
    assert p.acquire(0.0) is not None
    assert p.acquire(0.0) is None and p.acquire(0.19) is None
    assert p.ready_at(0.0) == pytest.approx(0.2)
    sends = [t for t, _ in drain(p, 10.0, start=0.2)]
    assert len(sends) == 50  # 0.2 … 10.0, one every 0.2 s
    gaps = [b - a for a, b in zip(sends, sends[1:])]
    assert min(gaps) >= 0.2 - 1e-9


def test_paced_sends_never_trip_a_server_bucket_of_capacity_qps_even_with_jitter():
    """The provider's bucket (capacity qps, refill qps/s) sees our sends delayed by 0–300 ms."""
    p = pool(KeyLimits("a", 5.0))
    rng = random.Random(7)
    arrivals = sorted(t + rng.uniform(0.0, 0.3) for t, _ in drain(p, 120.0))
    tokens, last, rejected = 5.0, 0.0, 0
    for t in arrivals:
        tokens = min(5.0, tokens + (t - last) * 5.0)
        last = t
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            rejected += 1
    assert rejected == 0


def test_burst_capacity_allows_that_many_at_once():
    p = pool(KeyLimits("a", 5.0, burst=3.0))
    assert [p.acquire(0.0) is not None for _ in range(4)] == [True, True, True, False]


def test_rpm_sliding_window():
    p = pool(KeyLimits("a", 10.0, rpm=20))
    sends = [t for t, _ in drain(p, 180.0)]
    for i, t in enumerate(sends):  # any 60 s window holds at most 20 sends
        assert sum(1 for u in sends[i:] if u < t + 60.0) <= 20
    assert sends[20] >= sends[0] + 60.0  # the 21st waits for the first to leave the window
    assert 55 <= len(sends) <= 61


def test_several_in_flight_up_to_the_cap_then_wait_for_a_release():
    p = pool(KeyLimits("a", 1000.0, max_in_flight=2, burst=10))
    a, b = p.acquire(0.0), p.acquire(0.0)
    assert a and b and p.acquire(0.0) is None
    assert p.state("a", 0.0) is KeyState.IN_USE
    assert p.ready_at(0.0) is None  # only a release can help: no timer, no polling
    p.release(a, Outcome.OK, 0.5)
    assert p.acquire(0.5) is not None


# -- strategies -------------------------------------------------------------------------------------

def test_round_robin_rotates_and_skips_paced_keys():
    p = pool(*keys(3, qps=1000.0))
    assert [p.acquire(float(i)).key for i in range(6)] == ["k0", "k1", "k2", "k0", "k1", "k2"]
    p2 = pool(*keys(3, qps=1.0))
    assert [p2.acquire(0.0).key for _ in range(3)] == ["k0", "k1", "k2"]
    assert p2.acquire(0.5) is None


def test_round_robin_spreads_calls_evenly_under_saturation():
    p = pool(*keys(10, qps=5.0))
    counts: dict[str, int] = {}
    for _, k in drain(p, 60.0):
        counts[k] = counts.get(k, 0) + 1
    assert max(counts.values()) - min(counts.values()) <= 1


def test_least_loaded_picks_fewest_in_flight_relative_to_rate():
    p = pool(KeyLimits("a", 100.0, burst=10), KeyLimits("b", 100.0, burst=10), KeyLimits("c", 200.0, burst=10),
             strategy="least_loaded")
    held = [p.acquire(0.0) for _ in range(4)]
    # a:1 → b:1 → c:1 (c has twice the rate, so 1/200 < 1/100) → c:2 (2/200 == 1/100; c idle longest? no: a)
    assert [h.key for h in held[:3]] == ["a", "b", "c"]
    assert held[3].key == "c"  # 1/200 is lighter than 1/100
    p.release(held[0], Outcome.OK, 0.1)
    assert p.acquire(0.1).key == "a"


def test_priority_uses_the_lowest_number_first_and_spills_over_when_paced():
    p = pool(KeyLimits("backup", 5.0, priority=2), KeyLimits("main", 5.0, priority=1), strategy="priority")
    assert p.acquire(0.0).key == "main"
    assert p.acquire(0.0).key == "backup"  # main is paced: spill over
    assert p.acquire(0.2).key == "main"


def test_weighted_splits_by_weight():
    p = pool(KeyLimits("a", 1000.0, weight=3.0), KeyLimits("b", 1000.0, weight=1.0), strategy="weighted")
    picks = []
    for i in range(400):
        lease = p.acquire(i * 0.01)
        picks.append(lease.key)
        p.release(lease, Outcome.OK, i * 0.01)
    assert picks.count("a") == 300 and picks.count("b") == 100
    assert picks[:4].count("a") == 3  # smooth: interleaved, not 300 a's then 100 b's


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError):
        pool(KeyLimits("a", 1.0), strategy="random")


# -- 429 --------------------------------------------------------------------------------------------

def test_429_cools_until_retry_after_and_other_keys_carry_on():
    p = pool(*keys(2, qps=1000.0))
    lease = p.acquire(0.0)
    p.release(lease, Outcome.RATE_LIMITED, 1.0, retry_after=4.0)
    assert p.state(lease.key, 1.0) is KeyState.COOLING
    assert {use(p, 1.0 + i * 0.01) for i in range(50)} == {"k1"}
    assert p.state(lease.key, 5.0) is KeyState.AVAILABLE
    only_k0 = pool(KeyLimits("k0", 1000.0))
    l2 = only_k0.acquire(0.0)
    only_k0.release(l2, Outcome.RATE_LIMITED, 1.0, retry_after=4.0)
    assert only_k0.acquire(4.99) is None and only_k0.ready_at(2.0) == pytest.approx(5.0)
    assert only_k0.acquire(5.0) is not None


def test_429_without_retry_after_costs_seconds_doubling_while_it_repeats():
    """No Retry-After: `rate_limit_cooldown` (1 s), doubled for each 429 in a row, capped by
    `default_cooldown`; a success resets it."""
    p = pool(KeyLimits("a", 1000.0), default_cooldown=7.0, rate_limit_cooldown=1.0)
    t, ends = 0.0, []
    for _ in range(5):
        p.release(p.acquire(t), Outcome.RATE_LIMITED, t + 0.1)
        ends.append(round(p.ready_at(t + 0.1) - (t + 0.1), 6))
        t = p.ready_at(t + 0.1)
    assert ends == [1.0, 2.0, 4.0, 7.0, 7.0]
    assert p.snapshot(t - 7.0)[0].cooldown_until == pytest.approx(t)
    p.release(p.acquire(t), Outcome.OK, t + 0.1)
    p.release(p.acquire(t + 0.2), Outcome.RATE_LIMITED, t + 0.3)
    assert p.ready_at(t + 0.3) == pytest.approx(t + 1.3)  # back to 1 s after a success


def test_answers_to_the_same_burst_count_as_one_429():
    """Requests sent before a 429 came back answer 429 too: they neither double the cooldown again."""
    p = pool(KeyLimits("a", 1000.0, burst=5), rate_limit_cooldown=1.0)
    leases = [p.acquire(0.0) for _ in range(4)]
    for i, lease in enumerate(leases):
        p.release(lease, Outcome.RATE_LIMITED, 0.5 + i * 0.01)
    assert p.ready_at(0.6) == pytest.approx(0.53 + 1.0)


def test_repeated_429_extends_and_never_shortens_the_cooldown():
    p = pool(KeyLimits("a", 1000.0, burst=5))
    l1, l2, l3 = p.acquire(0.0), p.acquire(0.0), p.acquire(0.0)
    p.release(l1, Outcome.RATE_LIMITED, 0.0, retry_after=10.0)
    p.release(l2, Outcome.RATE_LIMITED, 1.0, retry_after=2.0)  # would end at 3: ignored
    assert p.ready_at(1.0) == pytest.approx(10.0)
    p.release(l3, Outcome.RATE_LIMITED, 2.0, retry_after=20.0)  # ends at 22: extends
    assert p.ready_at(2.0) == pytest.approx(22.0)


# -- 401 / 403 --------------------------------------------------------------------------------------

def test_401_disables_the_key_and_probes_it_again_slowly():
    p = pool(KeyLimits("bad", 1000.0), KeyLimits("good", 1000.0), reprobe_interval=300.0)
    bad = p.acquire(0.0)
    assert bad.key == "bad"
    p.release(bad, Outcome.UNAUTHORIZED, 0.5)
    assert p.state("bad", 0.5) is KeyState.DISABLED
    used = {use(p, 1.0 + i * 0.01) for i in range(200)}
    assert used == {"good"}  # nothing goes to the disabled key before its probe time
    probe = next(lease for i in range(3) if (lease := p.acquire(300.5 + i * 0.01)).key == "bad")
    assert probe.probe
    assert all(use(p, 300.6 + i * 0.01) == "good" for i in range(20))  # one probe at a time
    p.release(probe, Outcome.UNAUTHORIZED, 301.0)
    assert p.state("bad", 301.0) is KeyState.DISABLED
    assert all(use(p, 302.0 + i) == "good" for i in range(100))  # next probe at 601
    probe2 = next(lease for i in range(3) if (lease := p.acquire(601.0 + i * 0.01)).key == "bad")
    p.release(probe2, Outcome.OK, 601.5)
    assert p.state("bad", 601.5) is KeyState.AVAILABLE


def test_a_disabled_key_with_requests_sent_before_the_401_stays_disabled():
    p = pool(KeyLimits("bad", 1000.0, burst=3), reprobe_interval=100.0)
    l1, l2 = p.acquire(0.0), p.acquire(0.0)
    p.release(l1, Outcome.UNAUTHORIZED, 0.5)
    p.release(l2, Outcome.OK, 0.6)  # sent before the verdict: no proof the key works now
    assert p.state("bad", 0.6) is KeyState.DISABLED
    assert p.ready_at(0.6) == pytest.approx(100.5)  # the only key: wait for its probe


# -- 5xx / timeouts / connection: streak → cool → half-open ----------------------------------------

@pytest.mark.parametrize("failure", [Outcome.SERVER_ERROR, Outcome.TIMEOUT, Outcome.CONNECTION])  # not BAD_RESPONSE: test_answers_health
def test_failure_streak_cools_the_key_then_a_half_open_probe_brings_it_back(failure):
    p = pool(KeyLimits("a", 1000.0), KeyLimits("b", 1000.0), max_retry_per_key=3, default_cooldown=20.0)
    t = 0.0
    for n in range(3):
        lease = p.acquire(t, frozenset({"b"}))
        assert lease.key == "a"
        p.release(lease, failure, t + 0.1)
        t += 1.0
        assert p.state("a", t) is (KeyState.AVAILABLE if n < 2 else KeyState.COOLING)
    assert p.snapshot(t)[0].cooldown_until == pytest.approx(22.1)
    assert all(use(p, t + i * 0.01) == "b" for i in range(50))
    probe = p.acquire(22.2, frozenset({"b"}))
    assert probe.key == "a" and probe.probe
    assert p.acquire(22.3, frozenset({"b"})).key == "b"  # half-open: a single probe in flight
    p.release(probe, failure, 23.0)  # probe fails: cool again at once
    assert p.state("a", 23.0) is KeyState.COOLING and p.snapshot(23.0)[0].cooldown_until == pytest.approx(43.0)
    assert use(p, 23.5, frozenset({"b"})) == "b"  # a retry avoiding b still goes to b while a cools
    probe = p.acquire(43.0, frozenset({"b"}))
    p.release(probe, Outcome.OK, 43.5)  # probe succeeds: closed again, several in flight
    assert p.state("a", 43.5) is KeyState.AVAILABLE
    assert p.acquire(44.0, frozenset({"b"})).key == "a" and p.acquire(44.01, frozenset({"b"})).key == "a"


def test_a_success_resets_the_streak():
    p = pool(KeyLimits("a", 1000.0), max_retry_per_key=3)
    for i, outcome in enumerate([Outcome.SERVER_ERROR] * 2 + [Outcome.OK] + [Outcome.SERVER_ERROR] * 2):
        p.release(p.acquire(float(i)), outcome, i + 0.1)
    assert p.state("a", 10.0) is KeyState.AVAILABLE


def test_failures_of_requests_sent_before_the_cooldown_do_not_extend_it():
    p = pool(KeyLimits("a", 1000.0, burst=10), max_retry_per_key=2, default_cooldown=10.0)
    leases = [p.acquire(0.0) for _ in range(5)]
    for i, lease in enumerate(leases):
        p.release(lease, Outcome.TIMEOUT, 1.0 + i)
    assert p.ready_at(5.0) == pytest.approx(12.0)  # cooled at t=2 by the 2nd failure, not moved by the rest


# -- 400 / 413 and the retry rule -------------------------------------------------------------------

def test_bad_request_changes_nothing_and_is_not_retried():
    p = pool(KeyLimits("a", 1000.0), max_retry_per_key=1)
    p.release(p.acquire(0.0), Outcome.BAD_REQUEST, 0.1)
    assert p.state("a", 0.1) is KeyState.AVAILABLE
    assert not should_retry(Outcome.BAD_REQUEST, 0)


def test_retry_rules():
    assert not should_retry(Outcome.OK, 0)
    for o in (Outcome.RATE_LIMITED, Outcome.UNAUTHORIZED, Outcome.SERVER_ERROR, Outcome.TIMEOUT, Outcome.CONNECTION):
        assert should_retry(o, 0)
    assert should_retry(Outcome.BAD_RESPONSE, 1) and not should_retry(Outcome.BAD_RESPONSE, 2)  # once


def test_a_retry_avoids_the_keys_that_failed_unless_none_other_is_left():
    p = pool(*keys(2, qps=1000.0))
    assert p.acquire(0.0, frozenset({"k0"})).key == "k1"
    assert p.acquire(1.0, frozenset({"k0", "k1"})) is not None  # tried them all: any key again


# -- health -----------------------------------------------------------------------------------------

def test_snapshot_reports_each_keys_health():
    p = pool(KeyLimits("a", 5.0), KeyLimits("b", 5.0))
    la, lb = p.acquire(0.0), p.acquire(0.0)
    p.release(la, Outcome.OK, 1.0)
    p.release(lb, Outcome.RATE_LIMITED, 1.0, retry_after=3.0, error="429 from provider")
    a, b = p.snapshot(1.0)
    assert (a.state, a.calls, a.successes, a.success_rate, a.in_flight) == (KeyState.AVAILABLE, 1, 1, 1.0, 0)
    assert a.tokens == pytest.approx(1.0)
    assert (b.state, b.success_rate, b.cooldown_until) == (KeyState.COOLING, 0.0, 4.0)
    assert (b.last_error, b.last_error_detail, b.rate_limited) == ("rate_limited_requests", "429 from provider", 1)


# -- the FIFO queue with deadlines (pure) -----------------------------------------------------------

def test_waiters_are_served_first_come_first_served():
    q = AcquireQueue(pool(KeyLimits("a", 5.0)))
    ws = [Waiter(seq, deadline=100.0) for seq in range(4)]
    for w in reversed(ws):
        q.add(w)
    order, now = [], 0.0
    while len(order) < 4:
        granted, expired, wake = q.dispatch(now)
        assert not expired
        order += [w.seq for w in granted]
        for w in granted:
            q.pool.release(w.lease, Outcome.OK, now)
        if wake is not None:
            now = wake
    assert order == [0, 1, 2, 3]
    assert now == pytest.approx(0.6)  # woke exactly when each token was due


def test_a_retry_keeps_its_place_ahead_of_later_tasks():
    q = AcquireQueue(pool(KeyLimits("a", 5.0)))
    q.pool.acquire(0.0)
    q.add(Waiter(5, 100.0))
    q.add(Waiter(2, 100.0))  # arrived earlier, now retrying
    granted, _, wake = q.dispatch(0.0)
    assert not granted and wake == pytest.approx(0.2)
    granted, _, _ = q.dispatch(0.2)
    assert [w.seq for w in granted] == [2]


def test_a_key_goes_to_the_earliest_waiter_that_can_use_it():
    p = pool(KeyLimits("a", 1000.0), KeyLimits("b", 1.0))
    p.acquire(0.0, frozenset({"a"}))  # b is now paced for 1 s
    q = AcquireQueue(p)
    first = Waiter(0, 100.0, avoid=frozenset({"a"}))  # retry: a failed it; waits for b
    second = Waiter(1, 100.0)
    q.add(first)
    q.add(second)
    granted, expired, wake = q.dispatch(0.5)
    assert [w.seq for w in granted] == [1] and granted[0].lease.key == "a"
    assert not expired and wake == pytest.approx(1.0)


def test_all_keys_cooling_wait_for_the_first_back_within_the_deadline():
    p = pool(*keys(2, qps=1000.0))
    p.release(p.acquire(0.0), Outcome.RATE_LIMITED, 0.0, retry_after=5.0)
    p.release(p.acquire(0.0), Outcome.RATE_LIMITED, 0.0, retry_after=3.0)
    q = AcquireQueue(p)
    w = Waiter(0, deadline=10.0)
    q.add(w)
    granted, expired, wake = q.dispatch(0.0)
    assert not granted and not expired and wake == pytest.approx(3.0)
    granted, _, _ = q.dispatch(3.0)
    assert granted == [w] and w.lease.key == "k1"


def test_all_keys_cooling_beyond_the_deadline_fails_at_once():
    p = pool(*keys(2, qps=1000.0))
    p.release(p.acquire(0.0), Outcome.RATE_LIMITED, 0.0, retry_after=30.0)
    p.release(p.acquire(0.0), Outcome.UNAUTHORIZED, 0.0)
    q = AcquireQueue(p)
    w = Waiter(0, deadline=10.0)
    q.add(w)
    granted, expired, _ = q.dispatch(1.0)
    assert expired == [w] and not granted  # no waiting 9 s for nothing


def test_a_waiter_blocked_only_by_in_flight_expires_at_its_deadline():
    p = pool(KeyLimits("a", 1000.0, max_in_flight=1))
    p.acquire(0.0)
    q = AcquireQueue(p)
    q.add(Waiter(0, deadline=2.0))
    _, expired, wake = q.dispatch(0.0)
    assert not expired and wake == 2.0
    _, expired, _ = q.dispatch(2.0)
    assert len(expired) == 1


# -- the asyncio shell on a real loop ---------------------------------------------------------------

def test_async_acquire_is_fifo_paced_and_sleeps_instead_of_polling():
    async def main():
        ap = AsyncKeyPool(KeyPool([KeyLimits("a", 20.0)], now=asyncio.get_running_loop().time()))
        t0 = ap.now()
        got: list[tuple[int, float]] = []

        async def task(i: int):
            lease = await ap.acquire(t0 + 5.0, seq=i)
            got.append((i, ap.now() - t0))
            ap.release(lease, Outcome.OK)

        await asyncio.gather(*(task(i) for i in range(6)))
        return got, ap.dispatches

    got, dispatches = asyncio.run(main())
    assert [i for i, _ in got] == list(range(6))
    for n, (_, t) in enumerate(got):
        assert t >= n * 0.05 - 1e-3  # never early
    assert got[-1][1] < 0.25 + 0.75  # and not much late (generous: shared CI machines)
    assert dispatches <= 6 + 6 + 6 + 3  # one per arrival, release and timer: no spinning


def test_async_acquire_fails_fast_when_no_key_is_back_before_the_deadline():
    async def main():
        loop = asyncio.get_running_loop()
        ap = AsyncKeyPool(KeyPool([KeyLimits("a", 5.0)], PoolPolicy(default_cooldown=60.0), now=loop.time()))
        ap.release(await ap.acquire(loop.time() + 1.0), Outcome.RATE_LIMITED, retry_after=60.0)
        t = time.monotonic()
        with pytest.raises(NoKeyInTime):
            await ap.acquire(loop.time() + 5.0)
        return time.monotonic() - t

    assert asyncio.run(main()) < 0.5


def test_async_acquire_cancelled_gives_its_place_and_lease_back():
    async def main():
        loop = asyncio.get_running_loop()
        ap = AsyncKeyPool(KeyPool([KeyLimits("a", 1000.0, max_in_flight=1)], now=loop.time()))
        held = await ap.acquire(loop.time() + 5)
        waiting = asyncio.ensure_future(ap.acquire(loop.time() + 5))
        await asyncio.sleep(0.01)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert len(ap.queue) == 0
        ap.release(held, Outcome.OK)
        lease = await asyncio.wait_for(ap.acquire(loop.time() + 5), 1.0)
        return lease, ap.pool.snapshot(loop.time())[0]

    lease, health = asyncio.run(main())
    assert lease.key == "a" and health.in_flight == 1
