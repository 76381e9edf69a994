"""Publishing detection results without ever blocking the cameras, in bounded memory.

detect is a source stage: a camera does not wait for Kafka. While the broker is slow or away, at
most half of `max_bytes` sits undelivered in the transport (librdkafka's queue, which retries it
when the broker is back), and the newest messages wait here in the other half. When that is full
the *oldest* waiting message is dropped and counted: after an outage, the freshest frames are the
ones worth assessing, and memory stays flat however long the broker is gone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from hazardctl.transports.base import Output


@dataclass
class OutboxStats:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0


class Outbox:
    def __init__(self, output: Output, max_bytes: int, *,
                 on_dropped: Callable[[str], None] = lambda camera_id: None,
                 on_failed: Callable[[str, Exception], None] = lambda camera_id, err: None):
        self.output = output
        self.window = max(1, max_bytes // 2)
        self.max_waiting = max(1, max_bytes - self.window)
        self.stats = OutboxStats()
        self._on_dropped, self._on_failed = on_dropped, on_failed
        self._waiting: deque[tuple[bytes, bytes, str]] = deque()
        self._waiting_bytes = 0
        self._in_flight = 0
        self._in_flight_bytes = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes held undelivered: waiting here plus in the transport."""
        return self._waiting_bytes + self._in_flight_bytes

    @property
    def pending(self) -> int:
        return len(self._waiting) + self._in_flight

    def put(self, key: bytes, value: bytes, camera_id: str) -> None:
        self._waiting.append((key, value, camera_id))
        self._waiting_bytes += len(value)
        self.pump()
        while self._waiting_bytes > self.max_waiting and len(self._waiting) > 1:
            _, old, cam = self._waiting.popleft()
            self._waiting_bytes -= len(old)
            self.stats.dropped += 1
            self._on_dropped(cam)

    def pump(self) -> None:
        """Serve delivery reports, then move waiting messages into the transport while the window allows."""
        self.output.poll(0)
        while self._waiting:
            key, value, cam = self._waiting[0]
            if self._in_flight and self._in_flight_bytes + len(value) > self.window:
                break
            self._waiting.popleft()
            self._waiting_bytes -= len(value)
            self._in_flight += 1
            self._in_flight_bytes += len(value)
            self.stats.sent += 1
            self.output.send(value, key, self._callback(len(value), cam))

    def _callback(self, size: int, camera_id: str):
        def delivered(err: Exception | None) -> None:
            self._in_flight -= 1
            self._in_flight_bytes -= size
            if err is None:
                self.stats.delivered += 1
            else:
                self.stats.failed += 1
                self._on_failed(camera_id, err)

        return delivered

    def drain(self, timeout: float, clock: Callable[[], float]) -> int:
        """Try to deliver everything within `timeout`; returns how many messages are left undelivered."""
        deadline = clock() + timeout
        while self.pending and clock() < deadline:
            self.pump()
            if self._in_flight:
                self.output.flush(min(0.2, max(0.0, deadline - clock())))
        self.pump()
        return self.pending
