"""The gate benchmark's ground truth and scoring (tools/scenarios), pure: physics stated in numbers,
labels that say what each scene is, the noise it claims, and a scorer that counts only what it should."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tools.scenarios import library, mot
from tools.scenarios.noise import Noise
from tools.scenarios.physics import (DT, Actor, box_ttc, find_conflict, grid, kmh, moving, parked)
from tools.scenarios.score import GateFigures, TaskSeen, camera_starts, pct, read_tasks, scenario_figures


def _still(actor_id: int, cls: str, at: tuple[float, float], duration: float = 10.0) -> Actor:
    return parked(actor_id, cls, duration, at)


def test_box_ttc_car_100px_away_closing_at_50px_s_is_2s():
    ped = _still(1, "person", (1000.0, 560.0))
    # car centre so that its front edge is 100 px from the pedestrian's left edge
    car_cx = 1000.0 - 11.0 - 100.0 - 57.5
    car = moving(2, "car", 10.0, (car_cx, 560.0), 0.0, 50.0)
    assert box_ttc(car, ped, 0) == pytest.approx(2.0, abs=1e-9)
    # the same car driving away, or passing 200 px below, never touches
    away = moving(3, "car", 10.0, (car_cx, 560.0), 180.0, 50.0)
    below = moving(4, "car", 10.0, (car_cx, 760.0), 0.0, 50.0)
    assert box_ttc(away, ped, 0) is None and box_ttc(below, ped, 0) is None


def test_braking_reaches_the_planned_stop_and_speeds_are_km_h():
    assert kmh(36.0) == pytest.approx(260.0)  # 10 m/s at 26 px/m
    car = moving(1, "car", 10.0, (0.0, 500.0), 0.0, 260.0, brake_at=2.0, decel=130.0)  # 5 m/s², stops after 2 s
    i_stop = int(round(4.0 / DT))
    assert car.vx[int(round(1.0 / DT))] == pytest.approx(260.0)
    assert car.vx[i_stop + 5] == 0.0
    # 2 s at 260 px/s + 260²/(2·130) = 520 + 260 px
    assert car.cx[-1] == pytest.approx(780.0, abs=1.0)


def test_a_parked_car_makes_no_hazard_even_when_walked_into():
    car = _still(1, "car", (1000.0, 560.0))
    ped = moving(2, "person", 10.0, (700.0, 560.0), 0.0, 40.0)
    assert box_ttc(car, ped, 0) is not None  # the boxes will touch...
    assert find_conflict(car, ped) is None  # ...but only a moving vehicle makes a hazard


def test_every_hazard_scene_has_its_one_near_miss_and_the_others_none():
    scenes = library.hazards(seed=3) + library.calm(duration=120.0, seed=3)
    kinds = {s.kind for s in scenes}
    assert kinds == {"hazard", "busy", "calm"}
    for s in scenes:
        if s.kind == "hazard":
            assert len(s.hazards) == 1, s.name
            h = s.hazards[0]
            assert h.min_ttc_s <= 1.5 and h.onset_s < h.conflict_s, s.name
            assert h.onset_s >= 1.0, f"{s.name}: the road users must be seen before the onset"
            vehicle = next(a for a in s.actors if a.actor_id == h.actors[0])
            assert vehicle.cls == "car"
        else:
            assert s.hazards == [], s.name
    speeds = {round(max(a.vx.max(), -a.vx.min()) / kmh(1)) for s in scenes if s.name.startswith("crossing")
              for a in s.actors if a.cls == "car"}
    assert speeds == {20, 30, 40, 50, 60}


def test_brakes_in_time_closes_in_but_never_below_the_line():
    s = next(s for s in library.hazards(seed=5) if s.name == "brakes-in-time")
    car, ped = (next(a for a in s.actors if a.cls == c) for c in ("car", "person"))
    ttcs = [box_ttc(car, ped, i) for i in range(len(car.t)) if car.visible[i] and ped.visible[i]]
    finite = [t for t in ttcs if t is not None]
    assert finite and min(finite) > 1.5  # on course (closing), yet the TTC stays above 1.5 s


def test_mot_files_carry_the_stated_noise(tmp_path):
    s = library.calm(duration=300.0, seed=2)[0]  # the crowd: 14 people, 601 frames
    seq = mot.write(s, tmp_path, fps=2.0, noise=Noise(seed=9))
    labels = mot.read_labels(seq)
    lines = (seq / "gt" / "gt.txt").read_text().split()
    assert "frameRate=2" in (seq / "seqinfo.ini").read_text()
    true_boxes = sum(int(a.visible[a.index(t)]) for t in mot.frame_times(s.duration_s, 2.0) for a in s.actors)
    missed = 1 - len(lines) / true_boxes
    assert 0.03 < missed < 0.07  # 5 % missed boxes
    assert len(labels["mot_ids"]) > len(s.actors)  # some id switches...
    assert len(labels["mot_ids"]) < len(s.actors) + 0.01 * len(lines)  # ...about 0.3 % of boxes
    # jitter: each written box differs from the true one by at most 3 px per edge
    worst = 0.0
    for line in lines[:400]:
        k, tid, x, y, w, h, *_rest, cls = line.split(",")
        a = next(a for a in s.actors if a.actor_id == labels["mot_ids"][tid])
        bx = a.box(a.index((int(k) - 1) / 2.0))
        if 0 < bx[0] and bx[2] < 1920 and 0 < bx[1] and bx[3] < 1080:
            worst = max(worst, abs(float(x) - bx[0]), abs(float(y) - bx[1]),
                        abs(float(x) + float(w) - bx[2]), abs(float(y) + float(h) - bx[3]))
        assert cls == "person"
    assert 2.0 < worst <= 3.0 + 0.06  # rounding to 0.1 px


def _task(cam, frame_ts, ids, reason="suspect", expand=None):
    return TaskSeen(cam, 1, frame_ts, reason, expand if expand is not None else frame_ts + 0.01, frozenset(ids))


def test_a_hazard_counts_only_a_task_inside_its_window_with_both_road_users():
    labels = {"kind": "hazard", "fps": 2.0, "frames": 20, "mot_ids": {"1": 1, "2": 2, "7": 2},
              "hazards": [{"actors": [2, 1], "kind": "vehicle-pedestrian", "onset_s": 3.2, "conflict_s": 5.0}]}
    start = 1000.0
    too_early = _task("s", start + 2.5, {1, 2})  # more than a frame (0.5 s) before the onset
    one_user = _task("s", start + 3.5, {1})
    other_cam = _task("t", start + 3.5, {1, 2})
    assert not scenario_figures("s", labels, [too_early, one_user, other_cam], start).hazards[0].covered
    after_switch = _task("s", start + 3.5, {1, 7}, expand=start + 3.52)  # id 7 is actor 2 after an id switch
    late = _task("s", start + 5.5, {1, 2})
    f = scenario_figures("s", labels, [too_early, one_user, late, after_switch], start)
    h = f.hazards[0]
    assert h.covered and h.reason == "suspect"
    assert h.frame_wait_s == pytest.approx(0.3) and h.processing_s == pytest.approx(0.02)
    assert h.delay_s == pytest.approx(0.32)
    assert f.tasks == 4 and f.calls_per_s == pytest.approx(4 / 10.0)


def test_false_suspects_are_counted_per_calm_camera_hour():
    calm = {"kind": "calm", "fps": 2.0, "frames": 3600, "mot_ids": {}, "hazards": []}  # 30 min
    tasks = [_task("c", 10.0, {1}), _task("c", 20.0, {1}, reason="new"), _task("busy", 5.0, {1})]
    figs = GateFigures("danger", [scenario_figures("c", calm, tasks, 0.0),
                                  scenario_figures("busy", {**calm, "kind": "busy"}, tasks, 0.0)])
    assert figs.calm_hours == pytest.approx(0.5)
    assert figs.false_suspects_per_hour == pytest.approx(2.0)  # one suspect in half an hour; "busy" not counted
    assert figs.recall is None


def test_camera_start_and_task_files_are_read_from_the_real_formats(tmp_path):
    det = tmp_path / "d.jsonl"
    det.write_text('{"camera_id": "a", "frame_id": 3, "frame_ts": 101.0}\n{"camera_id": "a", "frame_id": 4, "frame_ts": 101.5}\n')
    assert camera_starts(det, {"a": 2.0}) == {"a": 100.0}
    tasks = tmp_path / "t.jsonl"
    tasks.write_text('{"camera_id": "a", "frame_id": 3, "frame_ts": 101.0, "reason": "new", "times": {"expand": 101.01},'
                     ' "objects": [{"track_id": 4}, {"track_id": null}]}\n\n')
    (t,) = read_tasks(tasks)
    assert t.track_ids == frozenset({4}) and t.expand_ts == 101.01


def test_percentile_is_nearest_rank():
    assert pct([float(i) for i in range(1, 21)], 95) == 19.0
    assert pct([0.3], 95) == 0.3 and pct([], 95) is None
    assert math.isclose(pct([0.1, 0.5, 0.2], 50), 0.2)


def test_grid_and_trajectories_are_deterministic():
    a = library.hazards(seed=4, quick=True)
    b = library.hazards(seed=4, quick=True)
    assert [s.name for s in a] == [s.name for s in b]
    assert all(np.array_equal(x.cx, y.cx) for s, t in zip(a, b) for x, y in zip(s.actors, t.actors))
    assert len(grid(1.0)) == 51


def test_check_names_every_must_show_figure_missed_and_nothing_when_met():
    from scripts.bench_gate import check
    from tools.scenarios.score import HazardOutcome, ScenarioFigures

    def hz(delay):
        return HazardOutcome("h", "vehicle-pedestrian", 3.0, 5.0, delay is not None, "suspect", delay, delay, 0.01)

    good = GateFigures("danger", [
        ScenarioFigures("h", "hazard", 10.0, 4, {"suspect": 4}, [hz(0.2), hz(0.5)]),
        ScenarioFigures("c", "calm", 3600.0, 300, {"new": 300})])
    footage = ScenarioFigures("vtest", "footage", 80.0, 16, {"new": 16})
    assert check(good, footage, fps=2.0) == []
    bad = GateFigures("danger", [
        ScenarioFigures("h", "hazard", 10.0, 4, {"suspect": 4}, [hz(0.2), hz(0.6), hz(None)]),
        ScenarioFigures("c", "calm", 3600.0, 400, {"new": 398, "suspect": 2})])
    missed = check(bad, ScenarioFigures("vtest", "footage", 80.0, 30, {"new": 30}), fps=2.0)
    assert len(missed) == 5, missed
    assert any("recall 67%" in m for m in missed) and any("600 ms > 550 ms" in m for m in missed)
    assert any("calm c: 0.111" in m for m in missed) and any("2.00 false suspects" in m for m in missed)
    assert any("real footage 0.375" in m for m in missed)


def test_seen_at_onset_is_the_scenes_first_frame_after_the_onset_with_both_road_users():
    labels = {"kind": "hazard", "fps": 2.0, "frames": 20, "mot_ids": {"1": 1, "2": 2},
              "hazards": [{"actors": [2, 1], "kind": "vehicle-pedestrian", "onset_s": 3.2, "conflict_s": 5.0}]}
    start, both, car = 1000.0, frozenset({1, 2}), frozenset({2})
    task = [_task("s", start + 4.0, {1, 2})]
    seen = scenario_figures("s", labels, task, start, [(start + 3.0, both), (start + 3.5, both), (start + 4.0, both)])
    missed = scenario_figures("s", labels, task, start, [(start + 3.0, both), (start + 3.5, car), (start + 4.0, both)])
    skipped = scenario_figures("s", labels, task, start, [(start + 3.0, both), (start + 4.0, both)])  # 3.5 not published
    assert [f.hazards[0].seen_at_onset for f in (seen, missed, skipped)] == [True, False, False]
    assert GateFigures("g", [seen, missed]).missed_at_onset == 1


def test_a_suspect_from_the_last_frame_before_the_onset_is_an_early_warning_that_covers():
    labels = {"kind": "hazard", "fps": 2.0, "frames": 20, "mot_ids": {"1": 1, "2": 2},
              "hazards": [{"actors": [2, 1], "kind": "vehicle-pedestrian", "onset_s": 3.52, "conflict_s": 5.0}]}
    start = 1000.0
    late = _task("s", start + 4.5, {1, 2}, expand=start + 4.55)  # a cooldown held the frame at 4.0
    early = _task("s", start + 3.5, {1, 2}, expand=start + 3.51)  # 20 ms before the labelled onset
    built_after = _task("s", start + 3.5, {1, 2}, expand=start + 3.6)
    changed = _task("s", start + 3.5, {1, 2}, reason="changed")
    two_frames = _task("s", start + 3.0, {1, 2})
    h = scenario_figures("s", labels, [early, late], start).hazards[0]
    assert h.covered and h.suspect_before_s == pytest.approx(0.02)
    assert h.delay_s == 0.0 and h.frame_wait_s == pytest.approx(-0.02) and h.strict_delay_s == pytest.approx(1.03)
    assert scenario_figures("s", labels, [built_after, late], start).hazards[0].delay_s == pytest.approx(0.08)
    for not_early in (changed, two_frames):  # only a suspect, only from the last frame before
        h = scenario_figures("s", labels, [not_early, late], start).hazards[0]
        assert h.suspect_before_s is None and h.delay_s == pytest.approx(1.03) == h.strict_delay_s
    assert not scenario_figures("s", labels, [two_frames], start).hazards[0].covered
    f = GateFigures("g", [scenario_figures("s", labels, [early, late], start)])
    assert f.delay(95) == 0.0 and f.delay(95, "strict_delay_s") == pytest.approx(1.03)
