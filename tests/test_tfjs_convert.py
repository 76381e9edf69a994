"""scripts/tfjs_to_onnx.py's input-size lever (issue 21): the CenterNet converted with a dynamic height and
width gives the boxes of the fixed 512x512 conversion at 512x512, and at the camera's own aspect (512x288
for 1280x720) finds the road users the square input finds. Real model (make models fetches its tfjs files)."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import ROOT

TFJS = ROOT / ".cache/models/centernet.json"
ROAD_USERS = ["person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign"]
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not TFJS.is_file(), reason="run scripts/fetch_models.sh (make models) first")]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(dynamic, fixed 512x512) conversions of the same tfjs graph by the current converter."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import tfjs_to_onnx

    tmp = tmp_path_factory.mktemp("convert")
    dynamic, fixed = tmp / "dynamic.onnx", tmp / "fixed.onnx"
    tfjs_to_onnx.convert(str(TFJS), str(dynamic))
    tfjs_to_onnx.convert(str(TFJS), str(fixed), dynamic_hw=False)
    assert tfjs_to_onnx.verify(str(dynamic))
    return dynamic, fixed


def test_dynamic_size_model_gives_the_fixed_models_boxes_at_512x512(models):
    from scripts.check_tfjs import compare, prepare

    dynamic, fixed = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in models)
    for name in ("bus.jpg", "zidane.jpg"):
        x, scale = prepare(ROOT / "tests/data" / name)
        rows = [s.run(None, {"input": x[None]})[0][0] for s in (dynamic, fixed)]
        c = compare(rows[0], rows[1], scale, min_score=0.05)  # as check_tfjs compares ONNX with the tfjs runtime
        assert c["rows"] > 0 and c["unmatched"] == 0, (name, c)
        assert c["box_px"] <= 0.001 and c["score"] <= 1e-4, (name, c)
    assert dynamic.get_inputs()[0].shape == ["batch", "height", "width", 3]
    assert fixed.get_inputs()[0].shape == ["batch", 512, 512, 3]


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def test_the_cameras_aspect_finds_the_road_users_of_the_square_input(models):
    """Every road user the square input finds with confidence >= 0.45 is found at the frame's own aspect
    (borderline ones, 0.35-0.45, come and go either way: the bench measures recall over many frames)."""
    from scripts.bench_detect import cutouts, scene
    from stages.detect.backends import load_detector

    dynamic = load_detector(str(models[0]), classes=ROAD_USERS, threads=1, imgsz=512)
    square = load_detector(str(models[1]), classes=ROAD_USERS, threads=1)  # the fixed input: stretched to 512x512
    assert dynamic.input_size(1280, 720) == (512, 288) and dynamic.input_size(810, 1080) == (384, 512)
    assert square.input_size(1280, 720) == (512, 512)
    people, vehicle = cutouts()
    frames = [cv2.imread(str(ROOT / "tests/data/zidane.jpg")),  # 1280x720 -> 512x288
              cv2.imread(str(ROOT / "tests/data/bus.jpg"))]     # 810x1080 -> 384x512
    frames += [scene(t, people, vehicle) for t in (2.0, 3.7, 7.3)]  # the bench's road, 1280x720
    found = total = 0
    for ref, got in zip(square.detect(frames), dynamic.detect(frames)):
        for a in ref:
            if a.confidence >= 0.45:
                total += 1
                found += any(b.class_id == a.class_id and _iou(a.bbox, b.bbox) >= 0.5 for b in got)
    assert total >= 12 and found == total, (found, total)


def test_imgsz_picks_a_smaller_input_and_the_boxes_stay_in_frame_pixels(models):
    """--imgsz is the long side: 416 and 384 run a 1280x720 frame at 416x224 and 384x224 (the grid width
    the decode uses follows the heatmap, so boxes land where the square input puts them)."""
    from stages.detect.backends import load_detector

    zidane = cv2.imread(str(ROOT / "tests/data/zidane.jpg"))
    ref = load_detector(str(models[1]), classes=ROAD_USERS, threads=1).detect([zidane])[0]
    assert [b.class_name for b in ref] == ["person"]
    for imgsz, size in ((416, (416, 224)), (384, (384, 224))):
        det = load_detector(str(models[0]), classes=ROAD_USERS, threads=1, imgsz=imgsz)
        assert det.input_size(1280, 720) == size
        got = det.detect([zidane])[0]
        assert any(b.class_name == "person" and _iou(ref[0].bbox, b.bbox) >= 0.8 for b in got), (imgsz, got)
    out = ort.InferenceSession(str(models[0]), providers=["CPUExecutionProvider"]).run(
        None, {"input": np.full((2, 64, 96, 3), 110, np.float32)})[0]
    assert out.shape == (2, 100, 6)  # any multiple of 32, in batches
