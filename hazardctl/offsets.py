"""Which Kafka offsets are safe to commit: the contiguous prefix of finished ones (pure logic).

Records of a partition finish out of order (one LLM call is slower than the next); committing the
highest finished offset would lose the slower ones on a crash. We commit only up to the first
offset that is still in flight.
"""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    __slots__ = ("_inflight", "_done", "_next")

    def __init__(self) -> None:
        self._inflight: deque[int] = deque()  # offsets read, in read order (increasing)
        self._done: set[int] = set()
        self._next: int | None = None  # offset to commit: everything below it is finished

    def read(self, offset: int) -> None:
        self._inflight.append(offset)

    def finish(self, offset: int) -> None:
        self._done.add(offset)
        q, done = self._inflight, self._done
        while q and q[0] in done:
            first = q.popleft()
            done.discard(first)
            self._next = first + 1

    @property
    def commit_position(self) -> int | None:
        return self._next

    @property
    def in_flight(self) -> int:
        return len(self._inflight)


class OffsetTracker:
    """Per (topic, partition) bookkeeping; tells what to commit and whether it changed."""

    def __init__(self) -> None:
        self._parts: dict[tuple[str, int], PartitionOffsets] = {}
        self._committed: dict[tuple[str, int], int] = {}

    def read(self, topic: str, partition: int, offset: int) -> None:
        self._parts.setdefault((topic, partition), PartitionOffsets()).read(offset)

    def finish(self, topic: str, partition: int, offset: int) -> None:
        part = self._parts.get((topic, partition))
        if part is not None:  # None: partition was revoked meanwhile; its new owner re-reads it
            part.finish(offset)

    def to_commit(self) -> dict[tuple[str, int], int]:
        """Positions that advanced since the last `committed()` call."""
        out = {}
        for tp, part in self._parts.items():
            pos = part.commit_position
            if pos is not None and self._committed.get(tp) != pos:
                out[tp] = pos
        return out

    def positions(self) -> dict[tuple[str, int], int]:
        """Every partition's current commit position (for the final, synchronous commit)."""
        return {tp: p.commit_position for tp, p in self._parts.items() if p.commit_position is not None}

    def committed(self, positions: dict[tuple[str, int], int]) -> None:
        self._committed.update(positions)

    def forget(self, topic: str, partition: int) -> None:
        """Partition revoked: drop its state (in-flight results may still arrive: harmless)."""
        self._parts.pop((topic, partition), None)
        self._committed.pop((topic, partition), None)

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight for p in self._parts.values())
