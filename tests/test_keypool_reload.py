"""The key pool under variants, shadows and reloads (issue 22), on a fake clock: no HTTP, no sleeping.

- `only`: a variant's request goes to one of its keys, whatever the strategy would pick otherwise;
- a shadow request never takes the last ready key, and is served after every task that waits;
- `reconfigure`: a removed key finishes its in-flight calls and takes no new one, an added key starts
  with slow start, changed limits apply at once, a kept key keeps its state.
"""

from __future__ import annotations

import pytest

from hazardctl.keypool import SHADOW, AcquireQueue, KeyLimits, KeyPool, KeyState, Outcome, PoolPolicy, Waiter

PLAIN = PoolPolicy(jitter_allowance=0.0, slow_start=1.0)


def keys(n: int, qps: float = 5.0, **kw) -> list[KeyLimits]:
    return [KeyLimits(f"k{i}", qps, **kw) for i in range(n)]


def test_only_limits_a_request_to_its_variants_keys():
    p = KeyPool(keys(4, qps=100), PLAIN)
    got = []
    for i in range(20):
        lease = p.acquire(i * 0.1, only=frozenset({"k1", "k3"}))
        got.append(lease.key)
        p.release(lease, Outcome.OK, i * 0.1)
    assert set(got) == {"k1", "k3"}  # round robin would have used all four
    assert p.ready_at(0.0, only=frozenset({"k2"})) is not None


def test_a_shadow_never_takes_the_last_ready_key():
    p = KeyPool(keys(2, qps=1), PLAIN)
    assert p.acquire(0.0, spare=1) is not None  # two ready: the shadow may take one
    assert p.ready_count(0.0) == 1
    assert p.acquire(0.0, spare=1) is None  # one left: it stays for a task
    assert p.acquire(0.0) is not None  # a task takes it


def test_shadows_are_served_after_every_waiting_task_and_only_from_spare_keys():
    p = KeyPool(keys(3, qps=1), PLAIN)
    q = AcquireQueue(p)
    shadow = Waiter(0, deadline=100.0, priority=SHADOW)
    tasks = [Waiter(i, deadline=100.0, priority=3) for i in (1, 2)]  # refreshes, arrived after the shadow
    for w in [shadow, *tasks]:
        q.add(w)
    granted, expired, wake = q.dispatch(0.0)
    assert granted == tasks and not expired  # both tasks first; the shadow would take the last key
    assert shadow.lease is None and wake is not None and wake > 0.0
    # a second later all three keys are ready again and nobody else waits: the shadow gets one
    granted, _, _ = q.dispatch(1.0)
    assert granted == [shadow]


def test_a_removed_key_finishes_in_flight_and_takes_no_new_request():
    p = KeyPool(keys(2, qps=10), PLAIN)
    lease = p.acquire(0.0)
    assert lease.key == "k0"
    report = p.reconfigure([KeyLimits("k1", 10)], PLAIN, now=0.05)
    assert report == {"added": [], "removed": ["k0"], "changed": []}
    for i in range(10):  # every new request goes to k1
        le = p.acquire(1.0 + i)
        assert le.key == "k1"
        p.release(le, Outcome.OK, 1.0 + i)
    p.release(lease, Outcome.OK, 1.5)  # the in-flight call ends normally on the retired key
    assert p.keys[0].in_flight == 0 and [h.name for h in p.snapshot(2.0)] == ["k1"]


def test_an_added_key_starts_with_slow_start():
    policy = PoolPolicy(jitter_allowance=0.0, slow_start=0.3, ramp_s=2.0)
    p = KeyPool(keys(1, qps=10), policy)
    p.reconfigure([KeyLimits("k0", 10), KeyLimits("new", 10)], policy, now=100.0)
    assert p.effective_qps("new", 100.0) == pytest.approx(3.0)  # 0.3 x 10 until its ramp is done
    lease = p.acquire(100.0, only=frozenset({"new"}))
    p.release(lease, Outcome.OK, 100.0)
    assert p.effective_qps("new", 101.0) == pytest.approx(6.5)  # half-way up the 2 s ramp
    assert p.effective_qps("new", 102.5) == pytest.approx(10.0)


def test_changed_limits_apply_at_once_and_a_kept_key_keeps_its_state():
    p = KeyPool(keys(2, qps=1), PLAIN)
    lease = p.acquire(0.0)
    p.release(lease, Outcome.RATE_LIMITED, 0.0, retry_after=30.0)
    assert p.state("k0", 1.0) is KeyState.COOLING
    report = p.reconfigure([KeyLimits("k0", 1), KeyLimits("k1", 50)], PLAIN, now=1.0)
    assert report["changed"] == ["k1"] and p.state("k0", 1.0) is KeyState.COOLING  # the cooldown holds
    sends = []
    now = 1.0
    while now < 2.0:  # k1 now sends at 50/s, not 1/s
        le = p.acquire(now, only=frozenset({"k1"}))
        if le is None:
            now = p.ready_at(now, only=frozenset({"k1"}))
            continue
        sends.append(now)
        p.release(le, Outcome.OK, now)
    assert 48 <= len(sends) <= 51


def test_a_replaced_key_gets_a_fresh_state_under_its_old_name():
    p = KeyPool(keys(1, qps=5), PLAIN)
    old = p.acquire(0.0)
    p.release(old, Outcome.UNAUTHORIZED, 0.0)
    assert p.state("k0", 0.1) is KeyState.DISABLED
    report = p.reconfigure(keys(1, qps=5), PLAIN, now=1.0, replaced=["k0"])  # a rotated secret
    assert report["changed"] == ["k0"] and p.state("k0", 1.0) is KeyState.AVAILABLE
    fresh = p.acquire(1.0)
    assert fresh is not None and fresh.index == 1  # the new entry, not the disabled one


def test_a_reload_without_keys_or_with_a_bad_strategy_is_refused_and_nothing_changes():
    p = KeyPool(keys(2), PLAIN)
    with pytest.raises(ValueError):
        p.reconfigure([], PLAIN, now=0.0)
    with pytest.raises(ValueError):
        p.reconfigure(keys(1), PoolPolicy(strategy="fastest"), now=0.0)
    assert [h.name for h in p.snapshot(0.0)] == ["k0", "k1"]


def test_keep_ready_is_the_share_of_keys_a_shadow_leaves_ready_for_a_burst():
    p = KeyPool(keys(4, qps=1), PLAIN)
    q = AcquireQueue(p)
    q.shadow_reserve = 0.5  # 2 of 4 keys must stay ready after a shadow takes one
    shadows = [Waiter(i, deadline=100.0, priority=SHADOW) for i in range(3)]
    for w in shadows:
        q.add(w)
    granted, _, _ = q.dispatch(0.0)
    assert granted == shadows[:2] and p.ready_count(0.0) == 2  # 4 ready -> 3 -> 2: two stay ready
    granted, _, _ = q.dispatch(0.0)
    assert granted == [] and p.ready_count(0.0) == 2  # one more would leave only 1 of 4 ready
    q.shadow_reserve = 0.0  # at least one key always stays ready
    granted, _, _ = q.dispatch(0.0)
    assert granted == [shadows[2]] and p.ready_count(0.0) == 1
