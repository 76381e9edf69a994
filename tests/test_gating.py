"""Group gating (spec §5): which groups deserve an LLM call. Pure logic, event time passed in.

Times below are frame capture times in seconds; refresh 10 s, TTL 30 s, min IoU 0.5. The first part
pins the `classic` gate (the one before motion cues, kept for side-by-side benchmarks); the second the
`danger` gate (issue 16): suspect, calm, phase-spread refreshes, suppression reasons, the rebuild.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hazardctl.gating import GateConfig, GroupGate, GroupView, decide, iou

CFG = GateConfig(refresh_interval_s=10.0, ttl_s=30.0, min_iou=0.5, mode="classic")
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
    _, entry, _ = decide(entry, VIEW, 0.0, CFG)
    _, entry, _ = decide(entry, VIEW, 5.0, CFG)
    for ts, view in [(0.0, VIEW), (5.0, VIEW), (0.0, GroupView((9,), ("bus",), (0, 0, 1, 1)))]:
        reason, after, held = decide(entry, view, ts, CFG)
        assert reason is None
        assert held == ("stale-replay" if ts == 0.0 else "unchanged"), "a frame after the send is held as it was"
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
        _, entry, _ = decide(entry, view, ts, CFG)
        history.append((ts, view))
    old_ts, old_view = data.draw(st.sampled_from(history))
    reason, after, _held = decide(entry, old_view, old_ts, CFG)
    assert (reason, after) == (None, entry)


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


# ---- the danger-aware gate (issue 16) ----------------------------------------------------------------

import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections import Counter  # noqa: E402

from hazardctl.gating import Cues, cues_of, phase_of, refresh_due, view_of_json  # noqa: E402
from hazardctl.messages import GroupCues  # noqa: E402

DANGER = GateConfig(refresh_interval_s=10.0, ttl_s=30.0, min_iou=0.5)  # mode danger, the default
CALM = Cues(conflict_possible=False)
CLOSING = Cues(conflict_possible=True, min_ttc_s=4.0, max_closing_speed=50.0, min_gap_ratio=1.0)


def cued(cues: Cues | None, view: GroupView = VIEW, phase: float = 0.0) -> GroupView:
    return GroupView(view.members, view.classes, view.bbox, view.untracked, cues, phase)


def ttc(t: float | None, gap: float | None = 1.0, flags: tuple[str, ...] = ()) -> Cues:
    return Cues(conflict_possible=True, min_ttc_s=t, max_closing_speed=100.0, min_gap_ratio=gap, flags=flags)


def test_danger_defaults_are_the_issues_figures():
    assert DANGER.mode == "danger" and GateConfig().suspect_ttc_s == 1.5 and GateConfig().calm_refresh_s == 60.0


def test_ttc_at_the_threshold_is_suspect_at_once_whatever_the_refresh_says():
    gate = GroupGate(DANGER)
    assert gate.check("c", "g", cued(ttc(4.0)), 0.0) == "new"
    assert gate.check("c", "g", cued(ttc(2.0)), 0.5) is None, "closing, not yet near: held"
    assert gate.check("c", "g", cued(ttc(1.6)), 1.0) is None, "1.6 s > 1.5 s"
    assert gate.check("c", "g", cued(ttc(1.5)), 1.5) == "suspect", "0.5 s after the last send: no wait"
    e = gate.entry("c", "g")
    assert (e.suspect_ts, e.suspect_cues.min_ttc_s) == (1.5, 1.5)


def test_a_group_suspect_when_first_seen_is_sent_as_suspect_not_new():
    gate = GroupGate(DANGER)
    assert gate.check("c", "g", cued(ttc(0.9)), 0.0) == "suspect"


def test_a_suspect_group_is_resent_once_per_cooldown_unless_it_worsens():
    cfg = GateConfig(suspect_cooldown_s=5.0, suspect_worse=0.6)
    gate = GroupGate(cfg)
    sent = {}
    # TTC stays at 1.4 s (tailgating at a steady gap): suspect at 0, then once per 5 s
    for i in range(25):
        t = i * 0.5
        sent[t] = gate.check("c", "g", cued(ttc(1.4)), t)
    assert {t for t, r in sent.items() if r} == {0.0, 5.0, 10.0}
    assert set(sent.values()) == {"suspect", None}
    assert gate.held["cooldown"] == 22 and gate.suppressed == 22
    # markedly worse within the cooldown: 1.4 → 0.9 is not (> 0.6 × 1.4 = 0.84), 0.8 is
    assert gate.check("c", "g", cued(ttc(0.9)), 12.5) is None
    assert gate.check("c", "g", cued(ttc(0.8)), 13.0) == "suspect"
    assert gate.check("c", "g", cued(ttc(0.7)), 13.5) is None, "0.7 > 0.6 × 0.8: compared with the last suspect send"
    assert gate.check("c", "g", cued(ttc(0.45)), 14.0) == "suspect"


def test_a_second_cue_crossing_during_the_cooldown_is_worse():
    gate = GroupGate(DANGER)
    assert gate.check("c", "g", cued(ttc(None, gap=0.2)), 0.0) == "suspect", "predicted gap 0.2 × size < 0.25"
    assert gate.check("c", "g", cued(ttc(None, gap=0.15)), 0.5) is None, "0.15 > 0.6 × 0.2"
    assert gate.check("c", "g", cued(ttc(1.2, gap=0.15)), 1.0) == "suspect", "now a TTC crossed too"
    assert gate.check("c", "g", cued(ttc(1.2, gap=0.15, flags=("wrong-way",))), 1.5) == "suspect", "a new flag"


def test_changes_wait_for_the_cooldown_of_a_suspect_group():
    gate = GroupGate(DANGER)
    gate.check("c", "g", cued(ttc(1.0)), 0.0)
    moved = cued(ttc(1.2), shifted(VIEW, 80))
    assert gate.check("c", "g", moved, 1.0) is None and gate.held["cooldown"] == 1
    assert gate.check("c", "g", cued(ttc(3.0), shifted(VIEW, 80)), 6.0) == "changed", "after the cooldown: as usual"


def test_gap_ratio_counts_only_with_a_possible_conflict_and_flags_as_configured():
    assert not suspect_of(Cues(conflict_possible=False, min_gap_ratio=0.0)), "touching boxes that do not close"
    assert suspect_of(Cues(conflict_possible=True, min_gap_ratio=0.24))
    assert not suspect_of(Cues(conflict_possible=True, min_gap_ratio=0.25))
    assert suspect_of(Cues(conflict_possible=False, flags=("emergency-lane",))), "'*': any flag"
    only = GateConfig(suspect_flags=("wrong-way",))
    assert not suspect_of(Cues(conflict_possible=False, flags=("stopped",)), only)
    assert suspect_of(Cues(conflict_possible=False, flags=("stopped", "wrong-way")), only)
    assert not suspect_of(Cues(conflict_possible=False, flags=("wrong-way",)), GateConfig(suspect_flags=()))


def suspect_of(c: Cues, cfg: GateConfig = DANGER) -> bool:
    from hazardctl.gating import suspect

    return suspect(c, cfg)


def test_a_calm_group_is_sent_when_new_then_only_on_the_calm_refresh():
    gate = GroupGate(DANGER)
    reasons = {}
    for i in range(0, 400):  # 200 s at 2 fps; the crowd churns: members, classes and box change all the time
        t = i * 0.5
        members = tuple(range(i % 7, i % 7 + 2 + i % 3))
        classes = ("person",) * len(members) if i % 5 else ("bicycle", "person")
        view = GroupView(members, classes, shifted(VIEW, (i % 9) * 40).bbox, cues=CALM, phase=0.25)
        reasons[t] = gate.check("c", "crowd", view, t)
    sent = {t: r for t, r in reasons.items() if r}
    # grid (n + 0.25) × 60 s: the first point ≥ 0 + 30 s is 75 s, then 135 s and 195 s
    assert sent == {0.0: "new", 75.0: "refresh", 135.0: "refresh", 195.0: "refresh"}
    assert gate.held == Counter({"calm": 396})
    assert len(sent) / 200.0 <= 0.1 / 3, "≤ 0.1 calls per camera-second even with 3 such groups on a camera"


def test_a_calm_group_that_starts_closing_is_gated_on_its_changes_and_turns_suspect_at_once():
    gate = GroupGate(DANGER)
    assert gate.check("c", "g", cued(CALM), 0.0) == "new"
    assert gate.check("c", "g", cued(CALM, shifted(VIEW, 80)), 1.0) is None, "calm: geometry is not a reason"
    assert gate.check("c", "g", cued(CLOSING, shifted(VIEW, 80)), 1.5) == "changed", "possible conflict: it is"
    assert gate.check("c", "g", cued(ttc(1.3), shifted(VIEW, 80)), 2.0) == "suspect"


def test_groups_without_cues_are_gated_as_before_but_on_their_phase_grid():
    gate = GroupGate(DANGER)
    assert gate.check("c", "g", cued(None, phase=0.5), 0.0) == "new"
    assert gate.check("c", "g", GroupView((1, 2, 3), VIEW.classes, BOX, phase=0.5), 1.0) == "changed"
    assert gate.check("c", "g", shifted(VIEW, 60), 2.0) == "changed"
    # after the change at 2 s the first grid point ((n + 0.5) × 10) at least 5 s later is 15 s
    reasons = {t / 2: gate.check("c", "g", cued(None, shifted(VIEW, 60), 0.5), t / 2) for t in range(5, 80)}
    assert {t for t, r in reasons.items() if r} == {15.0, 25.0, 35.0}
    assert set(reasons.values()) == {None, "refresh"}
    assert gate.check("c", "g", cued(None, phase=0.5), 80.0) == "new", "not seen for 40 s > TTL"


def test_refresh_due_is_on_the_grid_half_an_interval_after_the_send_at_the_earliest():
    for phase in (0.0, 0.3, 0.99):
        for sent in (0.0, 3.3, 17.1, 1_800_000_000.25):
            due = next(sent + k * 0.01 for k in range(3000) if refresh_due(sent, sent + k * 0.01, 10.0, phase))
            assert 5.0 - 0.011 <= due - sent < 15.0 + 0.011, (phase, sent, due - sent)
            assert math.isclose((due / 10.0 - phase) % 1.0, 0.0, abs_tol=2e-3) or \
                math.isclose((due / 10.0 - phase) % 1.0, 1.0, abs_tol=2e-3), "on the group's grid"
    assert refresh_due(0.0, 0.0, 0.0, 0.5), "refresh 0: every frame is a refresh (benchmarks' worst case)"


def refreshes_per_second(cfg: GateConfig, groups: int = 100, seconds: int = 120) -> Counter:
    """`groups` unchanged groups, all new in the same second (a restart, a burst), 2 fps."""
    gate, per = GroupGate(cfg), Counter()
    for i in range(seconds * 2):
        t = 1_800_000_000.0 + i * 0.5
        for g in range(groups):
            gid = f"cam-{g % 10}-g{g}"
            view = GroupView(VIEW.members, VIEW.classes, BOX, phase=phase_of(gid))
            if gate.check(f"cam-{g % 10}", gid, view, t) == "refresh":
                per[int(t)] += 1
    return per


def test_refreshes_of_groups_first_sent_together_never_synchronise():
    classic = refreshes_per_second(GateConfig(mode="classic"))
    danger = refreshes_per_second(DANGER)
    assert max(classic.values()) == 100, "the herd the issue measured: every group in the same second"
    total = sum(danger.values())
    assert abs(total - sum(classic.values())) <= 100, "about as many refreshes, only spread"
    assert max(danger.values()) <= 30, danger.most_common(3)  # mean 10/s over the 10 s interval


def test_phase_is_stable_across_processes_and_spread():
    code = "from hazardctl.gating import phase_of; print(repr(phase_of('cam-07-g12')))"
    got = {subprocess.run([sys.executable, "-c", code], env={"PYTHONHASHSEED": seed, "PATH": ""}, capture_output=True,
                          text=True, cwd=str(__import__("tests.conftest").conftest.ROOT)).stdout for seed in ("1", "2")}
    assert len(got) == 1 and float(got.pop()) == phase_of("cam-07-g12")
    phases = [phase_of(f"g{i}") for i in range(1000)]
    assert all(0.0 <= p < 1.0 for p in phases)
    assert all(70 <= sum(k / 10 <= p < (k + 1) / 10 for p in phases) <= 130 for k in range(10)), "uniform (±3 sd)"


def test_broken_cue_values_are_ignored_never_a_suspect_storm():
    raw = {"conflict_possible": True, "min_ttc_s": float("nan"), "min_gap_ratio": -1.0,
           "max_closing_speed": float("inf"), "flags": []}
    c = cues_of(raw)
    assert c == Cues(conflict_possible=True, min_ttc_s=None, min_gap_ratio=None, max_closing_speed=None)
    assert cues_of({"conflict_possible": True, "min_ttc_s": "0.1"}).min_ttc_s is None, "a string is not a number"
    assert cues_of({"conflict_possible": True, "min_ttc_s": -0.5}).min_ttc_s is None
    gate = GroupGate(DANGER)
    group = {"group_id": "g", "member_ids": [0, 1], "classes": ["car", "person"], "bbox": list(BOX), "cues": raw}
    reasons = [gate.check("c", "g", view_of_json(group, {0: 1, 1: 2}), t * 0.5) for t in range(40)]
    assert reasons.count("suspect") == 0 and reasons[0] == "new"


def test_the_view_is_the_same_from_the_model_and_from_json():
    from hazardctl.messages import Group, SpatialFeatures
    from stages.expand.tasks import group_view

    cues = GroupCues(conflict_possible=True, min_ttc_s=1.2, max_closing_speed=140.0, min_gap_ratio=0.1,
                     flags=["wrong-way"])
    g = Group(group_id="cam-1-g3", member_ids=[0, 2], bbox=BOX, classes=["person", "car"], mean_confidence=0.8,
              features=SpatialFeatures(density_per_10k_px2=1, mean_spacing=1, min_spacing=1, vehicle_count=1,
                                       pedestrian_count=1), cues=cues)
    tracks = {0: 7, 2: None}
    from_model = group_view(g, tracks)
    from_json = view_of_json(orjson_roundtrip(g), tracks)
    assert from_model == from_json
    assert from_model.cues == Cues(True, 1.2, 0.1, 140.0, ("wrong-way",)) and from_model.untracked == 1
    assert from_model.phase == phase_of("cam-1-g3") and from_model.classes == ("car", "person")


def orjson_roundtrip(model) -> dict:
    import orjson

    return orjson.loads(model.model_dump_json())


views_with_cues = st.builds(
    GroupView,
    members=st.sampled_from([(1, 2), (1, 2, 3)]),
    classes=st.sampled_from([("car", "person")]),
    bbox=st.sampled_from([BOX, (160.0, 100.0, 260.0, 200.0)]),
    cues=st.sampled_from([None, CALM, CLOSING, ttc(1.2), ttc(0.5), ttc(None, gap=0.1)]),
    phase=st.sampled_from([0.0, 0.7]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 40.0), views_with_cues), min_size=1, max_size=25), st.data())
def test_danger_replaying_any_processed_frame_changes_nothing(frames, data):
    entry, ts, history = None, 0.0, []
    for step, view in frames:
        ts += step
        _, entry, _ = decide(entry, view, ts, DANGER)
        history.append((ts, view))
    old_ts, old_view = data.draw(st.sampled_from(history))
    reason, after, _ = decide(entry, old_view, old_ts, DANGER)
    assert (reason, after) == (None, entry)


def crowd(members: tuple, untracked: int = 0, cues: Cues | None = CALM) -> GroupView:
    return GroupView(members, ("person",) * (len(members) + untracked), BOX, untracked, cues)


def test_a_calm_regrouping_of_road_users_just_assessed_is_held():
    """Walkers drifting in and out of linking distance form new group ids; the LLM saw them all moments
    ago (in other groups), so a new calm group of them waits until their last assessment is
    calm_refresh_s old — then it is sent as `new`, which is its calm refresh."""
    gate = GroupGate(GateConfig(calm_regroup_share=1.0))  # all of them
    assert gate.check("c", "g1", crowd((1, 2)), 0.0) == "new"
    assert gate.check("c", "g2", crowd((3, 4)), 0.0) == "new"
    assert gate.check("c", "g3", crowd((2, 3)), 10.0) is None, "both assessed within 60 s"
    assert gate.held["calm"] == 1 and gate.entry("c", "g3") is None, "no state: decided afresh each frame"
    assert gate.check("c", "g4", crowd((2, 5)), 10.0) == "new", "track 5 was never assessed"
    assert gate.check("c", "g5", crowd((2, 3), untracked=1), 10.0) == "new", "an untracked member: unknown"
    assert gate.check("c", "g6", crowd((2, 3), cues=CLOSING), 10.0) == "new", "possible conflict: not calm"
    assert gate.check("c", "g7", crowd((2, 3), cues=None), 10.0) == "new", "no cues: gated as before"
    assert gate.check("c", "g3", crowd((2, 3)), 59.5) is None
    assert gate.check("c", "g3", crowd((3, 4)), 60.5) == "new", "3 and 4 were last assessed at 0 s: 60.5 s ago"
    assert gate.check("other-camera", "g8", crowd((1, 2)), 10.0) == "new", "track ids are per camera"
    assert GroupGate(GateConfig(calm_regroup=False)).check("c", "g3", crowd((2, 3)), 10.0) == "new"


def test_by_default_half_of_a_calm_groups_road_users_assessed_is_enough():
    """A walker the LLM has not seen, met by one it has, waits until that one's assessment is a calm
    refresh old: it too is looked at within about one calm refresh."""
    gate = GroupGate(DANGER)
    assert DANGER.calm_regroup_share == 0.5
    assert gate.check("c", "g1", crowd((1, 2)), 0.0) == "new"
    assert gate.check("c", "g2", crowd((2, 5)), 10.0) is None, "1 of 2 assessed"
    assert gate.check("c", "g3", crowd((2, 3), untracked=1), 10.0) == "new", "1 of 3: 3 never, the untracked one unknown"
    assert gate.check("c", "g7", crowd((1, 2), untracked=1), 10.0) is None, "2 of 3"
    assert gate.check("c", "g4", crowd((5, 6)), 10.0) == "new", "none of them"
    assert gate.check("c", "g5", crowd((1, 7, 8)), 10.0) == "new", "1 of 3"
    assert gate.check("c", "g2", crowd((2, 5)), 30.0) is None, "5 was assessed in g4 at 10 s meanwhile"
    assert gate.check("c", "g6", crowd((2, 9)), 69.5) is None, "2 was last assessed at 10 s (in g3)"
    assert gate.check("c", "g6", crowd((2, 9)), 70.5) == "new", "... 60.5 s ago"


def test_regroup_memory_is_bounded_by_the_calm_refresh():
    gate = GroupGate(DANGER)
    for t in range(3000):  # a new walker and a new group every second for 50 min
        gate.check("c", f"g{t}", crowd((t, t + 1)), float(t))
    memory = gate.assessed("c").last
    assert len(memory) <= DANGER.calm_refresh_s + 2 + GroupGate.sweep_every, len(memory)


def test_a_camera_whose_every_group_is_new_on_every_frame_stays_bounded():
    """No steady group beside them: the state grows by one per check, and must still be swept."""
    gate = GroupGate(CFG)
    for t in range(5000):
        gate.check("cam-1", f"g{t}", VIEW, float(t))
    assert len(gate) <= 2 * GroupGate.sweep_every + CFG.ttl_s + 2, len(gate)
