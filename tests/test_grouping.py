"""Grouping geometry: size-relative clustering, splitting, features and stable ids (pure, fast)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hazardctl.grouping import (
    Cluster,
    GroupIds,
    GroupingConfig,
    cluster_tracks,
    find_groups,
    iou,
    pairwise_gaps,
)


@dataclass
class Obj:
    class_name: str
    bbox: tuple[float, float, float, float]
    confidence: float = 0.9
    track_id: int | None = None


def person(x: float, y: float, h: float = 100.0, track: int | None = None) -> Obj:
    return Obj("person", (x, y, x + 0.4 * h, y + h), track_id=track)


def car(x: float, y: float, w: float = 200.0, track: int | None = None) -> Obj:
    return Obj("car", (x, y, x + w, y + 0.5 * w), track_id=track)


def members(clusters: list[Cluster]) -> list[tuple[int, ...]]:
    return [c.members for c in clusters]


def scaled(objs: list[Obj], s: float) -> list[Obj]:
    return [Obj(o.class_name, tuple(v * s for v in o.bbox), o.confidence, o.track_id) for o in objs]


# --- clustering -------------------------------------------------------------------------------

def test_close_road_users_form_a_group_and_far_ones_do_not():
    objs = [person(100, 100), person(150, 100), person(900, 100)]
    assert members(find_groups(objs)) == [(0, 1)]


def test_a_single_road_user_and_non_road_users_are_never_a_group():
    light = Obj("traffic light", (120, 10, 140, 60))
    sign = Obj("stop sign", (150, 10, 190, 50))
    assert find_groups([person(100, 100), light, sign]) == []
    assert members(find_groups([person(100, 100), light, person(150, 100)])) == [(0, 2)]


def test_gap_is_relative_to_size_not_absolute_pixels():
    # Two buses 400 px apart at 4K (centres 1400 px apart) are bunched; the old 150 px rule split them.
    buses = [Obj("bus", (0, 0, 1000, 400)), Obj("bus", (1400, 0, 2400, 400))]
    assert members(find_groups(buses)) == [(0, 1)]
    # Two far-away pedestrians 20 px tall, centres 100 px apart: 10 body heights, not a group
    # (the old rule grouped them).
    far = [person(0, 0, h=20), person(100, 0, h=20)]
    assert find_groups(far) == []


def test_single_linkage_chains_through_a_middle_member():
    objs = [person(0, 0), person(60, 0), person(120, 0), person(180, 0)]
    assert members(find_groups(objs)) == [(0, 1, 2, 3)]


@pytest.mark.parametrize("scale", [0.25, 0.5, 3.0, 5.33])
def test_scale_invariance_same_scene_scaled_gives_same_groups(scale):
    scene = [person(100, 300), person(150, 310), car(230, 330), person(900, 200), car(1500, 600),
             car(1750, 610), Obj("truck", (3000, 100, 3600, 500)), person(3650, 380)]
    base = find_groups(scene)
    assert members(base) == [(0, 1, 2), (4, 5), (6, 7)]
    assert members(find_groups(scaled(scene, scale))) == members(base)


box = st.tuples(st.floats(0, 3000), st.floats(0, 2000), st.floats(10, 600), st.floats(10, 600)).map(
    lambda t: (t[0], t[1], t[0] + t[2], t[1] + t[3]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["person", "car", "bus", "bicycle"]), box), max_size=25),
       st.sampled_from([0.5, 2.0, 3.0, 4.0]))
def test_property_scale_invariance(scene, scale):
    objs = [Obj(c, b) for c, b in scene]
    assert members(find_groups(scaled(objs, scale))) == members(find_groups(objs))


def test_oversized_cluster_is_split_into_parts_no_larger_than_max():
    # 20 people in a queue, each touching the next: one chain under the normal rule.
    queue = [person(i * 45, 0) for i in range(20)]
    cfg = GroupingConfig(max_size=6)
    groups = find_groups(queue, cfg)
    assert groups and all(2 <= len(g.members) <= 6 for g in groups)
    flat = [m for g in groups for m in g.members]
    assert len(flat) == len(set(flat))


def test_dense_crowd_that_tighter_linkage_cannot_split_is_bisected():
    crowd = [person(i * 5 + (i % 3) * 2, (i % 4) * 5) for i in range(17)]  # heavily overlapping
    groups = find_groups(crowd, GroupingConfig(max_size=5))
    assert sorted(m for g in groups for m in g.members) == list(range(17))  # nobody lost
    assert all(2 <= len(g.members) <= 5 for g in groups)


# --- features ---------------------------------------------------------------------------------

def test_spatial_features():
    objs = [Obj("person", (0, 0, 40, 100)), Obj("car", (60, 0, 260, 100)), Obj("person", (0, 120, 40, 220))]
    (g,) = find_groups(objs)
    f = g.features
    assert g.bbox == (0, 0, 260, 220)
    assert f.pedestrian_count == 2 and f.vehicle_count == 1
    assert f.density_per_10k_px2 == pytest.approx(3 / (260 * 220 / 1e4))
    assert f.min_spacing == pytest.approx(120.0)           # the two people, centre to centre
    assert f.min_pedestrian_vehicle_distance == pytest.approx(20.0)  # edge gap person 0 ↔ car
    d01 = ((160 - 20) ** 2) ** 0.5
    d02 = 120.0
    d12 = ((160 - 20) ** 2 + (50 - 170) ** 2) ** 0.5
    assert f.mean_spacing == pytest.approx((d01 + d02 + d12) / 3)


def test_no_pedestrian_vehicle_distance_without_both_kinds():
    (g,) = find_groups([car(0, 0), car(220, 0)])
    assert g.features.min_pedestrian_vehicle_distance is None
    assert g.features.pedestrian_count == 0


def test_gaps_are_zero_for_overlapping_boxes():
    import numpy as np

    g = pairwise_gaps(np.array([[0, 0, 10, 10], [5, 5, 20, 20], [13, 14, 20, 20.0]]))
    assert g[0, 1] == 0 and g[0, 2] == pytest.approx(5.0)


# --- stable ids -------------------------------------------------------------------------------

def frame(objs, ids: GroupIds, now: float) -> dict[tuple[int, ...], str]:
    """Group ids of one frame, by member track ids."""
    clusters = find_groups(objs)
    got = ids.assign([(cluster_tracks(objs, c), c.bbox) for c in clusters], now)
    return {tuple(sorted(objs[m].track_id for m in c.members)): gid for c, gid in zip(clusters, got)}


def walking_pair(x: float, tracks=(1, 2)) -> list[Obj]:
    return [person(x, 100, track=tracks[0]), person(x + 50, 100, track=tracks[1])]


@pytest.mark.parametrize("tracked", [True, False], ids=["tracks", "iou"])
def test_same_physical_group_keeps_its_id_while_it_moves(tracked):
    ids = GroupIds(prefix="g")
    seen = set()
    for t in range(20):
        objs = walking_pair(100 + t * 8)  # 8 px per frame: slow enough for IoU matching too
        if not tracked:
            objs = [Obj(o.class_name, o.bbox) for o in objs]
        clusters = find_groups(objs)
        seen.update(ids.assign([(cluster_tracks(objs, c), c.bbox) for c in clusters], t * 0.5))
    assert seen == {"g1"}


def test_split_larger_part_keeps_id_and_departing_part_gets_a_new_one():
    ids = GroupIds()
    together = [person(100 + i * 45, 100, track=i + 1) for i in range(5)]
    assert frame(together, ids, 0.0) == {(1, 2, 3, 4, 5): "g1"}
    apart = [person(100 + i * 45, 100, track=i + 1) for i in range(3)] + \
            [person(800 + i * 45, 100, track=i + 1) for i in range(3, 5)]
    assert frame(apart, ids, 0.5) == {(1, 2, 3): "g1", (4, 5): "g2"}


def test_split_without_tracking_uses_iou_of_union_boxes():
    ids = GroupIds()
    together = [person(100 + i * 45, 100) for i in range(5)]  # union 100..320
    assert ids.assign([(None, c.bbox) for c in find_groups(together)], 0.0) == ["g1"]
    apart = [person(100 + i * 45, 100) for i in range(3)] + [person(330 + i * 45, 100) for i in range(3, 5)]
    clusters = find_groups(apart)
    assert len(clusters) == 2
    got = ids.assign([(None, c.bbox) for c in clusters], 0.5)
    assert got == ["g1", "g2"]


def test_new_road_users_at_the_same_place_are_a_new_group_when_tracked():
    ids = GroupIds()
    assert frame(walking_pair(100, tracks=(1, 2)), ids, 0.0) == {(1, 2): "g1"}
    assert frame(walking_pair(100, tracks=(7, 8)), ids, 0.5) == {(7, 8): "g2"}


def test_a_missed_frame_does_not_change_the_id_but_a_long_absence_does():
    ids = GroupIds(memory_s=3.0, reform_memory_s=0.0)
    assert frame(walking_pair(100), ids, 0.0) == {(1, 2): "g1"}
    assert frame([], ids, 0.5) == {}
    assert frame(walking_pair(110), ids, 1.0) == {(1, 2): "g1"}
    assert frame(walking_pair(120), ids, 10.0) == {(1, 2): "g2"}


def test_the_same_road_users_together_again_get_their_old_id_back_within_reform_memory():
    """Persons 1 and 2 walk apart for 9 s and together again: the same group (not `new` again);
    after 40 s, or with mostly other road users, it is a new group; untracked groups never re-form."""
    ids = GroupIds(memory_s=3.0, reform_memory_s=30.0)
    assert frame(walking_pair(100), ids, 0.0) == {(1, 2): "g1"}
    assert frame(walking_pair(100, (3, 4)), ids, 1.0) == {(3, 4): "g2"}
    assert frame(walking_pair(120), ids, 10.0) == {(1, 2): "g1"}
    assert frame(walking_pair(120, (3, 4)) + walking_pair(900, (5, 6)), ids, 11.0) == {(3, 4): "g2", (5, 6): "g3"}
    assert frame([person(100, 100, track=1), person(150, 100, track=7), person(200, 100, track=8)], ids,
                 20.0) == {(1, 7, 8): "g4"}  # Jaccard 1/4 with g1
    assert frame(walking_pair(100, (5, 6)), ids, 60.0) == {(5, 6): "g5"}  # gone 49 s: past reform_memory_s
    untracked = GroupIds(memory_s=3.0, reform_memory_s=30.0)
    pair = [Obj(o.class_name, o.bbox) for o in walking_pair(100)]
    assert untracked.assign([(None, c.bbox) for c in find_groups(pair)], 0.0) == ["g1"]
    assert untracked.assign([(None, c.bbox) for c in find_groups(pair)], 10.0) == ["g2"]


def test_merge_keeps_the_older_id_and_a_re_split_gets_the_other_back():
    ids = GroupIds()
    a, b = walking_pair(100, (1, 2)), walking_pair(600, (3, 4))
    assert frame(a + b, ids, 0.0) == {(1, 2): "g1", (3, 4): "g2"}
    merged = walking_pair(100, (1, 2)) + walking_pair(200, (3, 4))
    assert frame(merged, ids, 0.5) == {(1, 2, 3, 4): "g1"}
    assert frame(a + b, ids, 1.0) == {(1, 2): "g1", (3, 4): "g2"}


def test_each_id_is_given_to_one_group_per_frame():
    ids = GroupIds()
    frame(walking_pair(100, (1, 2)), ids, 0.0)
    # both new groups overlap the old one by one track: only one of them may inherit g1
    got = frame(walking_pair(100, (1, 5)) + walking_pair(800, (2, 6)), ids, 0.5)
    assert sorted(got.values()) == ["g1", "g2"]


def ids_per_frame(frames: list[list[Obj]], ids: GroupIds, dt: float = 0.5) -> list[list[str]]:
    """Group ids of consecutive frames (members may be untracked, so not keyed by track ids)."""
    out = []
    for t, objs in enumerate(frames):
        clusters = find_groups(objs)
        out.append(ids.assign([(cluster_tracks(objs, c), c.bbox) for c in clusters], t * dt))
    return out


def test_tracked_pair_keeps_its_id_when_an_untracked_road_user_joins():
    # A car arrives next to two tracked pedestrians; ByteTrack gives it an id only on its second
    # frame. The car triples the union box (IoU with the pair's box 0.15 < 0.3), so only the shared
    # track ids can say it is the same group.
    pair = walking_pair(100)
    frames = [pair, pair + [car(200, 100, w=300)], pair + [car(200, 100, w=300, track=3)]]
    assert [len(find_groups(f)) for f in frames] == [1, 1, 1]
    assert ids_per_frame(frames, GroupIds()) == [["g1"], ["g1"], ["g1"]]


def test_a_member_that_loses_its_track_id_for_a_frame_does_not_change_the_group_id():
    # Two cars driving 300 px per sample: consecutive union boxes overlap too little for IoU (0.17),
    # so the remaining track id must carry the group through the frame where car 2 has no id.
    def cars(x: float, second_track: int | None) -> list[Obj]:
        return [car(x, 100, track=1), car(x + 220, 100, track=second_track)]

    frames = [cars(100, 2), cars(400, None), cars(700, 2), cars(1000, 2)]
    assert ids_per_frame(frames, GroupIds()) == [["g1"]] * 4


def test_without_shared_track_ids_a_partly_tracked_group_is_matched_by_iou():
    # Two newcomers: one is confirmed a frame before the other and then loses its id for a frame.
    # No track id is shared, but an untracked member may be either one, so IoU decides (the same
    # place: same group). Fully tracked groups without shared ids stay apart (test above).
    frames = [[person(100, 100, track=7), person(150, 100)], [person(104, 100), person(154, 100, track=8)]]
    assert ids_per_frame(frames, GroupIds()) == [["g1"], ["g1"]]
    moved = [[person(100, 100, track=7), person(150, 100)], [person(400, 100), person(450, 100, track=8)]]
    assert ids_per_frame(moved, GroupIds()) == [["g1"], ["g2"]]


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


# --- current OR predicted proximity (issue 16) ----------------------------------------------

def test_a_predicted_link_groups_an_approaching_car_with_a_pedestrian_while_still_far():
    """The car is 600 px from the pedestrian: far beyond link_k × size; the cues predict it will be
    close within the horizon, so the pair is one group now."""
    objs = [person(1000, 300), car(200, 300)]
    assert find_groups(objs) == []
    (g,) = find_groups(objs, predicted=[(1, 0)])
    assert g.members == (0, 1) and g.bbox == (200.0, 300.0, 1040.0, 400.0)
    assert g.features.min_pedestrian_vehicle_distance == 600.0  # the features still describe now


def test_predicted_links_from_cues_end_to_end():
    from hazardctl.cues import frame_pairs
    from hazardctl.messages import DetectedObject, Motion

    def wire(i, o, vx):
        m = Motion(vx=vx, vy=0.0, speed=abs(vx), heading_deg=0.0 if vx >= 0 else 180.0, stopped_s=0.0, samples=3)
        return DetectedObject(object_id=i, class_name=o.class_name, class_id=0, confidence=0.9, bbox=o.bbox,
                              track_id=i + 1, motion=m)

    objs = [wire(0, person(1000, 300), 0.0), wire(1, car(200, 300), 250.0)]  # 600 px at 250 px/s: contact in 2.4 s
    links = frame_pairs(objs).predicted_links(GroupingConfig().link_k)
    assert links == [(1, 0)]
    assert members(find_groups(objs, predicted=links)) == [(0, 1)]
    objs[1].motion = objs[1].motion.model_copy(update={"vx": 100.0, "speed": 100.0})  # 300 px in 3 s: too far
    assert frame_pairs(objs).predicted_links(GroupingConfig().link_k) == []


def test_predicted_links_to_non_road_users_or_themselves_are_ignored():
    objs = [person(0, 0), Obj("traffic light", (900, 0, 920, 60)), person(2000, 0)]
    assert find_groups(objs, predicted=[(0, 1), (2, 2), (5, 0)]) == []


def test_a_predicted_link_survives_the_split_of_an_oversized_crowd():
    """Ten people shoulder to shoulder plus a car predicted to reach person 9: after the split the
    car is still in the group of the person it approaches."""
    crowd = [person(45 * i, 0) for i in range(10)]
    objs = crowd + [car(2000, 0)]
    groups = find_groups(objs, GroupingConfig(max_size=8), predicted=[(10, 9)])
    assert all(len(g.members) <= 8 for g in groups)
    assert any({9, 10} <= set(g.members) for g in groups)
