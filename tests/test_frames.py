"""Frames over time (stages/detect/frames.py), pure: the per-camera ring, the picks, the token budget."""

from __future__ import annotations

import numpy as np
import pytest

from stages.detect.crops import CropConfig
from stages.detect.frames import FrameHistory, FramesConfig, fit_frames, fit_side, group_frames, image_tokens


def frame(v: int, h: int = 720, w: int = 1280) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = v  # tells the frames apart
    img[::7, ::5] = 255  # something for the JPEG to encode
    return img


def test_the_ring_keeps_frames_about_a_spacing_apart_and_picks_the_nearest():
    hist = FrameHistory(FramesConfig(count=3, spacing_s=1.0))
    for k in range(11):  # 2 fps for 5 s: every other frame is kept (0.5 s < 0.75 × spacing)
        hist.push(100.0 + 0.5 * k, frame(k))
    assert len(hist) <= 4
    picks = hist.pick(105.0)
    assert [round(o, 3) for o, _ in picks] == [-2.0, -1.0]
    assert [int(img[0, 1, 0]) for _, img in picks] == [6, 8]  # frames of t = 103 s and 104 s


def test_a_missing_frame_gives_fewer_picks_never_a_far_one():
    hist = FrameHistory(FramesConfig(count=3, spacing_s=1.0))
    hist.push(100.0, frame(1))
    hist.push(103.9, frame(2))  # nothing between: the camera was away
    picks = hist.pick(105.0)
    assert [round(o, 1) for o, _ in picks] == [-1.1]  # -2 has no frame within ±0.5 s


def test_time_going_back_starts_the_ring_afresh():
    hist = FrameHistory(FramesConfig(count=3, spacing_s=1.0))
    for t in (100.0, 101.0, 102.0):
        hist.push(t, frame(int(t)))
    hist.push(10.0, frame(9))  # a looped replay
    assert len(hist) == 1 and hist.pick(11.0) == [(-1.0, hist._frames[0][1])]


def test_fit_side_respects_the_budget_and_never_enlarges():
    assert image_tokens(768, 432) == 28 * 16
    assert fit_side(768, 432, 448, 1000) == 448 and image_tokens(448, 252) == 144
    side = fit_side(800, 800, 448, 100)
    assert side and image_tokens(side, side) <= 100 and image_tokens(side + 28, side + 28) > 100 - 1
    assert fit_side(55, 106, 448, 100) == 106  # a small region at its own size
    assert fit_side(55, 106, 448, 5) == 0       # not even that fits
    assert fit_side(2000, 2000, 448, 10) == 0   # below 112 px: left out


@pytest.mark.parametrize("budget,thumb", [(1024, True), (600, True), (1024, False)])
def test_group_frames_fit_the_budget_with_the_latest_crop(budget, thumb):
    cfg = FramesConfig(count=3, spacing_s=1.0, thumbnail=thumb, token_budget=budget)
    hist = FrameHistory(cfg)
    for k in range(5):
        hist.push(200.0 + k, frame(k))
    latest = (768, 432)  # the group's crop detect already made
    out = group_frames(hist, 204.0, frame(4), (100, 100, 900, 500), latest, CropConfig())
    kinds = [(f.kind, f.offset_s) for f in out]
    assert kinds == [("crop", -2.0), ("crop", -1.0)] + ([("context", 0.0)] if thumb else [])
    total = image_tokens(*latest) + sum(image_tokens(*f.crop.size) for f in out)
    assert total <= budget
    assert all(max(f.crop.size) <= cfg.max_side for f in out)


def test_a_stream_that_changed_size_gives_no_earlier_crop_of_another_place():
    cfg = FramesConfig(count=3, spacing_s=1.0)
    hist = FrameHistory(cfg)
    hist.push(10.0, frame(1, 360, 640))
    hist.push(11.0, frame(2, 360, 640))
    assert group_frames(hist, 12.0, frame(3), (100, 100, 300, 300), (240, 240), CropConfig()) == []


def test_frames_that_would_break_the_message_size_are_left_out_largest_first():
    from hazardctl.messages import GroupFrame

    def group(n_bytes: int):
        class G:  # what fit_frames needs of a Group
            frames = [GroupFrame(offset_s=-1.0, kind="crop", jpeg_b64="A" * n_bytes, size=(10, 10)) for _ in range(2)]
        return G()

    small, big = group(1_000), group(50_000)
    base = 100_000
    assert fit_frames([small, big], base, 1_000_000) == 0 and small.frames and big.frames
    limit = base + 2 * (1_000 + 96) + 10  # room for the small group's frames only
    assert fit_frames([small, big], base, limit) == 2
    assert big.frames is None and len(small.frames) == 2
    assert fit_frames([small], base, base) == 2 and small.frames is None  # no room at all


@pytest.mark.parametrize("reason,kept", [("suspect", True), ("new", True), ("changed", False), ("refresh", False)])
def test_expand_keeps_frames_on_suspect_and_new_tasks_only(reason, kept):
    import json

    from hazardctl.messages import (DetectedObject, DetectionResult, DetectorInfo, Group, GroupFrame,
                                    SpatialFeatures)
    from stages.expand.tasks import ExpandConfig, expand, parse

    class Says:  # a gate that gives this reason (the decision is tested in test_gating.py; here: what is sent)
        def check(self, *_):
            return reason

    frames = [GroupFrame(offset_s=-1.0, kind="crop", jpeg_b64="QUJD", size=(28, 28))]
    det = DetectionResult(
        message_id="m1", camera_id="c", frame_id=1, frame_ts=10.0, frame_width=100, frame_height=100,
        detector=DetectorInfo(model="x"),
        objects=[DetectedObject(object_id=0, class_name="person", class_id=0, confidence=0.9, bbox=(1, 1, 5, 9))],
        groups=[Group(group_id="g1", member_ids=[0], bbox=(1, 1, 5, 9), classes=["person"], mean_confidence=0.9,
                      features=SpatialFeatures(density_per_10k_px2=1, mean_spacing=0, min_spacing=0, vehicle_count=0,
                                               pedestrian_count=1), crop_jpeg_b64="QUJD", frames=frames)])
    (task,) = expand(*parse(det.model_dump_json().encode()), Says(), ExpandConfig(), 11.0)
    assert task["reason"] == reason and task["group"]["crop_jpeg_b64"] == "QUJD"
    assert (task["group"].get("frames") is not None) == kept
    json.dumps(task)
