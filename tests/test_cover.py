"""Shards that cover for each other (issue 20.5): the pure decision, on a fake clock, against the real pool."""

from hazardctl.keypool import KeyLimits, KeyPool, Outcome, PoolPolicy
from hazardctl.keypool.cover import Cover, paced_room

BUDGET = 10.0


def pool(n: int = 2, **policy) -> KeyPool:
    return KeyPool([KeyLimits(f"k{i}", qps=5.0) for i in range(n)], PoolPolicy(**policy), now=0.0)


def revoke_all(p: KeyPool, now: float) -> None:
    """Every key answers 401: each is disabled until its probe."""
    for _ in range(len(p.keys)):
        lease = p.acquire(now)
        assert lease is not None
        p.release(lease, Outcome.UNAUTHORIZED, now)


def test_all_keys_disabled_leaves_after_hold_then_probe_brings_it_back():
    p, c = pool(reprobe_interval=5.0), Cover(hold_s=1.0)
    assert p.serving_at(0.0) == 0.0 and c.update(0.0, p.serving_at(0.0), BUDGET) is None
    revoke_all(p, 1.0)
    assert p.serving_at(1.0) is None  # only a probe can tell
    assert c.update(1.0, p.serving_at(1.0), BUDGET) is None  # not at once: one bad moment shuffles nothing
    assert c.update(1.9, p.serving_at(1.9), BUDGET) is None
    assert c.update(2.0, p.serving_at(2.0), BUDGET) == "leave" and c.out
    assert c.update(2.5, p.serving_at(2.5), BUDGET) is None  # once per change
    # out of the group: the shell probes when the pool says a probe is due
    assert p.next_probe_at() == 6.0
    assert not c.probe_due(5.9, p.next_probe_at()) and c.probe_due(6.0, p.next_probe_at())
    lease = p.acquire(6.0)
    assert lease is not None and lease.probe
    assert p.next_probe_at() == 6.0  # the other key still waits for its probe
    p.release(lease, Outcome.OK, 6.5)  # the key is back
    assert p.serving_at(6.5) == 6.5
    assert c.update(6.5, p.serving_at(6.5), BUDGET) == "rejoin" and not c.out
    assert (c.leaves, c.rejoins) == (1, 1)


def test_failed_probe_keeps_it_out():
    p, c = pool(1, reprobe_interval=5.0), Cover(hold_s=0.0)
    revoke_all(p, 0.0)
    assert c.update(0.0, p.serving_at(0.0), BUDGET) == "leave"
    lease = p.acquire(5.0)
    p.release(lease, Outcome.UNAUTHORIZED, 5.2)
    assert p.next_probe_at() == 10.2
    assert c.update(5.2, p.serving_at(5.2), BUDGET) is None and c.out


def test_cooling_longer_than_the_budget_leaves_and_comes_back_before_cooling_ends():
    p, c = pool(1, default_cooldown=30.0, max_retry_per_key=1), Cover(hold_s=0.0)
    lease = p.acquire(0.0)
    p.release(lease, Outcome.SERVER_ERROR, 0.0)  # a failure streak: cooling 30 s, then half-open
    assert p.serving_at(0.0) == 30.0
    assert c.update(0.0, p.serving_at(0.0), BUDGET) == "leave"
    assert c.update(19.9, p.serving_at(19.9), BUDGET) is None
    # a task read now gets the key before its deadline: back in the group ahead of time
    assert c.update(20.0, p.serving_at(20.0), BUDGET) == "rejoin"


def test_a_short_cooling_or_one_healthy_key_never_leaves():
    p, c = pool(2, default_cooldown=5.0, max_retry_per_key=1), Cover(hold_s=0.0)
    lease = p.acquire(0.0)
    p.release(lease, Outcome.SERVER_ERROR, 0.0)
    assert c.update(0.0, p.serving_at(0.0), BUDGET) is None  # the other key serves
    lease = p.acquire(0.2)
    p.release(lease, Outcome.SERVER_ERROR, 0.2)
    assert p.serving_at(0.2) == 5.0  # both cooling, but for less than a budget
    assert c.update(0.2, p.serving_at(0.2), BUDGET) is None and not c.out


def test_recovery_within_the_hold_resets_it():
    c = Cover(hold_s=1.0)
    assert c.update(0.0, None, BUDGET) is None
    assert c.update(0.5, 0.5, BUDGET) is None  # a key back before the hold ran out
    assert c.update(1.2, None, BUDGET) is None  # the hold starts again
    assert c.update(2.2, None, BUDGET) == "leave"


def test_paced_room_follows_capacity():
    assert paced_room(25.0, BUDGET, 0) == 250  # five keys at 5 qps: 250 tasks in a 10 s budget
    assert paced_room(5.0, BUDGET, 30) == 20  # one key: 50, of which 30 held
    assert paced_room(5.0, BUDGET, 80) == 0
    assert paced_room(0.0, BUDGET, 0) == 1  # nothing open: one task at a time (a probe's worth)


def test_open_qps_counts_only_open_keys():
    p = pool(2, reprobe_interval=5.0)
    full = p.open_qps(0.0)
    assert full > 0
    lease = p.acquire(0.0)
    p.release(lease, Outcome.UNAUTHORIZED, 0.0)
    assert 0 < p.open_qps(0.0) < full
