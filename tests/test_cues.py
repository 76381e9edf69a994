"""Pair cues stated as physics in numbers: gaps in px, speeds in px/s, times in s."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from hazardctl.cues import CueConfig, box_pairs, frame_pairs, group_cues
from hazardctl.messages import DetectedObject, Motion


def moving(vx: float, vy: float) -> Motion:
    speed = math.hypot(vx, vy)
    return Motion(vx=vx, vy=vy, speed=speed, heading_deg=math.degrees(math.atan2(vy, vx)), stopped_s=0.0, samples=4)


def obj(i: int, cls: str, bbox, motion: Motion | None) -> DetectedObject:
    return DetectedObject(object_id=i, class_name=cls, class_id=0, confidence=0.9, bbox=bbox, track_id=i + 1,
                          motion=motion)


def one(a, va, b, vb, horizon=3.0, overlap_closing=0.0):
    gap, closing, ttc, min_gap, t = box_pairs([a], [va], [b], [vb], horizon, overlap_closing)
    return float(gap[0]), float(closing[0]), None if np.isnan(ttc[0]) else float(ttc[0]), float(min_gap[0]), float(t[0])


CAR = (0.0, 100.0, 100.0, 150.0)          # 100 × 50 px
PERSON = (200.0, 90.0, 230.0, 160.0)      # 100 px right of the car, same height band


def test_a_car_100px_away_closing_at_50px_s_has_ttc_2s():
    gap, closing, ttc, min_gap, t = one(CAR, (50, 0), PERSON, (0, 0))
    assert (gap, closing, ttc, min_gap, t) == pytest.approx((100.0, 50.0, 2.0, 0.0, 2.0))


def test_both_moving_towards_each_other_add_up():
    # car at 30 px/s, pedestrian walking towards it at 20 px/s: 100 px closes at 50 px/s
    _, closing, ttc, _, _ = one(CAR, (30, 0), PERSON, (-20, 0))
    assert closing == pytest.approx(50.0) and ttc == pytest.approx(2.0)


def test_moving_apart_has_negative_closing_no_ttc_and_the_smallest_gap_is_now():
    gap, closing, ttc, min_gap, t = one(CAR, (-40, 0), PERSON, (0, 0))
    assert closing == pytest.approx(-40.0) and ttc is None and (min_gap, t) == pytest.approx((100.0, 0.0))


def test_a_ttc_beyond_the_horizon_is_still_reported_and_the_smallest_gap_is_at_the_horizon():
    gap, closing, ttc, min_gap, t = one(CAR, (20, 0), PERSON, (0, 0), horizon=3.0)
    assert ttc == pytest.approx(5.0)               # 100 px at 20 px/s
    assert (min_gap, t) == pytest.approx((40.0, 3.0))  # 100 − 3 × 20


def test_a_car_passing_40px_in_front_of_a_pedestrian_never_touches():
    """The car drives right at 100 px/s along y 100–150; the pedestrian stands 40 px below its lane,
    100 px ahead of its front: from t = 1 s the gap is the 40 px lateral clearance, until the car's
    rear passes the pedestrian at t = 2.3 s."""
    ped = (200.0, 190.0, 230.0, 260.0)
    gap, closing, ttc, min_gap, t = one(CAR, (100, 0), ped, (0, 0))
    assert gap == pytest.approx(math.hypot(100, 40))
    assert closing == pytest.approx(100 * 100 / math.hypot(100, 40))  # the gap's direction is mostly along x
    assert ttc is None
    assert (min_gap, t) == pytest.approx((40.0, 1.0))


def test_crossing_paths_ttc_is_when_both_axes_overlap():
    """A pedestrian 60 px below the car's lane walks up at 40 px/s while the car, 100 px to the left,
    drives right at 50 px/s: x overlap from t = 2.0 s, y overlap from t = 1.5 s → contact at 2.0 s."""
    ped = (200.0, 210.0, 230.0, 280.0)
    _, _, ttc, min_gap, t = one(CAR, (50, 0), ped, (0, -40))
    assert ttc == pytest.approx(2.0) and min_gap == 0.0 and t == pytest.approx(2.0)


def test_a_pedestrian_who_crosses_before_the_car_arrives_is_a_near_miss_not_a_contact():
    """Same crossing but the pedestrian walks at 120 px/s: it leaves the car's lane (y < 100) at 1.5 s,
    while the car's front is still 25 px short of it; then the gap hypot(100 − 50t, 120t − 180) is
    smallest at t = 26600/16900 ≈ 1.574 s: 23.1 px. No contact."""
    ped = (200.0, 210.0, 230.0, 280.0)
    _, _, ttc, min_gap, t = one(CAR, (50, 0), ped, (0, -120))
    t_star = 26600 / 16900
    assert ttc is None
    assert t == pytest.approx(t_star)
    assert min_gap == pytest.approx(math.hypot(100 - 50 * t_star, 120 * t_star - 180))
    assert 23.0 < min_gap < 23.2


def test_overlapping_boxes_have_ttc_0_only_while_closing_faster_than_the_threshold():
    ped_in_front = (80.0, 90.0, 110.0, 160.0)  # overlaps the car's box (perspective)
    _, closing, ttc, min_gap, _ = one(CAR, (0, 0), ped_in_front, (0, 0), overlap_closing=8.0)
    assert closing == 0.0 and ttc is None and min_gap == 0.0
    _, closing, ttc, _, _ = one(CAR, (3, 0), ped_in_front, (0, 0), overlap_closing=8.0)  # jitter-sized
    assert 0 < closing < 8 and ttc is None
    _, closing, ttc, _, _ = one(CAR, (40, 0), ped_in_front, (0, 0), overlap_closing=8.0)
    assert closing == pytest.approx(40.0) and ttc == 0.0


def test_diagonal_approach():
    """B 30 px right and 30 px below A moves up-left at (−10, −10) px/s: contact after 3 s; the gap
    now is 30·√2 px and shrinks at 10·√2 px/s."""
    gap, closing, ttc, min_gap, t = one((0, 0, 10, 10), (0, 0), (40, 40, 50, 50), (-10, -10))
    assert gap == pytest.approx(30 * math.sqrt(2)) and closing == pytest.approx(10 * math.sqrt(2))
    assert ttc == pytest.approx(3.0) and (min_gap, t) == pytest.approx((0.0, 3.0))


def test_arrays_of_pairs_at_once():
    a = np.array([CAR, CAR, CAR])
    b = np.array([PERSON, PERSON, PERSON])
    va = np.array([(50, 0), (25, 0), (-10, 0)])
    gap, closing, ttc, _, _ = box_pairs(a, va, b, np.zeros((3, 2)), 3.0)
    assert gap.tolist() == [100.0, 100.0, 100.0]
    assert ttc[:2].tolist() == pytest.approx([2.0, 4.0]) and np.isnan(ttc[2])


# --- pairs and groups from objects ----------------------------------------------------------

def test_pair_kinds_and_ids_put_the_vehicle_first():
    objs = [obj(0, "person", PERSON, moving(0, 0)), obj(1, "car", CAR, moving(50, 0)),
            obj(2, "bicycle", (0, 300, 40, 340), moving(0, -10)), obj(3, "truck", (300, 300, 400, 380), moving(0, 0)),
            obj(4, "traffic light", (0, 0, 10, 30), moving(0, 0))]
    cues = {c.object_ids: c for c in frame_pairs(objs).cues()}
    assert set(cues) == {(1, 0), (1, 2), (1, 3), (3, 0), (3, 2)}
    assert cues[(1, 0)].kind == "vehicle-pedestrian" and cues[(1, 2)].kind == "vehicle-cyclist"
    assert cues[(1, 3)].kind == "vehicle-vehicle"
    assert cues[(1, 0)].ttc_s == pytest.approx(2.0) and cues[(1, 0)].size == pytest.approx(
        (math.hypot(100, 50) + math.hypot(30, 70)) / 2)


def test_objects_without_motion_give_no_pair_and_a_group_without_any_motion_has_no_cues():
    objs = [obj(0, "car", CAR, None), obj(1, "person", PERSON, moving(0, 0)), obj(2, "person", (300, 90, 330, 160), None)]
    pairs = frame_pairs(objs)
    assert len(pairs) == 0
    assert pairs.group_cues([0, 2]) is None               # nobody has motion: the gate behaves as before
    assert group_cues(objs, [0, 1]).conflict_possible is False  # someone moves, no pair to judge


def test_a_car_approaching_a_pedestrian_is_a_possible_conflict_with_its_worst_cues():
    objs = [obj(0, "car", CAR, moving(50, 0)), obj(1, "person", PERSON, moving(0, 0)),
            obj(2, "person", (400, 90, 430, 160), moving(0, 0))]
    g = group_cues(objs, [0, 1, 2])
    assert g.conflict_possible
    assert g.min_ttc_s == pytest.approx(2.0) and g.max_closing_speed == pytest.approx(50.0)
    assert g.min_gap_ratio == 0.0 and g.pair.object_ids == (0, 1)


def test_a_crowd_on_a_plaza_is_calm():
    people = [obj(i, "person", (50 * i, 100, 50 * i + 30, 170), moving(30 * (-1) ** i, 10)) for i in range(6)]
    g = group_cues(people, range(6))
    assert g is not None and not g.conflict_possible and g.min_ttc_s is None


def test_a_row_of_parked_cars_with_box_jitter_is_calm():
    """Jitter-sized velocities (≤ 5 px/s) are below the stopped threshold: predicted as still."""
    cars = [obj(i, "car", (110 * i, 100, 110 * i + 100, 150), moving(4 * (-1) ** i, -3)) for i in range(5)]
    g = group_cues(cars, range(5))
    assert not g.conflict_possible
    assert all(c.closing_speed == 0.0 and c.ttc_s is None for c in frame_pairs(cars).cues())


def test_parallel_traffic_at_equal_speed_is_calm():
    cars = [obj(0, "car", (0, 100, 100, 150), moving(120, 0)), obj(1, "car", (0, 160, 100, 210), moving(121, 0)),
            obj(2, "car", (130, 100, 230, 150), moving(119, 1))]
    g = group_cues(cars, range(3))
    assert not g.conflict_possible and g.min_ttc_s is None


def test_a_rear_end_approach_on_a_stopped_car_is_a_possible_conflict():
    cars = [obj(0, "car", (0, 100, 100, 150), moving(80, 0)), obj(1, "car", (240, 100, 340, 150), moving(0, 0))]
    g = group_cues(cars, [0, 1])
    assert g.conflict_possible and g.min_ttc_s == pytest.approx(140 / 80)


def test_a_pedestrian_walking_past_a_parked_car_is_not_a_conflict():
    objs = [obj(0, "car", CAR, moving(0, 0)), obj(1, "person", PERSON, moving(-60, 0))]
    (c,) = frame_pairs(objs).cues()
    assert c.ttc_s == pytest.approx(100 / 60)  # the physics is reported on the pair…
    assert not group_cues(objs, [0, 1]).conflict_possible  # …but a parked car threatens nobody


def test_slow_closing_below_the_threshold_is_not_a_conflict():
    # size ≈ 96 px → threshold max(8, 9.6) px/s; 8.5 px/s of closing is too slow to count
    objs = [obj(0, "car", CAR, moving(8.5, 0)), obj(1, "person", PERSON, None)]
    objs[1].motion = moving(0, 0)
    assert not group_cues(objs, [0, 1]).conflict_possible
    objs[0].motion = moving(12, 0)
    assert group_cues(objs, [0, 1]).conflict_possible


def test_the_worst_pair_is_the_lowest_ttc():
    objs = [obj(0, "car", CAR, moving(50, 0)), obj(1, "person", PERSON, moving(0, 0)),
            obj(2, "car", (0, 300, 100, 350), moving(100, 0)), obj(3, "person", (200, 290, 230, 360), moving(0, 0))]
    g = group_cues(objs, range(4))
    assert g.pair.object_ids == (2, 3) and g.min_ttc_s == pytest.approx(1.0)


def test_predicted_links_join_an_approaching_car_before_it_is_close():
    """A car 390 px from a pedestrian at 100 px/s comes within 90 px in 3 s: within link_k 0.75 ×
    size (≈ 109 px) → linked; the same car driving away is not."""
    ped = (700.0, 290.0, 740.0, 390.0)
    car = (150.0, 300.0, 310.0, 390.0)
    objs = [obj(0, "car", car, moving(100, 0)), obj(1, "person", ped, moving(0, 0))]
    pairs = frame_pairs(objs)
    assert pairs.cue(0).min_gap == pytest.approx(90.0)
    assert pairs.predicted_links(0.75) == [(0, 1)]
    assert pairs.predicted_links(0.5) == []  # 0.5 × 146 = 73 px < 90 px
    objs[0].motion = moving(-100, 0)
    assert frame_pairs(objs).predicted_links(0.75) == []


def test_the_horizon_is_configurable():
    objs = [obj(0, "car", CAR, moving(20, 0)), obj(1, "person", PERSON, moving(0, 0))]
    assert frame_pairs(objs, CueConfig(horizon_s=3.0)).cue(0).min_gap == pytest.approx(40.0)
    assert frame_pairs(objs, CueConfig(horizon_s=6.0)).cue(0).min_gap == 0.0


def test_any_object_with_class_name_bbox_and_motion_will_do():
    objs = [SimpleNamespace(class_name="bus", bbox=CAR, motion=moving(50, 0)),
            SimpleNamespace(class_name="person", bbox=PERSON, motion=moving(0, 0))]
    g = group_cues(objs, [0, 1])
    assert g.pair.object_ids == (0, 1) and g.min_ttc_s == pytest.approx(2.0)


def test_a_young_estimate_needs_twice_the_closing_floor():
    """A moving car whose velocity rests on 2 boxes: 12 px/s of closing could be jitter (floor 16)."""
    young = Motion(vx=12.0, vy=0.0, speed=12.0, heading_deg=0.0, stopped_s=0.0, samples=2)
    objs = [obj(0, "car", (0, 100, 40, 120), young), obj(1, "car", (60, 100, 100, 120), moving(0, 0))]
    assert not group_cues(objs, [0, 1]).conflict_possible
    objs[0].motion = young.model_copy(update={"samples": 3})
    assert group_cues(objs, [0, 1]).conflict_possible


@pytest.mark.parametrize("scene", ["parked row", "small far queue creeping", "parallel traffic"])
def test_calm_scenes_under_detector_noise_never_look_like_a_conflict(scene):
    """20 minutes at 2 fps with ±3 px on every box edge and 5 % missed boxes, through the real
    kinematics: not one frame with a possible conflict or a TTC (the gate's false-suspect source)."""
    import random

    from hazardctl.kinematics import CameraKinematics

    actors = {
        "parked row": [("car", 130 * i, 300, 120, 60, 0, 0) for i in range(5)],
        "small far queue creeping": [("car", 50 * i, 300, 40, 20, 20, 0) for i in range(5)],  # 10 px gaps
        "parallel traffic": [("car", 0, 300, 120, 60, 100, 0), ("car", 0, 380, 120, 60, 100, 0),
                             ("car", 150, 300, 120, 60, 100, 0)],
    }[scene]
    rng = random.Random(11)
    kin = CameraKinematics()
    flagged = []
    for k in range(2400):
        t = 1_800_000_000.0 + 0.5 * k
        objs = []
        for i, (cls, x, y, w, h, vx, vy) in enumerate(actors):
            if rng.random() < 0.05:
                continue
            cx, cy = (x + vx * 0.5 * k) % 5000, y + vy * 0.5 * k
            b = tuple(v + rng.uniform(-3, 3) for v in (cx, cy, cx + w, cy + h))
            objs.append(DetectedObject(object_id=len(objs), class_name=cls, class_id=2, confidence=0.9, bbox=b,
                                       track_id=i + 1))
        for o, m in zip(objs, kin.observe(objs, t)):
            o.motion = m
        g = frame_pairs(objs).group_cues(range(len(objs)))
        if g is not None and (g.conflict_possible or g.min_ttc_s is not None):
            flagged.append((k, g))
    assert flagged == []
