"""The store's writer thread: the event loop hands it writes and never waits on the database.

Writes queue in memory and are written in batches, one transaction each. When the database goes
away (connection lost, server restarting, SQLite locked) the batch is kept and retried with a capped
backoff while the queue keeps taking writes up to a bound (count and bytes); beyond the bound new
writes are dropped and counted — the board and the WebSocket push go on either way. A write that
fails on its own (a bug, not an outage) is logged and counted as failed, never retried forever.

Metrics (documented in docs/metrics.md): hazardctl_store_up, hazardctl_store_pending_writes,
hazardctl_store_writes_total{outcome=written|dropped|failed}, hazardctl_store_write_seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from hazardctl import metrics
from hazardctl.store import is_transient

log = logging.getLogger("hazardctl.store")

STORE_UP = Gauge("hazardctl_store_up", "1 while the last write to the store succeeded, 0 while it is unreachable",
                 ["stage"])
PENDING = Gauge("hazardctl_store_pending_writes", "Writes queued in memory for the store (bounded by "
                "--store-queue)", ["stage"])
WRITES = Counter("hazardctl_store_writes_total", "Writes handed to the store, by outcome (written, dropped: the "
                 "queue was full while the store was away, failed: rejected by the database)", ["stage", "outcome"])
WRITE_SECONDS = Histogram("hazardctl_store_write_seconds", "One batch written to the store (one transaction)",
                          ["stage"], buckets=metrics.LATENCY_BUCKETS)


class StoreWriter:
    """`put(item)` from any thread; a daemon thread calls `write(batch)`; callables queued with
    `call(fn)` run on the same thread between batches (pruning, evidence caps)."""

    def __init__(self, write: Callable[[list], None], *, stage: str = "consume", max_pending: int = 20_000,
                 max_bytes: int = 512 << 20, batch: int = 500, retry_min_s: float = 0.2, retry_max_s: float = 5.0,
                 linger_s: float = 0.1, name: str = "store"):
        self._write = write
        self.linger_s = linger_s
        """wait this long for more writes before a transaction: fewer, larger batches cost the event loop
        less (the writer holds the GIL for a transaction's Python work however small it is)"""
        self.max_pending, self.max_bytes, self.batch = max_pending, max_bytes, batch
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self._queue: deque[Any] = deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self.up = True
        self.last_error: str | None = None
        self.written = self.dropped = self.failed = 0
        self.enqueued = 0
        """writes (and calls) queued so far; `wait_for(n)` waits until the first n are done"""
        self._finished = 0
        self._up = STORE_UP.labels(stage)
        self._up.set(1)
        self._written, self._dropped, self._failed = (WRITES.labels(stage, o) for o in ("written", "dropped", "failed"))
        self._seconds = WRITE_SECONDS.labels(stage)
        PENDING.labels(stage).set_function(lambda: len(self._queue))
        self._thread = threading.Thread(target=self._run, name=f"{name}-writer", daemon=True)

    def start(self) -> "StoreWriter":
        self._thread.start()
        return self

    @property
    def pending(self) -> int:
        return len(self._queue)

    def put(self, item: Any, block: bool = False) -> bool:
        """Queue a write; False (and counted) when the queue is full. `block`: wait for room instead, at
        most a minute (the start-up replay, which has no live clients to keep up with)."""
        size = item.size() if hasattr(item, "size") else 256
        deadline = time.monotonic() + 60.0  # blocking: a store that stays away must not hang the start-up
        with self._cond:
            while (len(self._queue) >= self.max_pending or self._bytes + size > self.max_bytes) and self._queue:
                if not block or self._stop or time.monotonic() > deadline:
                    self.dropped += 1
                    self._dropped.inc()
                    return False
                self._cond.wait(0.5)
            self._queue.append((item, size))
            self._bytes += size
            self.enqueued += 1
            self._cond.notify_all()
        return True

    def call(self, fn: Callable[[], Any]) -> None:
        """Run `fn` on the writer thread after the writes queued before it (never dropped)."""
        with self._cond:
            self._queue.append((fn, 0))
            self.enqueued += 1
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far is written (or `timeout`); True when it was."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def wait_for(self, n: int, timeout: float) -> bool:
        """Read your writes: wait until the first `n` queued writes are done (written, or failed for
        good), at most `timeout`; True when they are. Later writes do not make it wait longer."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._finished < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def stop(self, timeout: float = 10.0) -> int:
        """Write what is queued (up to `timeout`), stop the thread; returns how many writes were left."""
        self.flush(timeout)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(max(0.1, timeout / 10))
        left = len(self._queue)
        if left:
            log.error("store: %d writes not written at exit (the store is %s)", left,
                      "up" if self.up else f"unreachable: {self.last_error}")
        return left

    # ---- the thread ----------------------------------------------------------------------------

    def _take(self) -> list | Callable | None:
        with self._cond:
            while not self._queue and not self._stop:
                self._cond.wait(1.0)
            if not self._queue:
                return None
            deadline = time.monotonic() + self.linger_s
            while len(self._queue) < self.batch and not self._stop:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._busy = True
            head = self._queue[0][0]
            if callable(head) and not hasattr(head, "size"):
                return head
            out = []
            for item, _size in self._queue:
                if callable(item) and not hasattr(item, "size") or len(out) >= self.batch:
                    break
                out.append(item)
            return out

    def _done(self, n: int) -> None:
        with self._cond:
            for _ in range(n):
                _item, size = self._queue.popleft()
                self._bytes -= size
            self._finished += n
            self._busy = False
            self._cond.notify_all()

    def _run(self) -> None:
        backoff = self.retry_min_s
        while True:
            work = self._take()
            if work is None:
                return
            try:
                if callable(work):
                    work()
                else:
                    t0 = time.perf_counter()
                    self._write(work)
                    self._seconds.observe(time.perf_counter() - t0)
                    self.written += len(work)
                    self._written.inc(len(work))
                if not self.up:
                    log.warning("store: reachable again; %d writes queued", len(self._queue) - 1)
                self.up, self.last_error, backoff = True, None, self.retry_min_s  # before _done: flush() sees it
                self._up.set(1)
                self._done(1 if callable(work) else len(work))
            except Exception as e:
                if is_transient(e):
                    reason = _short(e)
                    if self.up:
                        log.warning("store: unreachable (%s); queueing writes (at most %d) and retrying", reason,
                                    self.max_pending)
                    self.up, self.last_error = False, reason
                    self._up.set(0)
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
                        if not self._stop:
                            self._cond.wait(backoff)
                        stopping = self._stop
                    if stopping:
                        return
                    backoff = min(self.retry_max_s, backoff * 2)
                    continue
                self._isolate(work, e)

    def _isolate(self, work: list | Callable, e: Exception) -> None:
        """Not an outage: write one by one so only the writes the database rejects are lost."""
        if callable(work) or len(work) == 1:
            log.error("store: write rejected (%s): %s", type(e).__name__, _short(e))
            self.failed += 1
            self._failed.inc()
            self._done(1)
            return
        for item in work:
            try:
                self._write([item])
                self.written += 1
                self._written.inc()
            except Exception as e1:
                log.error("store: write rejected (%s): %s", type(e1).__name__, _short(e1))
                self.failed += 1
                self._failed.inc()
            self._done(1)
            with self._cond:
                self._busy = True


def _short(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0][:200]
