"""The asyncio shell around the pure pool and queue: tasks await a key; one timer, no polling."""

from __future__ import annotations

import asyncio
import itertools

from hazardctl.keypool.pool import KeyPool, Lease, Outcome
from hazardctl.keypool.queue import REFRESH, URGENT, AcquireQueue, Waiter


class NoKeyInTime(Exception):
    """No key can take the task before its deadline (all cooling, disabled or saturated)."""


class Displaced(NoKeyInTime):
    """The task gave way, while waiting for its first key, to one that ranks higher (the stage was full)."""


class AsyncKeyPool:
    """The asyncio shell: `await acquire(deadline)` by priority then arrival; sleeps exactly until a
    key is ready or a lease comes back — one timer, no polling."""

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
        """A place in the arrival order, taken when a task arrives and kept across its retries."""
        return next(self._seq)

    async def acquire(self, deadline: float, avoid: frozenset[str] = frozenset(), seq: int | None = None,
                      priority: int = URGENT, cost: float = 0.0, reserve: bool = False,
                      only: frozenset[str] | None = None) -> Lease:
        """A lease before `deadline` (loop time; minus `queue.reserve` with `reserve`), or NoKeyInTime;
        `only`: one of these keys (a variant's)."""
        waiter = Waiter(self.ticket() if seq is None else seq, deadline, avoid, priority=priority, cost=cost,
                        reserve=reserve, only=only)
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

    def make_room(self, priority: int) -> bool:
        """The stage is full and a task of `priority` arrived: the waiter that ranks below it (see
        `AcquireQueue.victim`) is told `Displaced`. True: the arrival may wait for a key (someone gave
        way, or it outranks refreshes and none was left to take); False: it is a refresh and nobody
        ranks below it, so it gives way itself."""
        victim = self.queue.victim(priority)
        if victim is None:
            return priority < REFRESH
        fut = self._futures.pop(victim, None)
        if fut is not None and not fut.done():
            fut.set_exception(Displaced())
        self._dispatch()
        return True

    def reconfigure(self, keys, policy, accounts=(), replaced=()) -> dict[str, list[str]]:
        """A reloaded key file (`KeyPool.reconfigure`); waiting tasks are served under it at once."""
        report = self.pool.reconfigure(keys, policy, self.now(), accounts, replaced)
        self._dispatch()
        return report

    def release(self, lease: Lease, outcome: Outcome, retry_after: float | None = None, error: str | None = None,
                usage: float | None = None) -> None:
        self.pool.release(lease, outcome, self.now(), retry_after, error, usage)
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
