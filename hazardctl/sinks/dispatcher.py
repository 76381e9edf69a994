"""The thread that runs the alert sinks, so a slow or dead receiver never slows the WebSocket push.

consume's event loop calls `offer()` for every event it pushes: one `call_soon_threadsafe`, nothing
else. On the dispatcher's own asyncio loop (thread `sinks`) each event is routed (outbox.Router),
queued for every sink (outbox.OutboxQueue, order per incident), journaled in the store
(outbox_store.OutboxJournal), and delivered with up to `concurrency` attempts in flight per sink.
A failed attempt is retried after its backoff; a dead one becomes a dead letter on consume's
dead-letter output and stays in the store with state 'dead'.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

from hazardctl import metrics as shared_metrics
from hazardctl.messages import DeadLetter
from hazardctl.sinks import Sink, SinkError, encode_event
from hazardctl.sinks.outbox import OutboxQueue, Pending, RetryPolicy, Router

log = logging.getLogger("hazardctl.sinks")

ROUTED = Counter("hazardctl_sink_events_total", "Incident events offered to the sinks, by routing decision "
                 "(routed, below_level, cooldown, held_back)", ["stage", "decision"])
ATTEMPTS = Counter("hazardctl_sink_attempts_total", "Delivery attempts per sink, by outcome (delivered, failed, dead)",
                   ["stage", "sink", "outcome"])
PENDING = Gauge("hazardctl_sink_pending", "Events waiting for a sink (in the outbox, not yet delivered)",
                ["stage", "sink"])
DELIVERY_AGE = Histogram("hazardctl_sink_delivery_seconds", "From an event's creation to its delivery to a sink "
                         "(includes retries and outages)", ["stage", "sink"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
JOURNAL_BACKLOG = Gauge("hazardctl_sink_journal_backlog", "Outbox writes waiting for the store (it is away)", ["stage"])

DeadLetterOut = Callable[[DeadLetter, bytes | None], None]


class SinkDispatcher:
    def __init__(self, sinks: list[Sink], router: Router, *, policy: RetryPolicy = RetryPolicy(), journal=None,
                 dead_letter: DeadLetterOut | None = None, concurrency: int = 16, stage: str = "consume",
                 restore_recent_s: float = 86400.0):
        if not sinks:
            raise ValueError("no sink")
        self.sinks = {s.name: s for s in sinks}
        if len(self.sinks) != len(sinks):
            raise ValueError("two sinks with the same name")
        self.router = router
        self.queue = OutboxQueue(policy)
        self.journal = journal
        self._dead_letter = dead_letter or (lambda dl, key: None)
        self.concurrency = concurrency
        self.stage = stage
        self.restore_recent_s = restore_recent_s
        self.delivered = 0
        self.dead = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sinks", daemon=True)
        self._failure: BaseException | None = None
        self._in_flight: dict[str, int] = {n: 0 for n in self.sinks}
        self._tasks: set[asyncio.Task] = set()
        self._journal_error_logged = 0.0
        self._journal_retry_at = 0.0
        self._journal_failures = 0
        self._routed = {d: ROUTED.labels(stage, d) for d in ("routed", "below_level", "cooldown", "held_back")}
        for name in self.sinks:
            PENDING.labels(stage, name).set_function(lambda n=name: self.queue.pending(n))
        JOURNAL_BACKLOG.labels(stage).set_function(lambda: len(self.journal.ops) if self.journal else 0)

    # ---- any thread ----
    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._started.wait(timeout) or self._failure is not None:
            raise self._failure or RuntimeError("sinks did not start")

    def offer(self, kind: str, action: str, body: dict, now: float | None = None) -> None:
        """Called by consume for every event it pushes; costs one hand-over to the sinks' thread."""
        if kind != "incident" or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._intake, action, body, time.time() if now is None else now)
        except RuntimeError:  # the sinks' loop has stopped (consume is shutting down)
            log.warning("sinks: stopped; event %s of %s not offered", action, body.get("incident_id"))

    def stop(self, timeout: float = 10.0) -> None:
        """Give in-flight and due deliveries up to `timeout` to finish, write the journal, close the sinks."""
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._begin_stop, time.monotonic() + timeout)
            self._thread.join(timeout + 15.0)

    def pending(self) -> int:
        return self.queue.pending()

    # ---- the sinks' thread ----
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # noqa: BLE001 — reported by start() or logged; never takes consume down
            self._failure = e
            log.exception("sinks: stopped")
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._deadline: float | None = None
        self._restore()
        for s in self.sinks.values():
            await s.start()
        self._started.set()
        try:
            await self._schedule()
        finally:
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)  # in-flight ones stay pending in the store
            self._flush_journal(final=True)
            for s in self.sinks.values():
                try:
                    await s.close()
                except Exception as e:  # noqa: BLE001
                    log.warning("sinks: closing %s: %s", s.name, e)

    def _restore(self) -> None:
        if self.journal is None:
            return
        now = time.time()
        routes, rows = self.journal.load(self.restore_recent_s, now)
        for inc_id, route in routes:
            self.router.restore(inc_id, route)
        kept = 0
        for e in rows:
            if e.sink in self.sinks:  # a sink no longer configured keeps its rows for when it comes back
                e.next_at = min(e.next_at, now)  # a restart retries at once
                self.queue.add(e)
                kept += 1
        if routes or rows:
            log.info("sinks: restored %d incident routes and %d undelivered events from the store", len(routes), kept)

    def _begin_stop(self, deadline: float) -> None:
        self._stopping = True
        self._deadline = deadline
        self._wake.set()

    def _intake(self, action: str, body: dict, now: float) -> None:
        decision, out = self.router.offer("incident", action, body, now)
        if decision in self._routed:
            self._routed[decision].inc()
        if self.journal is not None and decision in ("routed", "cooldown", "held_back"):
            route = self.router.routes.get(body["incident_id"])
            if route is not None:
                self.journal.routed(body["incident_id"], route, now)
        if out is None:
            return
        payload = encode_event(out, now)
        for name in self.sinks:
            e = Pending(name, out.incident_id, out.seq, out.camera_id, payload, created_at=now, next_at=now)
            self.queue.add(e)
            if self.journal is not None:
                self.journal.enqueued(e)
        if not all(self.queue.down(n) for n in self.sinks):  # a down sink only waits for its probe time
            self._wake.set()

    async def _schedule(self) -> None:
        while True:
            self._flush_journal()
            now = time.time()
            if not self._stopping or time.monotonic() < self._deadline:
                for name in self.sinks:
                    room = self.concurrency - self._in_flight[name]
                    if room > 0:
                        for e in self.queue.due(now, room, sink=name):
                            self._in_flight[name] += 1
                            t = asyncio.get_running_loop().create_task(self._attempt(e))
                            self._tasks.add(t)
                            t.add_done_callback(self._tasks.discard)
            full = frozenset(n for n in self.sinks if self._in_flight[n] >= self.concurrency)  # woken by a finish
            nxt = self.queue.next_due(full)
            if self._stopping and ((not self._tasks and (nxt is None or nxt > now)) or time.monotonic() >= self._deadline):
                return
            wait = 0.5 if nxt is None else min(0.5, max(0.0, nxt - time.time()))
            if self.journal is not None and self.journal.ops:
                wait = min(wait, 0.05)
            self._wake.clear()
            try:  # never a busy loop: at least 2 ms between two passes (an attempt's end or an offer wakes it)
                await asyncio.wait_for(self._wake.wait(), max(wait, 0.002))
            except asyncio.TimeoutError:
                pass

    async def _attempt(self, e: Pending) -> None:
        sink = self.sinks[e.sink]
        try:
            await sink.deliver(e)
        except SinkError as err:
            self._failed(e, str(err), err.permanent)
        except Exception as err:  # noqa: BLE001 — a bug in a client is a failed attempt, never a crash
            self._failed(e, f"{type(err).__name__}: {err}", False)
        else:
            now = time.time()
            woken = self.queue.delivered(e, now)
            self.delivered += 1
            ATTEMPTS.labels(self.stage, e.sink, "delivered").inc()
            DELIVERY_AGE.labels(self.stage, e.sink).observe(max(0.0, now - e.created_at))
            if self.journal is not None:
                self.journal.delivered(e)
            if woken:
                log.info("sinks: %s delivers again; %d incidents' events due now", e.sink, len(woken))
        finally:
            self._in_flight[e.sink] -= 1
            self._wake.set()

    def _failed(self, e: Pending, error: str, permanent: bool) -> None:
        now = time.time()
        first = not self.queue.failing.get(e.sink)
        f = self.queue.failed(e, now, error, permanent=permanent, rand=random.random())
        if first and not f.dead:
            log.warning("sinks: %s failed (%s); retrying with backoff", e.sink, error)
        if not f.dead:
            ATTEMPTS.labels(self.stage, e.sink, "failed").inc()
            if self.journal is not None:
                self.journal.retry(e)
            return
        self.dead += 1
        ATTEMPTS.labels(self.stage, e.sink, "dead").inc()
        log.warning("sinks: %s: event %s is a dead letter after %d attempts (%s)", e.sink, e.key, e.attempts, error)
        if self.journal is not None:
            self.journal.dead(e)
        reason = "refused by the receiver" if permanent else f"not delivered after {e.attempts} attempts"
        dl = DeadLetter(stage=self.stage, reason=f"sink {e.sink}: {reason}: {error}",
                        error_class="sink_rejected" if permanent else "sink_undeliverable",
                        payload=e.payload.decode("utf-8", "replace"), source=f"sink:{e.sink}", key=e.camera_id,
                        attempts=e.attempts, last_error=error, ts=now)
        shared_metrics.DEAD_LETTERS.labels(self.stage, dl.error_class).inc()  # HazardctlDeadLettersRising
        try:
            self._dead_letter(dl, e.camera_id.encode())
        except Exception as err:  # noqa: BLE001
            log.error("sinks: dead letter for %s not written (%s); it stays in the store as 'dead'", e.key, err)

    def _flush_journal(self, final: bool = False) -> None:
        if self.journal is None or not self.journal.ops:
            return
        now = time.monotonic()
        if not final and now < self._journal_retry_at:
            return
        try:
            self.journal.flush()
            self._journal_failures = 0
        except Exception as e:  # noqa: BLE001 — the store is away: keep the writes, deliveries go on
            self._journal_failures += 1
            self._journal_retry_at = now + min(10.0, 0.5 * 2 ** min(self._journal_failures, 5))
            if final or now - self._journal_error_logged > 10.0:
                self._journal_error_logged = now
                log.warning("sinks: outbox not written to the store (%s); %d writes kept in memory",
                            str(e).splitlines()[0][:160], len(self.journal.ops))
