"""The outbox policy: bounded bytes, oldest dropped first, order kept, never blocks.

A stand-in Output that holds deliveries until told (a broker that is away, then back) is used
here because the policy must be checked message by message; the real broker outage is
test_detect_kafka.py.
"""

from __future__ import annotations

import time

from stages.detect.outbox import Outbox


class HeldOutput:
    """Accepts sends; reports them delivered (or failed) only when the test says so."""

    name = "held"

    def __init__(self):
        self.held = []
        self.delivered = []

    def send(self, value, key=None, on_delivered=None):
        self.held.append((value, on_delivered))

    def poll(self, timeout=0.0):
        pass

    def flush(self, timeout):
        return len(self.held)

    def release(self, err=None):
        held, self.held = self.held, []
        for value, cb in held:
            if err is None:
                self.delivered.append(value)
            cb(err)


def msg(i: int, size: int = 100) -> bytes:
    return f"{i:05d}".encode().ljust(size, b".")


def test_outbox_bounds_memory_drops_the_oldest_and_resumes_in_order():
    out = HeldOutput()
    dropped = []
    box = Outbox(out, max_bytes=1_000, on_dropped=dropped.append)
    t0 = time.perf_counter()
    for i in range(100):  # the "broker" is away: nothing is delivered
        box.put(b"cam", msg(i), "cam")
        assert box.buffered_bytes <= 1_000
    assert time.perf_counter() - t0 < 1.0  # never waited for the output
    assert len(out.held) == 5  # half the budget in the transport...
    assert box.stats.dropped == len(dropped) == 100 - 5 - 5  # ...half waiting, the rest dropped
    out.release()  # the broker is back
    box.pump()
    out.release()
    # what reached the output: the first five (already in the transport), then the five newest
    assert out.delivered == [msg(i) for i in (0, 1, 2, 3, 4, 95, 96, 97, 98, 99)]
    assert box.pending == 0 and box.stats.delivered == 10


def test_failed_deliveries_are_counted_not_raised():
    out = HeldOutput()
    failed = []
    box = Outbox(out, max_bytes=10_000, on_failed=lambda cam, err: failed.append((cam, str(err))))
    for i in range(3):
        box.put(b"c", msg(i), "c")
    out.release(RuntimeError("broker gone"))
    assert failed == [("c", "broker gone")] * 3 and box.stats.failed == 3 and box.pending == 0


def test_a_message_larger_than_the_window_still_goes_through():
    out = HeldOutput()
    box = Outbox(out, max_bytes=100)
    box.put(b"c", msg(0, 500), "c")
    assert len(out.held) == 1 and box.stats.dropped == 0
