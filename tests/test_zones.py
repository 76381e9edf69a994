"""Zones, lane directions, calibration and zone cues (issue 19), pure: no process, a fake clock."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from hazardctl.errors import ConfigError
from hazardctl.gating import GateConfig, cues_of, suspect
from hazardctl.messages import Motion
from hazardctl.zone_cues import (PEDESTRIAN_IN_ROADWAY, STOPPED_IN_ROADWAY, VEHICLE_IN_CROSSWALK, WRONG_WAY,
                                 SceneCues)
from hazardctl.zones import Calibration, SceneConfig, build_scene, self_intersects
from tests.scene_replays import CAL_GROUND, CAL_IMAGE, CROSSWALK, H, STREET_ZONES, W, ground_to_image


@dataclass
class Obj:
    class_name: str
    bbox: tuple[float, float, float, float]
    track_id: int | None = None
    motion: Motion | None = None


def at(cls: str, foot: tuple[float, float], track: int | None = None, v: tuple[float, float] = (0.0, 0.0),
       stopped_s: float = 0.0, size=(40.0, 60.0)) -> Obj:
    x, y = foot
    speed = math.hypot(*v)
    motion = Motion(vx=v[0], vy=v[1], speed=speed, heading_deg=math.degrees(math.atan2(v[1], v[0])),
                    stopped_s=stopped_s, samples=3)
    return Obj(cls, (x - size[0] / 2, y - size[1], x + size[0] / 2, y), track, motion)


def street(**cues):
    return build_scene("cam-1", SceneConfig(frame_size=(W, H), zones=STREET_ZONES, scene_cues=cues or None))


# --- membership -------------------------------------------------------------------------------------

def test_membership_uses_the_ground_point_and_zone_classes():
    zones = STREET_ZONES + [{"name": "bus-lane", "kind": "custom", "polygon": [[0, 300], [400, 300], [400, 420],
                                                                               [0, 420]], "classes": ["bus"]}]
    scene = build_scene("cam-1", SceneConfig(frame_size=(W, H), zones=zones))
    # a person whose box reaches into the roadway but whose feet are on the pavement is on the pavement
    boxes = [(100, 380, 124, 440), (950 - 12, 340, 950 + 12, 400), (200, 340, 300, 400), (200, 340, 300, 400)]
    inside = scene.membership(boxes, ["person", "person", "bus", "car"])
    names = [[scene.zones[j].name for j in np.nonzero(row)[0]] for row in inside]
    assert names == [["south-pavement"], ["eastbound", "school-crossing"], ["eastbound", "bus-lane"], ["eastbound"]]


def test_fractions_scale_to_the_frame_and_pixels_scale_with_the_stream():
    scene = build_scene("c", SceneConfig(zones=[{"name": "r", "kind": "roadway", "polygon": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}]))
    big = scene.for_frame(1920, 1080)
    assert big.zones[0].polygon.tolist() == [[0, 540], [1920, 540], [1920, 1080], [0, 1080]]
    px = street().for_frame(640, 360)  # configured for 1280x720, the stream sends half that
    assert px.zones[0].polygon[:, 1].tolist() == [150, 150, 210, 210]
    assert px.zones[0].direction == pytest.approx((1.0, 0.0))


# --- zone cues, with a fake clock --------------------------------------------------------------------

def test_pedestrian_in_the_roadway_outside_a_crosswalk():
    cues = SceneCues(street())
    fz = cues.observe([at("person", (400, 380), 1), at("person", (950, 380), 2), at("person", (400, 500), 3)],
                      100.0, W, H)
    assert fz.flags == [[PEDESTRIAN_IN_ROADWAY], [], []]  # the crosswalk and the pavement are not
    assert fz.zones[1] == ["eastbound", "school-crossing"]


def test_vehicle_in_a_crosswalk_only_while_a_pedestrian_is_in_it():
    cues = SceneCues(street())
    car = at("car", (950, 400), 1, v=(100, 0), size=(120, 60))
    alone = cues.observe([car], 1.0, W, H)
    assert alone.flags == [[]]
    both = cues.observe([car, at("person", (960, 330), 2, v=(0, 40))], 1.5, W, H)
    assert both.flags == [[VEHICLE_IN_CROSSWALK], [VEHICLE_IN_CROSSWALK]]
    elsewhere = cues.observe([car, at("person", (960, 500), 2)], 2.0, W, H)  # the pedestrian is on the pavement
    assert elsewhere.flags == [[], []]


def test_wrong_way_needs_n_frames_in_a_row_against_the_arrow():
    cues = SceneCues(street(wrong_way_frames=3))
    flags = []
    for k in range(6):
        ts = 10.0 + 0.5 * k
        v = (-200.0, 0.0) if k != 2 else (200.0, 0.0)  # one frame going the right way resets the run
        flags.append(cues.observe([at("car", (1000 - 100 * k, 380), 7, v=v, size=(120, 60))], ts, W, H).flags[0])
    assert flags == [[], [], [], [], [], [WRONG_WAY]]


def test_wrong_way_ignores_slow_crossing_and_right_way_traffic():
    cues = SceneCues(street(wrong_way_frames=1))
    objs = [at("car", (500, 380), 1, v=(-10.0, 0.0), size=(120, 60)),   # creeping back 10 px/s: below 20 px/s
            at("car", (700, 380), 2, v=(-30.0, -150.0), size=(120, 60)),  # turning across: 101 deg from the arrow
            at("car", (300, 380), 3, v=(180.0, 10.0), size=(120, 60)),   # right way
            at("car", (300, 600), 4, v=(-180.0, 0.0), size=(120, 60)),   # against, but not in the roadway
            at("car", (900, 330), 5, v=(-180.0, 20.0), size=(120, 60))]  # against: flagged
    assert cues.observe(objs, 1.0, W, H).flags == [[], [], [], [], [WRONG_WAY]]


def test_stopped_in_the_roadway_after_s_seconds():
    cues = SceneCues(street(stopped_s=20))
    car = lambda s: at("car", (600, 380), 3, stopped_s=s, size=(120, 60))  # noqa: E731
    assert cues.observe([car(19.5)], 50.0, W, H).flags == [[]]
    assert cues.observe([car(20.0)], 50.5, W, H).flags == [[STOPPED_IN_ROADWAY]]
    parked = at("car", (600, 500), 4, stopped_s=600, size=(120, 60))  # on the pavement: not a roadway cue
    assert cues.observe([parked], 51.0, W, H).flags == [[]]


def test_zone_flags_make_the_gate_send_suspect():
    from hazardctl.messages import GroupCues

    for flag in (PEDESTRIAN_IN_ROADWAY, VEHICLE_IN_CROSSWALK, WRONG_WAY, STOPPED_IN_ROADWAY):
        assert suspect(cues_of(GroupCues(conflict_possible=False, flags=[flag])), GateConfig())
    assert not suspect(cues_of(GroupCues(conflict_possible=False)), GateConfig())


def test_group_ignore_and_sidewalk():
    cues = SceneCues(street())
    objs = [at("person", (1100, 150)), at("person", (1150, 150)),             # both on the billboard
            at("person", (1100, 150)), at("person", (600, 500)),             # one on it, one on the pavement
            at("person", (600, 500)), at("person", (640, 500)),              # both on the pavement
            at("person", (600, 500)), at("bicycle", (640, 500))]             # a bicycle on the pavement
    fz = cues.observe(objs, 1.0, W, H)
    assert [fz.group(m)[2:] for m in ([0, 1], [2, 3], [4, 5], [6, 7])] == [
        (True, False), (False, False), (False, True), (False, False)]


# --- calibration --------------------------------------------------------------------------------------

def test_calibration_speed_at_36_kmh_down_the_road():
    cal = Calibration.from_points(np.array(CAL_IMAGE, float), np.array(CAL_GROUND, float))
    to_image = ground_to_image()
    for y in (5.0, 20.0, 35.0):  # near, middle, far: the same 10 m/s everywhere
        a, b = to_image(5.0, y), to_image(5.0, y + 0.1)
        v = ((b[0] - a[0]) / 0.01, (b[1] - a[1]) / 0.01)  # 0.1 m in 0.01 s = 10 m/s in pixels
        assert cal.speed_kmh(a, v) == pytest.approx(36.0, rel=0.01)
    assert cal.distance_m(to_image(2, 10), to_image(5, 14)) == pytest.approx(5.0, rel=1e-6)


def test_calibrated_thresholds_are_in_real_units():
    to_image = ground_to_image()
    zones = [{"name": "road", "kind": "roadway", "polygon": CAL_IMAGE,
              "direction": [list(to_image(5, 2)), list(to_image(5, 30))]}]  # travel away from the camera
    scene = build_scene("c", SceneConfig(frame_size=(W, H), zones=zones,
                                         calibration={"image": CAL_IMAGE, "ground": CAL_GROUND},
                                         scene_cues={"wrong_way_frames": 1, "wrong_way_min_kmh": 10}))

    def toward_camera(track: int, kmh: float, t: float) -> Obj:
        """A car coming toward the camera (against the arrow) at `kmh`, at time t of its drive."""
        y = 30 - kmh / 3.6 * t
        a, b = to_image(5, y), to_image(5, y - kmh / 3.6 * 0.01)
        return at("car", a, track, v=((b[0] - a[0]) / 0.01, (b[1] - a[1]) / 0.01), size=(60, 30))

    cues = SceneCues(scene)
    first = cues.observe([toward_camera(1, 8.0, 0.0)], 1.0, W, H)
    assert first.speed_kmh == [None] and first.flags == [[]]  # one ground point: no speed yet
    fz = cues.observe([toward_camera(1, 8.0, 0.5)], 1.5, W, H)
    assert fz.speed_kmh[0] == pytest.approx(8.0, rel=0.01) and fz.flags == [[]]  # 8 km/h < 10 km/h: not driving
    cues = SceneCues(scene)
    cues.observe([toward_camera(2, 30.0, 0.0)], 1.0, W, H)
    fz = cues.observe([toward_camera(2, 30.0, 0.5)], 1.5, W, H)
    assert fz.speed_kmh[0] == pytest.approx(30.0, rel=0.01) and fz.flags == [[WRONG_WAY]]

    # calibrated, the heading is the ground points' own: a car going with the arrow on the ground is not
    # wrong-way even where its box's image motion points back at the camera (a box growing as a truck
    # overtakes it; kinematics measures the box centre, not where the wheels are)
    def away_with_odd_box(track: int, kmh: float, t: float) -> Obj:
        away = to_image(5, 2 + kmh / 3.6 * t)
        back = toward_camera(track, kmh, t).motion
        return at("car", away, track, v=(back.vx, back.vy), size=(60, 30))

    cues = SceneCues(scene)
    cues.observe([away_with_odd_box(3, 30.0, 0.0)], 1.0, W, H)
    fz = cues.observe([away_with_odd_box(3, 30.0, 0.5)], 1.5, W, H)
    assert fz.speed_kmh[0] == pytest.approx(30.0, rel=0.01) and fz.flags == [[]]


# --- bad config: one line naming the camera and the zone ---------------------------------------------

BAD = [
    ({"zones": [{"name": "z1", "kind": "roadway", "polygon": [[0, 0], [10, 0]]}]}, "zone z1: polygon has 2 points"),
    ({"zones": [{"name": "bow", "kind": "crosswalk", "polygon": [[0, 0], [100, 100], [100, 0], [0, 100]]}]},
     "zone bow: polygon intersects itself"),
    ({"zones": [{"name": "off", "kind": "sidewalk", "polygon": [[0, 0], [1500, 0], [1500, 100]]}]},
     "zone off: polygon lies (partly) outside the 1280x720 frame"),
    ({"zones": [{"name": "lot", "kind": "parking", "polygon": [[0, 0], [10, 0], [10, 10]]}]},
     "zone lot: unknown kind 'parking'"),
    ({"zones": [{"name": "r", "kind": "roadway", "polygon": [[0, 0], [10, 0], [10, 10]], "direction": [[5, 5], [5, 5]]}]},
     "zone r: the lane direction arrow has zero length"),
    ({"calibration": {"image": [[0, 0], [100, 0], [200, 0], [50, 80]], "ground": CAL_GROUND}},
     "calibration: three image points are collinear"),
    ({"calibration": {"image": CAL_IMAGE, "ground": [[0, 0], [0, 0], [10, 0], [0, 10]]}},
     "calibration: three ground points are collinear"),
    ({"zones": [{"name": "line", "kind": "roadway", "polygon": [[0, 0], [10, 10], [20, 20]]}]},
     "zone line: polygon has no area"),
]


@pytest.mark.parametrize("raw,message", BAD, ids=[m.split(":")[0] + "-" + m.split(":")[1][:20] for _, m in BAD])
def test_bad_scene_config_is_one_line(raw, message):
    with pytest.raises(ConfigError) as e:
        build_scene("cam-7", SceneConfig(frame_size=(1280, 720), **raw))
    text = str(e.value)
    assert text.startswith("camera cam-7, ") and message in text and "\n" not in text


def test_pixels_without_a_frame_size_is_an_error_fractions_are_not():
    with pytest.raises(ConfigError, match="camera c, zone r: polygon is in pixels: give the camera's frame_size"):
        build_scene("c", SceneConfig(zones=[{"name": "r", "kind": "roadway", "polygon": [[0, 0], [10, 0], [10, 10]]}]))
    assert build_scene("c", SceneConfig(zones=[{"name": "r", "kind": "roadway", "polygon": [[0, 0], [1, 0], [1, 1]]}]))


def test_self_intersection_geometry():
    assert self_intersects(np.array([[0, 0], [10, 10], [10, 0], [0, 10]], float))
    assert not self_intersects(np.array(CROSSWALK, float))
    assert not self_intersects(np.array([[0, 0], [10, 0], [10, 10], [5, 3], [0, 10]], float))  # concave is fine


def test_the_example_cameras_yaml_has_a_valid_scene(monkeypatch):
    from stages.detect.sources import load_cameras
    from tests.conftest import ROOT

    monkeypatch.chdir(ROOT)
    (spec,) = [s for s in load_cameras("config/cameras.yaml") if s.camera_id == "junction-north"]
    scene = spec.scene
    assert [(z.name, z.kind) for z in scene.zones] == [("northbound", "roadway"), ("school-crossing", "crosswalk"),
                                                      ("east-pavement", "sidewalk"), ("advert", "ignore")]
    assert scene.zones[0].direction[1] < -0.9 and scene.calibration is not None  # the lane runs up the image
    assert scene.zones[3].polygon.max() == pytest.approx(288.0)  # fractions: 0.15 × 1920 px
