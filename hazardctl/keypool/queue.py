"""The waiting queue: hands keys to waiting tasks, priority first, then arrival order, with deadlines.

Pure logic with the clock passed in; `shell.AsyncKeyPool` drives it from the event loop.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from hazardctl.keypool.pool import KeyPool, Lease


#: Waiter priorities: tasks for new or changed groups go before refreshes of unchanged ones.
URGENT, REFRESH = 0, 1


@dataclass(eq=False)
class Waiter:
    seq: int  # arrival order of the task: a retry keeps its place
    deadline: float  # the task's deadline (loop time)
    avoid: frozenset[str] = frozenset()
    lease: Lease | None = None
    priority: int = URGENT  # lower goes first
    cost: float = 0.0  # estimated tokens of the request
    reserve: bool = False  # a key is only worth having while `AcquireQueue.reserve` seconds remain


class AcquireQueue:
    """Hands keys to waiting tasks: a key goes to the first waiter, by (priority, arrival), that can
    use it. When the keys are the bottleneck, urgent tasks are served first and refreshes wait; a
    waiter that cannot get a key before its deadline is expired at once (the caller sheds it).

    `dispatch(now)` grants what can be granted, expires waiters that cannot be served before their
    deadline (past it, or no key back in time), and says when to call it again.
    """

    def __init__(self, pool: KeyPool):
        self.pool = pool
        self.waiters: list[Waiter] = []
        self.reserve = 0.0
        """seconds a call is expected to take (the shell keeps it current): a waiter with `reserve`
        expires once the deadline is nearer than that"""

    def add(self, waiter: Waiter) -> None:
        bisect.insort(self.waiters, waiter, key=lambda w: (w.priority, w.seq))

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
            latest = w.deadline - (self.reserve if w.reserve else 0.0)
            if latest <= now:
                expired.append(w)
                continue
            if plain_blocked and not w.avoid:
                t = plain_ready
            else:
                lease = pool.acquire(now, w.avoid, w.cost)
                if lease is not None:
                    w.lease = lease
                    granted.append(w)
                    continue
                t = pool.ready_at(now, w.avoid, w.cost)
                if not w.avoid:
                    plain_blocked, plain_ready = True, t
            if t is not None and t > latest:
                expired.append(w)  # the first key back comes after the deadline: fail now, not later
                continue
            kept.append(w)
            soonest(t)
            soonest(latest)
        self.waiters = kept
        return granted, expired, wake
