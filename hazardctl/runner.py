"""The loop of a synchronous stage: poll → process → send → (delivered) done → commit.

It is the one place that knows the at-least-once order: an input is `done` only after all of its
outputs, or its dead letter, are confirmed delivered. It also owns the stage's life: SIGTERM /
SIGINT / SIGHUP stop polling, in-flight work drains, offsets are committed, and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from hazardctl import metrics
from hazardctl.deadletter import BadInput, dead_letter
from hazardctl.errors import DeliveryError
from hazardctl.transports.base import Input, Output, Record, Ticket
from hazardctl.transports.pipes import MAX_LINE_BYTES, OversizedLine

log = logging.getLogger("hazardctl.stage")

#: What a stage's processing returns for one input: (key, value) pairs to send.
Outputs = Iterable[tuple[bytes | None, bytes]]
Process = Callable[[Record], Outputs]


@dataclass
class StageStats:
    records_in: int = 0
    messages_out: int = 0
    dead_letters: int = 0
    delivery_failures: int = 0
    started: float = 0.0

    def line(self, stage: str) -> str:
        dt = max(1e-9, time.monotonic() - self.started)
        return (f"{stage}: in={self.records_in} out={self.messages_out} dead_letters={self.dead_letters} "
                f"delivery_failures={self.delivery_failures} ({self.records_in / dt:.0f} in/s)")


class StopSignal:
    """Turns SIGTERM/SIGINT/SIGHUP into a flag the loop checks; restores the old handlers on exit. SIGHUP
    (a closed terminal, `systemctl reload` of a stage that has nothing to reload) drains like SIGTERM
    instead of killing the stage with its work in flight (issue 22)."""

    def __init__(self) -> None:
        self.stopped = False
        self.signal_name: str | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> "StopSignal":
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. in tests): rely on stop() instead
                pass
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        # No I/O here: the handler may interrupt a write to stderr (a dead letter), and logging to
        # the same buffer from inside it raises "reentrant call". The loop logs it instead.
        self.signal_name = self.signal_name or signal.Signals(signum).name
        self.stopped = True

    def stop(self) -> None:
        self.stopped = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class StageLoop:
    def __init__(self, stage: str, input_: Input, output: Output, dlq: Output, process: Process, *,
                 max_in_flight: int = 20_000, batch: int = 500, live_every: float = 10.0,
                 drain_timeout: float = 30.0):
        self.stage, self.input, self.output, self.dlq, self.process = stage, input_, output, dlq, process
        self.max_in_flight, self.batch, self.live_every, self.drain_timeout = max_in_flight, batch, live_every, drain_timeout
        self.stats = StageStats()
        self.stop = StopSignal()
        self._failed: Exception | None = None
        m = metrics
        self._m_in = m.MESSAGES_IN.labels(stage)
        self._m_out = m.MESSAGES_OUT.labels(stage)
        self._m_lat = m.STAGE_LATENCY.labels(stage)
        self._m_inflight = m.IN_FLIGHT.labels(stage)
        self._m_paused = m.PAUSED.labels(stage)

    def _on_delivery_failure(self, err: Exception, output: Output) -> None:
        self.stats.delivery_failures += 1
        metrics.DELIVERY_FAILURES.labels(self.stage, output.name).inc()
        if self._failed is None:
            log.error("%s: %s — the input will not be committed; stopping after drain", self.stage, err)
            self._failed = err
        self.stop.stop()

    def _callback(self, ticket: Ticket, output: Output):
        cb = ticket.expect()

        def delivered(err: Exception | None) -> None:
            if err is not None:
                self._on_delivery_failure(err, output)
            cb(err)

        return delivered

    def handle(self, record: Record) -> None:
        ticket = Ticket(record, self.input)
        t0 = time.perf_counter()
        try:
            if isinstance(record.value, OversizedLine):  # only its head was kept: do not parse it
                raise BadInput(f"line longer than {MAX_LINE_BYTES} bytes: not parsed, the payload keeps "
                               f"its first {len(record.value)} bytes", "oversized")
            outs = self.process(record)
            n = 0
            for key, value in outs:
                self.output.send(value, key, self._callback(ticket, self.output))
                n += 1
            self.stats.messages_out += n
            self._m_out.inc(n)
        except BadInput as e:
            self._send_dead_letter(ticket, record, e.reason, e.error_class)
        except Exception as e:  # a bug must not stop the pipeline: keep the input as a dead letter
            log.exception("%s: unexpected error on %s", self.stage, record.source)
            self._send_dead_letter(ticket, record, f"internal error: {e}", type(e).__name__)
        ticket.seal()
        self._m_lat.observe(time.perf_counter() - t0)

    def _send_dead_letter(self, ticket: Ticket, record: Record, reason: str, error_class: str) -> None:
        self.stats.dead_letters += 1
        metrics.DEAD_LETTERS.labels(self.stage, error_class).inc()
        dl = dead_letter(record, self.stage, reason, error_class)
        self.dlq.send(dl.model_dump_json().encode(), record.key, self._callback(ticket, self.dlq))

    def run(self) -> StageStats:
        self.stats.started = time.monotonic()
        next_live = self.stats.started + self.live_every
        inp, out, dlq = self.input, self.output, self.dlq
        paused = False
        with self.stop:
            while not self.stop.stopped:
                records = inp.poll(0.05, self.batch)
                if records:
                    self.stats.records_in += len(records)
                    self._m_in.inc(len(records))
                    for r in records:
                        self.handle(r)
                elif inp.exhausted:
                    break
                out.poll(0)
                if dlq is not out:
                    dlq.poll(0)
                in_flight = getattr(inp, "in_flight", 0)
                self._m_inflight.set(in_flight)
                if (in_flight >= self.max_in_flight) != paused:
                    paused = not paused
                    inp.set_paused(paused)
                    self._m_paused.set(int(paused))
                if self.live_every and time.monotonic() >= next_live:
                    next_live += self.live_every
                    log.info(self.stats.line(self.stage))
            if self.stop.signal_name:
                log.info("%s: received %s: draining", self.stage, self.stop.signal_name)
            self._drain()
        log.info(self.stats.line(self.stage))
        if self._failed is not None:
            raise DeliveryError(f"{self.stage}: {self._failed}")
        return self.stats

    def _drain(self) -> None:
        left = self.output.flush(self.drain_timeout)
        if self.dlq is not self.output:
            left += self.dlq.flush(self.drain_timeout)
        if left:
            log.error("%s: %d messages not delivered after %.0fs; their inputs stay uncommitted",
                      self.stage, left, self.drain_timeout)
        self.input.close()
        self.output.close()
        if self.dlq is not self.output:
            self.dlq.close()
