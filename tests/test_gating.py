"""Group gating (spec §5): which groups deserve an LLM call. Pure logic, event time passed in.

Times below are frame capture times in seconds; the default config is refresh 10 s, TTL 30 s,
min IoU 0.5.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hazardctl.gating import GateConfig, GroupGate, GroupView, decide, iou

CFG = GateConfig(refresh_interval_s=10.0, ttl_s=30.0, min_iou=0.5)
BOX = (100.0, 100.0, 200.0, 200.0)
VIEW = GroupView(members=(1, 2), classes=("car", "person"), bbox=BOX)


def shifted(view: GroupView, dx: float) -> GroupView:
    x1, y1, x2, y2 = view.bbox
    return GroupView(view.members, view.classes, (x1 + dx, y1, x2 + dx, y2))


def test_iou():
    assert iou(BOX, BOX) == 1.0
    assert iou(BOX, (200.0, 100.0, 300.0, 200.0)) == 0.0  # touching edges
    assert abs(iou(BOX, shifted(VIEW, 10).bbox) - 9000 / 11000) < 1e-12
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # degenerate boxes do not divide by zero


def test_first_sight_is_new_and_same_view_soon_after_is_suppressed():
    gate = GroupGate(CFG)
    assert gate.check("cam-1", "g1", VIEW, 0.0) == "new"
    assert gate.check("cam-1", "g1", VIEW, 0.5) is None
    assert gate.check("cam-1", "g1", shifted(VIEW, 5), 1.0) is None  # small drift: IoU ~0.9
    assert gate.suppressed == 2


def test_same_group_id_on_two_cameras_is_two_groups():
    gate = GroupGate(CFG)
    assert gate.check("cam-1", "g1", VIEW, 0.0) == "new"
    assert gate.check("cam-2", "g1", VIEW, 0.0) == "new"
    assert len(gate) == 2


def test_changed_members():
    gate = GroupGate(CFG)
    gate.check("c", "g", VIEW, 0.0)
    assert gate.check("c", "g", GroupView((1, 2, 3), VIEW.classes, BOX), 1.0) == "changed"
    assert gate.check("c", "g", GroupView((1, 2, 3), VIEW.classes, BOX), 2.0) is None, "compared with the new view"
    assert gate.check("c", "g", GroupView((1, 4), VIEW.classes, BOX), 3.0) == "changed"


def test_changed_classes():
    gate = GroupGate(CFG)
    gate.check("c", "g", VIEW, 0.0)
    assert gate.check("c", "g", GroupView(VIEW.members, ("car", "truck"), BOX), 1.0) == "changed"


def test_changed_geometry_by_iou_threshold():
    gate = GroupGate(CFG)
    gate.check("c", "g", VIEW, 0.0)
    assert gate.check("c", "g", shifted(VIEW, 30), 1.0) is None  # IoU 7000/13000 = 0.54 >= 0.5
    assert gate.check("c", "g", shifted(VIEW, 40), 2.0) == "changed"  # IoU 6000/14000 = 0.43
    # the reference is the last *sent* box, so slow drift adds up instead of hiding forever
    gate2 = GroupGate(CFG)
    reasons = [gate2.check("c", "g", shifted(VIEW, 5 * i), float(i) * 0.5) for i in range(12)]
    assert reasons[0] == "new" and "changed" in reasons[1:]


def test_refresh_after_interval_counts_from_the_last_send():
    gate = GroupGate(CFG)
    reasons = {t: gate.check("c", "g", VIEW, float(t)) for t in range(0, 31)}
    sent = {t: r for t, r in reasons.items() if r is not None}
    assert sent == {0: "new", 10: "refresh", 20: "refresh", 30: "refresh"}
    assert gate.suppressed == 27


def test_a_change_restarts_the_refresh_interval():
    gate = GroupGate(CFG)
    gate.check("c", "g", VIEW, 0.0)
    assert gate.check("c", "g", GroupView((7, 8), VIEW.classes, BOX), 6.0) == "changed"
    assert gate.check("c", "g", GroupView((7, 8), VIEW.classes, BOX), 15.9) is None
    assert gate.check("c", "g", GroupView((7, 8), VIEW.classes, BOX), 16.0) == "refresh"


def test_not_seen_for_longer_than_ttl_is_new_again():
    gate = GroupGate(CFG)
    assert gate.check("c", "g", VIEW, 0.0) == "new"
    assert gate.check("c", "g", VIEW, 30.0) == "refresh", "exactly the TTL: still known"
    assert gate.check("c", "g", VIEW, 60.5) == "new", "gone for 30.5 s: a new appearance"


def test_a_group_seen_continuously_never_expires():
    gate = GroupGate(CFG)
    reasons = [gate.check("c", "g", VIEW, t * 4.0) for t in range(100)]  # 400 s, a frame every 4 s
    assert reasons[0] == "new"
    assert "new" not in reasons[1:]
    assert reasons.count("refresh") >= 30


def test_redelivered_older_frame_is_suppressed_and_state_unchanged():
    entry = None
    _, entry = decide(entry, VIEW, 0.0, CFG)
    _, entry = decide(entry, VIEW, 5.0, CFG)
    for ts, view in [(0.0, VIEW), (5.0, VIEW), (0.0, GroupView((9,), ("bus",), (0, 0, 1, 1)))]:
        reason, after = decide(entry, view, ts, CFG)
        assert reason is None
        assert after == entry
    gate = GroupGate(CFG)
    gate.check("c", "g", VIEW, 100.0)
    gate.check("c", "g", shifted(VIEW, 60), 104.0)  # changed at 104
    assert gate.check("c", "g", VIEW, 100.0) is None, "replay of the frame at 100"
    assert gate.check("c", "g", shifted(VIEW, 60), 104.0) is None, "replay of the frame at 104"
    assert gate.check("c", "g", shifted(VIEW, 60), 113.9) is None
    assert gate.check("c", "g", shifted(VIEW, 60), 114.0) == "refresh", "timer still counts from 104"


views = st.builds(
    GroupView,
    members=st.sampled_from([(1, 2), (1, 2, 3), (4,)]),
    classes=st.sampled_from([("car", "person"), ("car", "car")]),
    bbox=st.sampled_from([BOX, (105.0, 100.0, 205.0, 200.0), (160.0, 100.0, 260.0, 200.0)]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 40.0), views), min_size=1, max_size=25), st.data())
def test_replaying_any_processed_frame_changes_nothing(frames, data):
    """Property: at-least-once redelivery of an earlier frame never sends and never alters state."""
    entry, ts, history = None, 0.0, []
    for step, view in frames:
        ts += step
        _, entry = decide(entry, view, ts, CFG)
        history.append((ts, view))
    old_ts, old_view = data.draw(st.sampled_from(history))
    assert decide(entry, old_view, old_ts, CFG) == (None, entry)


def test_sweep_bounds_memory_by_ttl_of_event_time():
    """A new group every second for 20 minutes: the gate keeps only the last TTL's worth (+ slack)."""
    gate = GroupGate(CFG)
    sizes = []
    for t in range(1200):
        assert gate.check("cam-1", f"g{t}", VIEW, float(t)) == "new"
        gate.check("cam-2", "steady", VIEW, float(t))  # one long-lived group must survive the sweeps
        sizes.append(len(gate))
    # sweeps run every max(sweep_every, size) checks (amortised O(1)): live groups + one sweep's worth
    assert max(sizes) <= 2 * (CFG.ttl_s + 2) + GroupGate.sweep_every, max(sizes)
    assert sizes[-1] <= sizes[999] + GroupGate.sweep_every and len(gate) < 1200 / 2
    assert gate.check("cam-2", "steady", VIEW, 1200.0) in (None, "refresh")
    assert gate.check("cam-1", "g0", VIEW, 1200.0) == "new", "long gone: forgotten"


def test_one_cameras_clock_never_evicts_another_cameras_groups():
    """Watermarks are per camera: a frame dated far in the future on cam-x forgets nothing of cam-1,
    and cam-x's own later (correct) frames keep sweeping its state."""
    gate = GroupGate(CFG)
    gate.check("cam-1", "steady", VIEW, 1000.0)
    gate.check("cam-x", "future", VIEW, 1e9)
    for t in range(2 * GroupGate.sweep_every):
        gate.check("cam-x", f"g{t}", VIEW, 1000.0 + t)  # cam-x's clock is right again
        gate.check("cam-1", "steady", VIEW, 1000.0 + t / 100)
    assert gate.check("cam-1", "steady", VIEW, 1021.0) in (None, "refresh"), "cam-1's group was kept"
    assert len(gate) < GroupGate.sweep_every + 2 * (CFG.ttl_s + 2), "cam-x's old groups were swept"


def test_a_member_gaining_or_losing_its_track_id_is_not_a_change_but_a_swap_is():
    from hazardctl.gating import same_members

    pair = GroupView(members=(1, 2), classes=("car", "person"), bbox=BOX)
    newcomer = GroupView(members=(1, 2), untracked=1, classes=("car", "person"), bbox=BOX)
    with_id = GroupView(members=(1, 2, 3), classes=("car", "person"), bbox=BOX)
    lost_id = GroupView(members=(1,), untracked=1, classes=("car", "person"), bbox=BOX)
    swapped = GroupView(members=(1, 3), classes=("car", "person"), bbox=BOX)
    assert not same_members(newcomer, pair), "a third road user joined"
    assert same_members(with_id, newcomer), "the newcomer only got its track id"
    assert same_members(lost_id, pair) and same_members(pair, lost_id)
    assert not same_members(swapped, pair), "another road user took member 2's place"
    gate = GroupGate(CFG)
    assert gate.check("c", "g", pair, 0.0) == "new"
    assert gate.check("c", "g", newcomer, 0.5) == "changed"
    assert gate.check("c", "g", with_id, 1.0) is None
    assert gate.check("c", "g", swapped, 1.5) == "changed"
