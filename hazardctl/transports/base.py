"""The one small interface every transport implements (pipes, files, Kafka).

A stage polls `Record`s from an `Input`, sends outputs to an `Output`, and tells the input a record
is `done` only when every output of it (or its dead letter) is confirmed delivered. For Kafka that
is what makes the committed offset safe (at-least-once); for pipes `done` is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

#: Called once per sent message: None when delivered, the error when it was not.
DeliveryCallback = Callable[[Exception | None], None]


@dataclass(slots=True)
class Record:
    """One input message and where it came from (for dead letters and commits)."""

    value: bytes
    key: bytes | None = None
    source: str = "stdin"
    line: int | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    #: set by the stage loop to keep per-record bookkeeping (e.g. a Ticket)
    extra: dict = field(default_factory=dict)


class Input(Protocol):
    name: str

    def poll(self, timeout: float, max_records: int = 500) -> list[Record]:
        """Up to `max_records` records, waiting at most `timeout` seconds; never blocks longer.

        Returns as soon as one record is there, with whatever else is already buffered behind it:
        a record never waits for a batch to fill (docs/latency.md)."""

    @property
    def exhausted(self) -> bool:
        """True once no record will ever come again (end of a file or pipe)."""

    def done(self, record: Record) -> None:
        """Every output of `record` is delivered: its position may be committed."""

    def set_paused(self, paused: bool) -> None:
        """Backpressure: stop fetching (but keep the session alive) while downstream is full."""

    def close(self) -> None:
        """Commit what is done and release the input."""


def can_hand_over(input_: Input) -> bool:
    """Can this input give its share of the work to other consumers (`leave`) and take it back
    (`rejoin`)? Kafka inputs in a consumer group can; files and pipes cannot (issue 20.5)."""
    return callable(getattr(input_, "leave", None)) and callable(getattr(input_, "rejoin", None))


class Output(Protocol):
    name: str

    def send(self, value: bytes, key: bytes | None = None, on_delivered: DeliveryCallback | None = None) -> None:
        """Queue one message; `on_delivered` is called from `poll` or `flush`."""

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery callbacks."""

    def flush(self, timeout: float) -> int:
        """Wait until everything is delivered; returns how many messages are still pending."""

    def close(self) -> None: ...


class Ticket:
    """Counts the outputs of one input record; marks the record done when all are delivered.

    `seal()` is called after the stage has sent every output, so a fast delivery of the first
    output cannot mark the record done before the second one is even sent. A record with a
    failed output is never marked done: its offset is not committed and it is redelivered.
    """

    __slots__ = ("record", "_input", "_pending", "_sealed", "failed")

    def __init__(self, record: Record, input_: Input):
        self.record = record
        self._input = input_
        self._pending = 0
        self._sealed = False
        self.failed: Exception | None = None

    def expect(self) -> DeliveryCallback:
        self._pending += 1
        return self._delivered

    def seal(self) -> None:
        self._sealed = True
        self._maybe_done()

    @property
    def finished(self) -> bool:
        return self._sealed and self._pending == 0

    def _delivered(self, err: Exception | None) -> None:
        self._pending -= 1
        if err is not None and self.failed is None:
            self.failed = err
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self._sealed and self._pending == 0 and self.failed is None:
            self._input.done(self.record)
