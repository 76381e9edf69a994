"""Four ranks of tasks (issue 16.5): suspect > new > changed > refresh, on a fake clock, and who gives
way when the stage is full. The last test runs the asyncio shell on a real loop (well under a second)."""

from __future__ import annotations

import asyncio
import random

import pytest

from hazardctl.keypool import (
    CHANGED,
    NEW,
    REFRESH,
    SUSPECT,
    URGENT,
    AcquireQueue,
    AsyncKeyPool,
    Displaced,
    KeyLimits,
    KeyPool,
    Outcome,
    PoolPolicy,
    Waiter,
    rank,
)

PLAIN = PoolPolicy(jitter_allowance=0.0, slow_start=1.0)


def test_reasons_rank_suspect_new_changed_refresh():
    assert [rank(r) for r in ("suspect", "new", "changed", "refresh")] == [SUSPECT, NEW, CHANGED, REFRESH]
    assert SUSPECT < NEW < CHANGED < REFRESH
    assert URGENT == NEW  # the old two-class callers keep their meaning: new/changed before refresh
    assert rank("something-else") == NEW


def test_keys_go_by_rank_then_arrival_whatever_the_arrival_order():
    q = AcquireQueue(KeyPool([KeyLimits("a", 1.0)], PLAIN))
    arrivals = [REFRESH, CHANGED, NEW, SUSPECT, REFRESH, SUSPECT, CHANGED, NEW]  # the most urgent come last
    for seq, pr in enumerate(arrivals):
        q.add(Waiter(seq, 100.0, priority=pr))
    order, now = [], 0.0
    while len(order) < len(arrivals):
        granted, expired, wake = q.dispatch(now)
        assert not expired
        order += [(w.priority, w.seq) for w in granted]
        now = wake
    assert order == [(SUSPECT, 3), (SUSPECT, 5), (NEW, 2), (NEW, 7), (CHANGED, 1), (CHANGED, 6),
                     (REFRESH, 0), (REFRESH, 4)]


def test_under_overload_shedding_takes_refreshes_first_and_never_a_suspect():
    """Offered 1.3× what the key allows (10 % suspect, 30 % new, 30 % changed, 30 % refresh: the refreshes
    alone are more than the shortfall), each task may wait 3 s: suspects, new and changed groups are all
    served, refreshes absorb the shortfall; no key ever goes to a lower rank while a higher one waits
    (so a waiting refresh never holds what a suspect could use: a suspect is shed only when no key is
    back before its deadline, which shedding a refresh would not change)."""
    p = KeyPool([KeyLimits("a", 10.0)], PLAIN)
    q = AcquireQueue(p)
    rng = random.Random(16)
    ranks = [SUSPECT, NEW, CHANGED, REFRESH]
    offered, served, shed = ({r: 0 for r in ranks} for _ in range(3))
    arrivals = [i / 13.0 for i in range(13 * 60)]
    i, seq, now = 0, 0, 0.0
    while now < 65.0:
        while i < len(arrivals) and arrivals[i] <= now:
            pr = rng.choices(ranks, weights=[1, 3, 3, 3])[0]
            q.add(Waiter(seq, arrivals[i] + 3.0, priority=pr))
            offered[pr] += 1
            seq, i = seq + 1, i + 1
        granted, expired, wake = q.dispatch(now)
        for w in granted:
            # strict rank: nobody of a higher rank is left waiting when a key goes to this one
            assert all(other.priority >= w.priority for other in q.waiters)
            served[w.priority] += 1
            p.release(w.lease, Outcome.OK, now)
        for w in expired:
            shed[w.priority] += 1
        now = min(wake if wake is not None else 1e9, arrivals[i] if i < len(arrivals) else 1e9)
    assert sum(offered.values()) == seq == sum(served.values()) + sum(shed.values())  # every task accounted for
    assert shed[SUSPECT] == shed[NEW] == shed[CHANGED] == 0
    assert shed[REFRESH] > 0.5 * offered[REFRESH]  # the refreshes absorb the shortfall


def test_a_full_stage_makes_the_last_first_attempt_below_the_arrival_give_way():
    q = AcquireQueue(KeyPool([KeyLimits("a", 1.0)], PLAIN))
    s0 = Waiter(0, 100.0, priority=SUSPECT, reserve=True)
    n1 = Waiter(1, 100.0, priority=NEW, reserve=True)
    r2 = Waiter(2, 100.0, priority=REFRESH, reserve=True)
    r3 = Waiter(3, 100.0, priority=REFRESH, reserve=True)
    r4 = Waiter(4, 100.0, priority=REFRESH, reserve=False)  # a retry: it already spent a call, it stays
    for w in (r3, s0, r4, n1, r2):
        q.add(w)
    assert q.displaceable() == 2  # first-attempt refreshes
    assert q.victim(REFRESH) is None  # a refresh arriving outranks nobody: it gives way itself
    assert q.victim(SUSPECT) is r3  # the latest first-attempt refresh
    assert q.victim(CHANGED) is r2
    assert q.victim(CHANGED) is None  # only the retry and higher ranks are left
    assert q.victim(SUSPECT) is n1
    assert q.victim(SUSPECT) is None  # never a suspect for a suspect
    assert [w.seq for w in q.waiters] == [0, 4]


def test_the_displaced_waiter_is_told_so_and_the_arrival_takes_its_place():
    async def main():
        loop = asyncio.get_running_loop()
        ap = AsyncKeyPool(KeyPool([KeyLimits("a", 1000.0, max_in_flight=1)], now=loop.time()))
        held = await ap.acquire(loop.time() + 5)  # the only in-flight slot: everyone else waits
        refresh = asyncio.ensure_future(ap.acquire(loop.time() + 5, priority=REFRESH, reserve=True))
        await asyncio.sleep(0.01)
        assert ap.make_room(REFRESH) is False  # another refresh would give way itself
        assert ap.make_room(SUSPECT) is True
        with pytest.raises(Displaced):
            await refresh
        suspect = asyncio.ensure_future(ap.acquire(loop.time() + 5, priority=SUSPECT, reserve=True))
        await asyncio.sleep(0.01)
        assert ap.make_room(NEW) is True  # nobody below a new task: it may still wait (over the cap)
        ap.release(held, Outcome.OK)
        return await asyncio.wait_for(suspect, 1.0)

    assert asyncio.run(main()).key == "a"
