"""Motion regions (issue 21, Frigate's "infer only where motion is"): the pure gate on synthetic frames
(fake clock), the box merge, and OnnxDetector.detect_regions against detect() on a real photo."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.detect.backends import Box
from stages.detect.motion_gate import (
    GateDecision,
    MotionGate,
    MotionGateConfig,
    iou,
    merge_boxes,
    min_side_for,
    plan_regions,
)
from tests.conftest import ROOT

MODEL = ROOT / ".cache/models/centernet-coco.onnx"
needs_model = pytest.mark.skipif(not MODEL.is_file(), reason="run scripts/fetch_models.sh (make models) first")
pytestmark = pytest.mark.timeout(120)
W, H = 1280, 720


def frame(blocks: list[tuple[int, int, int, int]], seed: int = 0, grey: int = 110) -> np.ndarray:
    """A grey road (mild sensor noise) with dark blocks x, y, w, h."""
    img = np.full((H, W, 3), grey, np.uint8)
    img += np.random.default_rng(seed).integers(0, 3, img.shape, dtype=np.uint8)
    for x, y, w, h in blocks:
        cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), (30, 30, 160), -1)
    return img


def inside(box, region) -> bool:
    return region[0] <= box[0] and region[1] <= box[1] and box[2] <= region[2] and box[3] <= region[3]


def overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def xyxy(x, y, w, h):
    return (float(x), float(y), float(x + w), float(y + h))


def gate(**kw) -> MotionGate:
    return MotionGate(MotionGateConfig(**{"force_every_s": 60.0, "regions": True, **kw}))


# --- decide() ------------------------------------------------------------------------------------

def test_first_frame_is_whole_and_a_still_frame_is_skipped():
    g = gate()
    assert g.decide(frame([(100, 300, 60, 120)]), 0.0, []) == GateDecision(True, None)
    assert g.decide(frame([(100, 300, 60, 120)], seed=1), 0.5, [xyxy(100, 300, 60, 120)]) == GateDecision(False, None)
    assert (g.inferred, g.skipped, g.regional) == (1, 1, 0)


def test_a_moving_rectangle_gives_one_region_around_it():
    g = gate()
    g.decide(frame([(400, 300, 60, 120)]), 0.0, [])
    d = g.decide(frame([(430, 300, 60, 120)], seed=1), 0.5, [xyxy(400, 300, 60, 120)])
    assert d.infer and d.regions is not None and len(d.regions) == 1
    r = d.regions[0]
    assert inside(xyxy(400, 300, 90, 120), r)                    # old and new place, whole
    assert r[0] >= 400 - 80 and r[2] <= 490 + 80                 # a margin, not the frame
    assert sum((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in d.regions) < 0.1 * W * H
    assert g.regional == 1


def test_two_far_apart_movers_give_two_regions():
    g = gate()
    g.decide(frame([(100, 300, 60, 120), (1000, 200, 80, 60)]), 0.0, [])
    d = g.decide(frame([(130, 300, 60, 120), (1040, 200, 80, 60)], seed=1), 0.5, [])
    assert d.regions is not None and len(d.regions) == 2
    left, right = d.regions
    assert inside(xyxy(130, 300, 60, 120), left) and inside(xyxy(1040, 200, 80, 60), right)
    assert not overlaps(left, right)


def test_everything_moving_runs_the_whole_frame():
    g = gate()
    g.decide(frame([(100, 300, 60, 120)]), 0.0, [])
    assert g.decide(frame([(100, 300, 60, 120)], seed=1, grey=160), 0.5, []) == GateDecision(True, None)  # lights on
    blocks = [(x, y, 100, 100) for x in range(0, W - 100, 200) for y in range(0, H - 100, 200)]
    g.decide(frame(blocks), 1.0, [])
    moved = [(x + 40, y + 40, w, h) for x, y, w, h in blocks]
    assert g.decide(frame(moved, seed=1), 1.5, []) == GateDecision(True, None)       # regions over max_region_area


def test_a_last_box_straddling_the_motion_is_inside_the_region():
    """A person whose legs move: the motion is small, but the region holds the whole previous box."""
    g = gate()
    person = xyxy(600, 200, 80, 300)
    g.decide(frame([(600, 200, 80, 300)]), 0.0, [])
    d = g.decide(frame([(600, 200, 80, 240), (610, 440, 40, 60)], seed=1), 0.5, [person, xyxy(100, 100, 50, 50)])
    assert d.regions is not None and len(d.regions) == 1
    assert inside(person, d.regions[0])
    assert not overlaps(xyxy(100, 100, 50, 50), d.regions[0])   # a still box far away stays out


def test_a_still_box_inside_a_region_is_named_still():
    """A person standing beside a walker: the region holds both, but only the walker's pixels changed."""
    g = gate()
    walker, stander = xyxy(400, 300, 60, 120), xyxy(480, 300, 60, 120)
    g.decide(frame([(400, 300, 60, 120), (480, 300, 60, 120)]), 0.0, [])
    d = g.decide(frame([(380, 300, 60, 120), (480, 300, 60, 120)], seed=1), 0.5, [walker, stander])
    assert d.regions is not None and len(d.regions) == 1
    assert inside(walker, d.regions[0]) and inside(stander, d.regions[0])
    assert d.still == (stander,)


def test_slow_motion_elsewhere_adds_up():
    """The reference is renewed only inside analysed regions, so a slow mover next to a fast one is seen."""
    g = gate()
    g.decide(frame([(100, 300, 60, 120), (1000, 300, 60, 120)]), 0.0, [])
    seen = []
    for k in range(1, 9):  # the left block jumps 40 px a frame, the right one creeps 2 px
        d = g.decide(frame([(100 + 40 * k, 300, 60, 120), (1000 + 2 * k, 300, 60, 120)], seed=k), 0.5 * k, [])
        assert d.infer and d.regions is not None
        seen.append(any(overlaps(xyxy(1000 + 2 * k, 300, 60, 120), r) for r in d.regions))
    assert not seen[0] and any(seen)
    # all-or-nothing (the old infer()) renews the whole reference each run: the creeper is never a reason
    old = gate()
    old.decide(frame([(1000, 300, 60, 120)]), 0.0, [])
    assert not any(old.infer(frame([(1000 + 2 * k, 300, 60, 120)], seed=k), 0.5 * k) for k in range(1, 3))


def test_forced_refresh_is_the_whole_frame():
    g = gate(force_every_s=2.0)
    g.decide(frame([(100, 300, 60, 120)]), 0.0, [])
    assert g.decide(frame([(130, 300, 60, 120)], seed=1), 1.0, []).regions is not None
    assert g.decide(frame([(160, 300, 60, 120)], seed=2), 2.0, []) == GateDecision(True, None)  # due
    assert g.decide(frame([(160, 300, 60, 120)], seed=3), 2.5, []) == GateDecision(False, None)
    assert g.decide(frame([(160, 300, 60, 120)], seed=3), 4.0, []) == GateDecision(True, None)  # due, still


def test_min_side():
    g = gate()
    g.decide(frame([(640, 300, 32, 32)]), 0.0, [])
    d = g.decide(frame([(672, 300, 32, 32)], seed=1), 0.5, [], min_side=200)
    assert d.regions is not None and len(d.regions) == 1
    x1, y1, x2, y2 = d.regions[0]
    assert x2 - x1 >= 200 and y2 - y1 >= 200 and x1 <= 640 and x2 >= 704
    # at a frame corner the region is shifted inside the frame, not cut
    g.decide(frame([(0, 0, 32, 32)]), 1.0, [])
    x1, y1, x2, y2 = g.decide(frame([(32, 0, 32, 32)], seed=2), 1.5, [], min_side=200).regions[0]
    assert (x1, y1) == (0, 0) and x2 >= 200 and y2 >= 200
    assert min_side_for(64, 512 / W, 512 / H) == 160 and min_side_for(64, 0.4, 0.4) == 160


def test_too_many_movers_are_merged_to_max_regions():
    movers = [(60 + 200 * i, 100 + 80 * (i % 3), 40, 40) for i in range(6)]
    g = gate(max_regions=4, max_region_area=0.9)
    g.decide(frame(movers), 0.0, [])
    moved = [(x + 20, y, w, h) for x, y, w, h in movers]
    d = g.decide(frame(moved, seed=1), 0.5, [])
    assert d.regions is not None and len(d.regions) == 4
    assert all(any(inside(xyxy(*m), r) for r in d.regions) for m in moved)
    assert all(not overlaps(a, b) for i, a in enumerate(d.regions) for b in d.regions[i + 1:])


def test_regions_off_is_all_or_nothing_and_infer_is_unchanged():
    g = gate(regions=False)
    g.decide(frame([(100, 300, 60, 120)]), 0.0, [])
    assert g.decide(frame([(130, 300, 60, 120)], seed=1), 0.5, []) == GateDecision(True, None)
    old = gate()
    assert old.infer(frame([(100, 300, 60, 120)]), 0.0) and old.infer(frame([(130, 300, 60, 120)], seed=1), 0.5)
    assert not old.infer(frame([(130, 300, 60, 120)], seed=2), 1.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, W - 1), st.integers(0, H - 1), st.integers(1, 300), st.integers(1, 300)),
                min_size=1, max_size=8),
       st.lists(st.tuples(st.integers(0, W - 1), st.integers(0, H - 1), st.integers(1, 400), st.integers(1, 400)),
                max_size=12),
       st.integers(0, 300), st.integers(1, 5))
def test_every_last_box_is_wholly_inside_one_region_or_outside_all(blobs, last, min_side, max_regions):
    cfg = MotionGateConfig(max_regions=max_regions, max_region_area=1.0, regions=True)
    clip = lambda x, y, w, h: (x, y, min(x + w, W), min(y + h, H))  # noqa: E731
    boxes = [tuple(float(v) for v in clip(*b)) for b in last]
    regions = plan_regions([clip(*b) for b in blobs], boxes, (W, H), cfg, min_side)
    assert regions is not None and 1 <= len(regions) <= max_regions
    for r in regions:
        assert 0 <= r[0] < r[2] <= W and 0 <= r[1] < r[3] <= H
        assert r[2] - r[0] >= min(min_side, W) and r[3] - r[1] >= min(min_side, H)
    assert all(not overlaps(a, b) for i, a in enumerate(regions) for b in regions[i + 1:])
    assert all(any(inside(clip(*b), r) for r in regions) for b in blobs)
    for b in boxes:
        hits = [r for r in regions if overlaps(b, r)]
        assert not hits or (len(hits) == 1 and inside(b, hits[0]))


# --- merge_boxes ---------------------------------------------------------------------------------

def test_merge_keeps_still_boxes_and_replaces_the_moved_ones():
    still = Box(2, "car", 0.9, (10.0, 10.0, 100.0, 60.0))
    moved = Box(0, "person", 0.8, (400.0, 300.0, 460.0, 420.0))
    edge = Box(0, "person", 0.7, (300.0, 300.0, 350.0, 420.0))   # touches the region's edge only
    found = [Box(0, "person", 0.85, (430.0, 300.0, 490.0, 420.0))]
    regions = [(350, 250, 600, 500)]
    assert merge_boxes([still, moved, edge], found, regions) == [still, edge, *found]
    assert merge_boxes([still, moved], [], []) == [still, moved]
    rows = [((10, 10, 20, 20), "a"), ((400, 400, 420, 420), "b")]  # any type, with a key
    assert merge_boxes(rows, [], regions, bbox=lambda r: r[0]) == rows[:1]
    # a still box in a region stands unless the model found something on it
    parked = Box(2, "car", 0.6, (500.0, 260.0, 590.0, 320.0))
    assert merge_boxes([moved, parked], found, regions, still=[parked.bbox]) == [parked, *found]
    refound = Box(2, "car", 0.5, (505.0, 262.0, 592.0, 322.0))
    assert merge_boxes([moved, parked], [refound], regions, still=[parked.bbox]) == [refound]


# --- detect_regions on the real model ------------------------------------------------------------

@pytest.fixture(scope="module")
def detector():
    from stages.detect.backends import load_detector

    return load_detector(str(MODEL))


@pytest.fixture(scope="module")
def bus() -> np.ndarray:
    img = cv2.imread(str(ROOT / "tests/data/bus.jpg"))
    assert img is not None
    return img


@needs_model
@pytest.mark.parametrize("imgsz", [None, 512])
def test_a_region_finds_what_the_whole_frame_finds_there(bus, imgsz):
    from stages.detect.backends import load_detector

    det = load_detector(str(MODEL), imgsz=imgsz)
    assert det.supports_regions
    whole = det.detect([bus])[0]
    region = (0, 200, 810, 960)                                  # the bus and the people, not the sky
    got = det.detect_regions(bus, [region])
    wanted = [b for b in whole if inside(b.bbox, region) and b.confidence >= 0.4]  # clear of the conf edge
    assert len(wanted) >= 4
    for w in wanted:                                             # in frame pixels: the region's origin added
        assert max((iou(w.bbox, g.bbox) for g in got if g.class_id == w.class_id), default=0) >= 0.8, (w, got)
    for g in got:
        assert 0 <= g.bbox[0] < g.bbox[2] <= bus.shape[1] and 0 <= g.bbox[1] < g.bbox[3] <= bus.shape[0]
    assert det.detect_regions(bus, [(600, 0, 810, 150)]) == []  # nothing there
    assert det.detect_regions(bus, []) == []


@needs_model
def test_two_regions_each_find_their_objects_in_frame_pixels(detector, bus):
    whole = detector.detect([bus])[0]
    left, right = (0, 330, 380, 960), (620, 330, 810, 960)        # the two people on the left; the one on the right
    got = detector.detect_regions(bus, [left, right])
    people = [b for b in whole if b.class_name == "person"]
    assert len(people) == 3
    for p in people:
        assert max(iou(p.bbox, g.bbox) for g in got if g.class_name == "person") >= 0.8, (p, got)
    # safe from two threads at once on one detector (no per-call state on it)
    results: list[list[Box]] = [[], []]

    def run(i: int) -> None:
        for _ in range(3):
            results[i] = detector.detect_regions(bus, [left, right])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0] == results[1] == got


FALL_PT = ROOT / ".cache/models/fall-yolov8.pt"


@pytest.mark.skipif(not (FALL_PT.is_file() and FALL_PT.with_suffix(".onnx").is_file()),
                    reason="run scripts/fetch_test_models.sh (make models) first")
def test_regions_on_a_dynamic_yolo_export(tmp_path, bus):
    """The letterboxed YOLO layout: a region is scaled as the whole frame and padded, not stretched."""
    pytest.importorskip("ultralytics", reason="the [ultralytics] extra exports the dynamic model")
    from ultralytics import YOLO

    from stages.detect.backends import load_detector

    src = tmp_path / "fall.pt"  # export writes next to the weights: keep it out of the cache
    src.write_bytes(FALL_PT.read_bytes())
    exported = YOLO(str(src)).export(format="onnx", dynamic=True, simplify=False, imgsz=640, verbose=False)
    det = load_detector(str(exported), imgsz=640, runtime="onnxruntime")
    assert det.supports_regions and det.region_scale(810, 1080) == (480 / 810, 480 / 810)
    whole = det.detect([bus])[0]
    region = (0, 300, 810, 960)
    got = det.detect_regions(bus, [region])
    wanted = [b for b in whole if inside(b.bbox, region) and b.confidence >= 0.5]
    assert len(wanted) >= 2
    for w in wanted:
        assert max((iou(w.bbox, g.bbox) for g in got if g.class_id == w.class_id), default=0) >= 0.8, (w, got)
    assert not load_detector(str(FALL_PT.with_suffix(".onnx")), runtime="onnxruntime").supports_regions
