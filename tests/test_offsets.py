"""Offset bookkeeping (hazardctl.offsets): only the contiguous prefix of finished offsets is committed.

Committing past an offset still in flight would lose it on a crash (the old monolith's bug); these
tests pin the rule down, including out-of-order finishes, several partitions, and revocation.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hazardctl.offsets import OffsetTracker, PartitionOffsets

T = "detection-results"


def tracker_with(reads: dict[tuple[str, int], list[int]]) -> OffsetTracker:
    t = OffsetTracker()
    for (topic, part), offsets in reads.items():
        for o in offsets:
            t.read(topic, part, o)
    return t


def test_nothing_to_commit_before_anything_finishes():
    t = tracker_with({(T, 0): [0, 1, 2]})
    assert t.to_commit() == {}
    assert t.in_flight == 3


def test_in_order_finishes_commit_the_next_offset_to_read():
    t = tracker_with({(T, 0): [10, 11, 12]})
    t.finish(T, 0, 10)
    assert t.to_commit() == {(T, 0): 11}  # Kafka's committed offset = the next one to read
    t.finish(T, 0, 11)
    t.finish(T, 0, 12)
    assert t.to_commit() == {(T, 0): 13}
    assert t.in_flight == 0


def test_out_of_order_finish_does_not_move_past_an_offset_in_flight():
    t = tracker_with({(T, 0): [0, 1, 2, 3, 4]})
    t.finish(T, 0, 3)
    t.finish(T, 0, 1)
    t.finish(T, 0, 4)
    assert t.to_commit() == {}, "0 is still in flight: committing 5 would lose it on a crash"
    t.finish(T, 0, 0)
    assert t.to_commit() == {(T, 0): 2}, "2 is still in flight"
    t.finish(T, 0, 2)
    assert t.to_commit() == {(T, 0): 5}
    assert t.in_flight == 0


def test_offset_gaps_are_fine():
    """Offsets are not dense (compaction, transaction markers): the prefix follows what was read."""
    t = tracker_with({(T, 0): [0, 5, 9]})
    t.finish(T, 0, 0)
    t.finish(T, 0, 5)
    assert t.to_commit() == {(T, 0): 6}


def test_partitions_and_topics_are_independent():
    t = tracker_with({(T, 0): [0, 1], (T, 1): [7, 8], ("other", 0): [3]})
    t.finish(T, 1, 7)
    t.finish(T, 0, 1)  # partition 0 is blocked by offset 0
    t.finish("other", 0, 3)
    assert t.to_commit() == {(T, 1): 8, ("other", 0): 4}
    t.finish(T, 0, 0)
    assert t.to_commit() == {(T, 0): 2, (T, 1): 8, ("other", 0): 4}


def test_to_commit_only_reports_positions_that_advanced():
    t = tracker_with({(T, 0): [0, 1, 2], (T, 1): [0]})
    t.finish(T, 0, 0)
    t.finish(T, 1, 0)
    first = t.to_commit()
    assert first == {(T, 0): 1, (T, 1): 1}
    t.committed(first)
    assert t.to_commit() == {}, "nothing advanced: no commit request"
    t.finish(T, 0, 2)  # out of order: still blocked by 1
    assert t.to_commit() == {}
    t.finish(T, 0, 1)
    assert t.to_commit() == {(T, 0): 3}


def test_uncommitted_positions_are_offered_again():
    """A commit that failed (committed() not called) is retried on the next to_commit()."""
    t = tracker_with({(T, 0): [0]})
    t.finish(T, 0, 0)
    assert t.to_commit() == {(T, 0): 1}
    assert t.to_commit() == {(T, 0): 1}


def test_forget_on_revoke_drops_the_partition_and_late_finishes_are_ignored():
    t = tracker_with({(T, 0): [0, 1], (T, 1): [0, 1]})
    t.finish(T, 0, 0)
    t.committed(t.to_commit())
    t.forget(T, 0)
    assert t.in_flight == 2  # only partition 1 left
    t.finish(T, 0, 1)  # an output delivered after the revoke: the new owner re-reads offset 1
    assert t.to_commit() == {}
    t.finish(T, 1, 0)
    assert t.to_commit() == {(T, 1): 1}


def test_reassigned_partition_starts_fresh_and_is_committed_again():
    t = tracker_with({(T, 0): [0, 1]})
    t.finish(T, 0, 0)
    t.finish(T, 0, 1)
    t.committed(t.to_commit())
    t.forget(T, 0)
    t.read(T, 0, 2)  # assigned back: reading resumes at the committed offset
    t.finish(T, 0, 2)
    assert t.to_commit() == {(T, 0): 3}


def test_finish_of_an_unknown_partition_is_harmless():
    t = OffsetTracker()
    t.finish(T, 3, 42)
    assert t.to_commit() == {} and t.in_flight == 0


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_commit_position_is_always_just_past_the_finished_prefix(data):
    """Property: after any sequence of finishes, position = first unfinished offset read (or last + 1)."""
    gaps = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=30))
    offsets = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    p = PartitionOffsets()
    for o in offsets:
        p.read(o)
    order = data.draw(st.permutations(offsets))
    k = data.draw(st.integers(0, len(order)))
    finished: set[int] = set()
    last_pos = None
    for o in order[:k]:
        p.finish(o)
        finished.add(o)
        pending = [x for x in offsets if x not in finished]
        prefix = [x for x in offsets if not pending or x < pending[0]]
        expected = prefix[-1] + 1 if prefix else None
        assert p.commit_position == expected
        assert last_pos is None or p.commit_position >= last_pos, "the position never goes back"
        last_pos = p.commit_position
        assert p.in_flight == len(offsets) - len(prefix)
