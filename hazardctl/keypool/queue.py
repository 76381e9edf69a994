"""The waiting queue: hands keys to waiting tasks, priority first, then arrival order, with deadlines.

Pure logic with the clock passed in; `shell.AsyncKeyPool` drives it from the event loop.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from hazardctl.keypool.pool import KeyPool, Lease


#: Waiter priorities, most urgent first (issue 16): a motion cue crossed its threshold (`suspect`), a
#: group first seen, a group that changed, a refresh of an unchanged one.
SUSPECT, NEW, CHANGED, REFRESH = 0, 1, 2, 3
#: below every task: a shadow request (issue 22) of a candidate variant, from spare capacity only
SHADOW = 4
#: how often a shadow waiter kept out only by the spare rule looks again (no timer spin)
SHADOW_RECHECK_S = 0.02
#: share of the pool's keys that must stay ready after a shadow takes one. Ready keys are the pool's
#: reserve for a burst of tasks: a key's bucket holds one send, and a send a shadow makes leaves that key
#: unready for 1/qps s; with the last ready key alone kept (no share), bursty arrivals waited longer at
#: 40-45 tasks/s on 10 x 5 qps (scripts/bench_shadow.py's fake-clock rows).
SHADOW_RESERVE = 0.5
#: the task reasons of `messages.TaskReason`, ranked
RANKS = {"suspect": SUSPECT, "new": NEW, "changed": CHANGED, "refresh": REFRESH}
#: before issue 16 there were two classes, new/changed vs refresh; kept for callers of that time
URGENT = NEW


def rank(reason: str) -> int:
    """The waiter priority of a task's reason; an unknown reason ranks with `new`."""
    return RANKS.get(reason, NEW)


@dataclass(eq=False)
class Waiter:
    seq: int  # arrival order of the task: a retry keeps its place
    deadline: float  # the task's deadline (loop time)
    avoid: frozenset[str] = frozenset()
    lease: Lease | None = None
    priority: int = URGENT  # lower goes first
    cost: float = 0.0  # estimated tokens of the request
    reserve: bool = False  # a key is only worth having while `AcquireQueue.reserve` seconds remain
    only: frozenset[str] | None = None  # the keys of the task's variant (None: any key)

    @property
    def spare(self) -> bool:
        """A shadow request: it may only take a key while enough others stay ready (`AcquireQueue.shadow_reserve`)."""
        return self.priority >= SHADOW


class AcquireQueue:
    """Hands keys to waiting tasks: a key goes to the first waiter, by (priority, arrival), that can
    use it. When the keys are the bottleneck, suspects are served first, then new, then changed
    groups, and refreshes wait; a waiter that cannot get a key before its deadline is expired at once
    (the caller sheds it). Served strictly by rank, a lower rank is never served, so never shed,
    before a higher one that waits; when the stage is full, `victim` picks who gives way.

    `dispatch(now)` grants what can be granted, expires waiters that cannot be served before their
    deadline (past it, or no key back in time), and says when to call it again.
    """

    def __init__(self, pool: KeyPool):
        self.pool = pool
        self.waiters: list[Waiter] = []
        self.reserve = 0.0
        """seconds a call is expected to take (the shell keeps it current): a waiter with `reserve`
        expires once the deadline is nearer than that"""
        self.shadow_reserve = SHADOW_RESERVE
        """share of the pool's keys that must stay ready after a shadow request takes one (at least one key)"""

    def add(self, waiter: Waiter) -> None:
        bisect.insort(self.waiters, waiter, key=lambda w: (w.priority, w.seq))

    def remove(self, waiter: Waiter) -> None:
        try:
            self.waiters.remove(waiter)
        except ValueError:
            pass

    def __len__(self) -> int:
        return len(self.waiters)

    def displaceable(self) -> int:
        """Refreshes waiting for their first key: how many tasks a full stage may still read, since each
        arrival either outranks one of them (which gives way) or is a refresh that gives way itself."""
        return sum(1 for w in self.waiters if w.priority == REFRESH and w.reserve and w.lease is None)

    def victim(self, priority: int) -> Waiter | None:
        """The waiter that gives way when the stage is full and a task of `priority` arrives: the last
        in service order (lowest rank, latest arrival) still waiting for its first key, if it ranks below
        the arrival; removed from the queue (the caller sheds it). None: nobody ranks below the arrival
        (a refresh arriving then is the one shed). A retry is never displaced: it already spent a call."""
        for i in range(len(self.waiters) - 1, -1, -1):
            w = self.waiters[i]
            if w.priority >= SHADOW:  # shadows are not the stage's tasks: their own cap sheds them
                continue
            if w.priority <= priority:
                return None
            if w.reserve and w.lease is None:
                del self.waiters[i]
                return w
        return None

    def shadow_need(self) -> int:
        """Keys that must stay ready (besides the one taken) for a shadow request to get a key."""
        return max(1, math.ceil(self.shadow_reserve * len(self.pool.serving())))

    def dispatch(self, now: float) -> tuple[list[Waiter], list[Waiter], float | None]:
        granted: list[Waiter] = []
        expired: list[Waiter] = []
        kept: list[Waiter] = []
        pool = self.pool
        # once a plain waiter (no keys to avoid) is stuck, every later plain one of the same key set is too
        blocked: dict = {}  # key set (or ('spare', key set) for shadows) -> when it may serve again
        wake: float | None = None
        need = self.shadow_need() if any(w.spare for w in self.waiters) else 0
        spare_ok = need > 0 and pool.ready_count(now) > need

        def soonest(t: float | None) -> None:
            nonlocal wake
            if t is not None and (wake is None or t < wake):
                wake = t

        for w in self.waiters:
            latest = w.deadline - (self.reserve if w.reserve else 0.0)
            if latest <= now:
                expired.append(w)
                continue
            if w.spare and not spare_ok:  # a shadow: never the last ready key (one look per key set)
                if ("spare", w.only) not in blocked:
                    t = pool.ready_at(now, w.avoid, w.cost, w.only)
                    blocked[("spare", w.only)] = None if t is None else max(t, now + SHADOW_RECHECK_S)
                t = blocked[("spare", w.only)]
            elif not w.avoid and w.only in blocked:
                t = blocked[w.only]
            else:
                lease = pool.acquire(now, w.avoid, w.cost, w.only, need if w.spare else 0)
                if lease is not None:
                    w.lease = lease
                    granted.append(w)
                    if w.spare:
                        spare_ok = pool.ready_count(now) > need
                    continue
                t = pool.ready_at(now, w.avoid, w.cost, w.only)
                if w.spare and t is not None:
                    t = max(t, now + SHADOW_RECHECK_S)
                elif not w.avoid:
                    blocked[w.only] = t
            if t is not None and t > latest:
                expired.append(w)  # the first key back comes after the deadline: fail now, not later
                continue
            kept.append(w)
            soonest(t)
            soonest(latest)
        self.waiters = kept
        return granted, expired, wake
