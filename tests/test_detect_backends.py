"""Detector backends on real models and real images (no mocks).

Models: the COCO CenterNet ONNX (scripts/fetch_models.sh) and a real YOLOv8 fall detector
(classes Normal/Fall, in effect a person detector) as .onnx and .pt (scripts/fetch_test_models.sh).
Missing models are fetched on first use, and a fetch failure fails the test: `make models` runs
both scripts. The .pt tests need the `[ultralytics]` extra and are skipped, saying so, without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from hazardctl.errors import ConfigError
from stages.detect.backend_onnx import (
    decode_yolo,
    fit_size,
    letterbox,
    nms,
    stretch,
    to_frame_boxes,
)
from stages.detect.backends import Box, load_detector, parse_names, select_classes
from tests.conftest import skip_for_hardware

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
MODELS = ROOT / ".cache" / "models"
ROAD_USERS = ["person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign"]

try:
    import ultralytics  # noqa: F401

    HAVE_ULTRALYTICS = True
except ImportError:
    HAVE_ULTRALYTICS = False
needs_ultralytics = pytest.mark.skipif(
    not HAVE_ULTRALYTICS, reason="the [ultralytics] extra is not installed (pip install 'hazardctl[ultralytics]')")


def fetched(name: str, script: str) -> Path:
    """The cached model, fetched by its project script when missing (fails loudly if it cannot)."""
    path = MODELS / name
    if not path.is_file():
        subprocess.run(["bash", str(ROOT / "scripts" / script)], check=True,
                       env={**os.environ, "PYTHON": sys.executable})
    assert path.is_file(), f"{script} did not produce {path}"
    return path


@pytest.fixture(scope="module")
def centernet_path() -> Path:
    return fetched("centernet-coco.onnx", "fetch_models.sh")


@pytest.fixture(scope="module")
def fall_onnx_path() -> Path:
    return fetched("fall-yolov8.onnx", "fetch_test_models.sh")


@pytest.fixture(scope="module")
def fall_pt_path() -> Path:
    return fetched("fall-yolov8.pt", "fetch_test_models.sh")


@pytest.fixture(scope="module")
def bus() -> np.ndarray:
    img = cv2.imread(str(DATA / "bus.jpg"))
    assert img is not None
    return img


@pytest.fixture(scope="module")
def zidane() -> np.ndarray:
    img = cv2.imread(str(DATA / "zidane.jpg"))
    assert img is not None
    return img


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def names_of(boxes: list[Box]) -> list[str]:
    return [b.class_name for b in boxes]


def inside(box: Box, frame: np.ndarray) -> bool:
    x1, y1, x2, y2 = box.bbox
    h, w = frame.shape[:2]
    return 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h


# ------------------------------------------------------------------ CenterNet (COCO) through ORT

def test_centernet_finds_people_and_the_bus(centernet_path, bus):
    det = load_detector(str(centernet_path), conf=0.2, iou=0.4)
    assert det.names[0] == "person" and det.names[5] == "bus" and len(det.names) == 80
    boxes = det.detect([bus])[0]
    found = names_of(boxes)
    assert found.count("person") >= 2 and "bus" in found, boxes
    assert all(inside(b, bus) for b in boxes)
    the_bus = next(b for b in boxes if b.class_name == "bus")
    assert (the_bus.bbox[2] - the_bus.bbox[0]) > 0.7 * bus.shape[1]  # the bus spans the picture
    for person in (b for b in boxes if b.class_name == "person"):
        assert person.bbox[3] - person.bbox[1] > 1.5 * (person.bbox[2] - person.bbox[0])  # upright
    assert boxes == sorted(boxes, key=lambda b: -b.confidence)


def test_centernet_road_user_classes_at_default_conf(centernet_path, bus):
    det = load_detector(str(centernet_path), classes=ROAD_USERS)  # conf 0.35, iou 0.5
    boxes = det.detect([bus])[0]
    assert set(names_of(boxes)) <= set(ROAD_USERS)
    assert names_of(boxes).count("person") >= 2 and "bus" in names_of(boxes)
    only_bus = load_detector(str(centernet_path), classes=["bus"]).detect([bus])[0]
    assert names_of(only_bus) == ["bus"]


def test_model_identity_is_reported(centernet_path):
    det = load_detector(str(centernet_path))
    assert det.model_name == "centernet-coco"
    assert len(det.model_version) == 12 and int(det.model_version, 16) >= 0


# ------------------------------------------------------------------ YOLOv8 export through ORT

def test_yolov8_onnx_finds_the_people_the_coco_model_finds(fall_onnx_path, centernet_path, bus, zidane):
    yolo = load_detector(str(fall_onnx_path))
    assert yolo.names == {0: "Normal", 1: "Fall"}  # read from the export's metadata
    coco = load_detector(str(centernet_path), conf=0.2, iou=0.4, classes=["person"])
    for frame, at_least in ((bus, 3), (zidane, 2)):
        people = yolo.detect([frame])[0]
        assert len(people) >= at_least, people
        assert all(inside(b, frame) for b in people)
        reference = coco.detect([frame])[0]
        # every person the COCO detector is sure of is found by the YOLO model, at the same place
        for ref in (r for r in reference if r.confidence >= 0.5):
            assert max(iou(ref.bbox, p.bbox) for p in people) > 0.6, (ref, people)


def test_frames_of_different_sizes_in_one_call(fall_onnx_path, bus, zidane):
    det = load_detector(str(fall_onnx_path))
    together = det.detect([bus, zidane, bus])
    assert together == [det.detect([bus])[0], det.detect([zidane])[0], det.detect([bus])[0]]
    assert det.detect([]) == []


def test_empty_road_has_no_detections(centernet_path):
    grey = np.full((480, 640, 3), 110, np.uint8)
    assert load_detector(str(centernet_path), classes=ROAD_USERS).detect([grey, grey]) == [[], []]


@needs_ultralytics
def test_dynamic_export_is_batched_and_letterboxed_like_ultralytics(fall_pt_path, tmp_path, bus, zidane):
    """A YOLOv8 export with dynamic axes: frames of one size run in one session call, each size
    padded only to the next multiple of 32 (as ultralytics does for .pt), same boxes as one by one."""
    from ultralytics import YOLO

    src = tmp_path / "fall.pt"  # export writes next to the weights: keep it out of the cache
    src.write_bytes(fall_pt_path.read_bytes())
    exported = Path(YOLO(str(src)).export(format="onnx", dynamic=True, simplify=False, imgsz=640, verbose=False))
    det = load_detector(str(exported), imgsz=640, runtime="onnxruntime")
    assert det.dynamic_batch and det.rect
    calls = []
    run = det.session.run
    det.session.run = lambda names, feed: calls.append(feed[det.input_name].shape) or run(names, feed)
    mirrored = np.ascontiguousarray(bus[:, ::-1])
    batched = det.detect([bus, zidane, mirrored])
    assert sorted(calls) == [(1, 3, 384, 640), (2, 3, 640, 480)]  # 1280x720 → 640x360 (+24), 810x1080 → 480x640
    calls.clear()
    one_by_one = [det.detect([f])[0] for f in (bus, zidane, mirrored)]
    assert batched == one_by_one and len(calls) == 3
    assert len(batched[0]) >= 3 and len(batched[2]) == len(batched[0])
    # the same weights through ultralytics see the same input, so give the same boxes
    pt = load_detector(str(fall_pt_path)).detect([zidane])[0]
    assert len(pt) == len(batched[1])
    for a, b in zip(sorted(pt, key=lambda b: b.bbox), sorted(batched[1], key=lambda b: b.bbox)):
        assert iou(a.bbox, b.bbox) > 0.97 and abs(a.confidence - b.confidence) < 0.02


@needs_ultralytics
def test_end_to_end_export_with_nms_inside(fall_pt_path, fall_onnx_path, tmp_path, bus):
    """Exports with NMS in the graph ((B, 300, 6) rows) give the same boxes as the raw head."""
    from ultralytics import YOLO

    src = tmp_path / "fall.pt"
    src.write_bytes(fall_pt_path.read_bytes())
    exported = Path(YOLO(str(src)).export(format="onnx", nms=True, simplify=False, imgsz=640, verbose=False))
    e2e = load_detector(str(exported)).detect([bus])[0]
    raw = load_detector(str(fall_onnx_path)).detect([bus])[0]
    assert len(e2e) == len(raw) >= 3
    for a, b in zip(sorted(e2e, key=lambda b: b.bbox), sorted(raw, key=lambda b: b.bbox)):
        assert iou(a.bbox, b.bbox) > 0.95 and abs(a.confidence - b.confidence) < 0.02


# ------------------------------------------------------------------ ultralytics (.pt)

@needs_ultralytics
def test_pt_through_ultralytics_gives_the_people(fall_pt_path, fall_onnx_path, bus, zidane):
    pt = load_detector(str(fall_pt_path))
    assert pt.names == {0: "Normal", 1: "Fall"}
    onnx = load_detector(str(fall_onnx_path))
    for frame, batch_pt, batch_onnx in zip((bus, zidane), pt.detect([bus, zidane]), onnx.detect([bus, zidane])):
        assert len(batch_pt) >= 2 and all(inside(b, frame) for b in batch_pt)
        # the same weights through torch and through onnxruntime agree on every box
        for b in batch_onnx:
            assert max(iou(b.bbox, p.bbox) for p in batch_pt) > 0.9


@needs_ultralytics
def test_pt_class_validation(fall_pt_path):
    with pytest.raises(ConfigError, match="Normal, Fall"):
        load_detector(str(fall_pt_path), classes=ROAD_USERS)
    assert load_detector(str(fall_pt_path), classes=["Fall"]).class_ids == [1]


def test_missing_ultralytics_extra_is_one_clear_error(tmp_path):
    """Without ultralytics installed (simulated by blocking its import in a fresh interpreter)."""
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"not used")
    code = (
        "import sys; sys.modules['ultralytics'] = None\n"
        "from stages.detect.backends import load_detector\n"
        "from hazardctl.errors import ConfigError\n"
        f"try:\n    load_detector({str(weights)!r})\n"
        "except ConfigError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert "pip install 'hazardctl[ultralytics]'" in out.stdout, out
    assert len(out.stdout.strip().splitlines()) == 1


# ------------------------------------------------------------------ configuration errors

def test_misspelt_class_lists_the_valid_names(centernet_path):
    with pytest.raises(ConfigError) as err:
        load_detector(str(centernet_path), classes=["person", "traffic_light"])
    msg = str(err.value)
    assert "'traffic_light' (did you mean 'traffic light'?)" in msg
    assert "person, bicycle, car" in msg and "toothbrush" in msg
    assert "\n" not in msg


def test_classes_a_model_does_not_have(fall_onnx_path):
    with pytest.raises(ConfigError, match=r"no class 'person'.*Normal, Fall"):
        load_detector(str(fall_onnx_path), classes=ROAD_USERS)
    det = load_detector(str(fall_onnx_path), classes=["Normal"])
    assert det.class_ids == [0]


def test_missing_model_says_how_to_get_one(tmp_path):
    with pytest.raises(ConfigError, match="make models"):
        load_detector(str(tmp_path / "nope.onnx"))


def test_unsupported_or_broken_model_files(tmp_path):
    other = tmp_path / "model.tflite"
    other.write_bytes(b"x")
    with pytest.raises(ConfigError, match="unsupported file type"):
        load_detector(str(other))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not a protobuf")
    with pytest.raises(ConfigError, match="onnxruntime cannot load it"):
        load_detector(str(broken))


@pytest.mark.needs_no_gpu
def test_cuda_without_a_cuda_runtime_is_a_clear_error(centernet_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        skip_for_hardware("this onnxruntime has CUDA; the error path cannot happen here")
    with pytest.raises(ConfigError, match="onnxruntime-gpu"):
        load_detector(str(centernet_path), device="cuda")
    with pytest.raises(ConfigError, match="cpu, cuda"):
        load_detector(str(centernet_path), device="tpu")


def test_select_classes_and_names_parsing():
    names = parse_names("{0: 'Normal', 1: 'Fall'}")  # ultralytics writes a Python repr
    assert names == {0: "Normal", 1: "Fall"}
    assert parse_names('{"0": "person", "1": "bicycle"}') == {0: "person", 1: "bicycle"}
    assert parse_names(["a", "b"]) == {0: "a", 1: "b"}
    assert select_classes(names, None, "m") is None
    assert select_classes(names, ["Fall", "Normal", "Fall"], "m") == [0, 1]
    with pytest.raises(ConfigError, match="empty"):
        select_classes(names, [], "m")


# ------------------------------------------------------------------ pure geometry

def test_letterbox_round_trip():
    frame = np.zeros((1080, 810, 3), np.uint8)
    img, p = letterbox(frame, 640, 640)
    assert img.shape == (640, 640, 3)
    assert p.scale_x == pytest.approx(640 / 1080) and p.pad_y == 0 and p.pad_x == pytest.approx(80, abs=1)
    pad = int(p.pad_x)
    assert (img[:, :pad] == 114).all() and (img[:, 640 - pad:] == 114).all() and (img[:, pad + 5] != 114).all()
    # a box in frame pixels, taken to input pixels and back, lands where it was
    fx1, fy1, fx2, fy2 = 100.0, 200.0, 400.0, 900.0
    inp = np.array([[fx1 * p.scale_x + p.pad_x, fy1 * p.scale_y + p.pad_y,
                     fx2 * p.scale_x + p.pad_x, fy2 * p.scale_y + p.pad_y]], np.float32)
    (box,) = to_frame_boxes(inp, np.array([0.9]), np.array([0]), p, {0: "person"})
    assert box.bbox == pytest.approx((fx1, fy1, fx2, fy2), abs=0.2)
    # boxes reaching into the padding are clipped to the frame
    (clipped,) = to_frame_boxes(np.array([[0, -5, 700, 100]], np.float32), np.array([0.5]), np.array([0]),
                                p, {0: "person"})
    assert clipped.bbox[0] == 0 and clipped.bbox[1] == 0 and clipped.bbox[2] == 810
    _, s = stretch(frame, 512, 512)
    assert (s.scale_x, s.scale_y) == (512 / 810, 512 / 1080)


def test_centernet_input_keeps_the_cameras_aspect():
    # long side = imgsz, short side to the nearest multiple of 32: a 16:9 camera at 512 runs at 512x288
    assert fit_size(1280, 720, 512, 32) == (512, 288) and fit_size(1920, 1080, 512, 32) == (512, 288)
    assert fit_size(720, 1280, 512, 32) == (288, 512)                        # portrait
    assert fit_size(640, 640, 512, 32) == (512, 512)                         # square frames as before
    assert fit_size(768, 576, 512, 32) == (512, 384)                         # 4:3
    assert fit_size(1280, 720, 416, 32) == (416, 224) and fit_size(1280, 720, 384, 32) == (384, 224)
    assert fit_size(4000, 100, 512, 32) == (512, 32)                         # never below one stride
    _, p = stretch(np.zeros((720, 1280, 3), np.uint8), 512, 288)
    assert p.scale_x == p.scale_y == 0.4                                     # no distortion at 16:9


def test_the_default_model_runs_the_square_and_imgsz_the_cameras_aspect(centernet_path, zidane):
    default = load_detector(str(centernet_path), classes=ROAD_USERS)
    assert not default.rect and default.input_size(1280, 720) == (512, 512)  # as trained: every frame stretched
    det = load_detector(str(centernet_path), classes=ROAD_USERS, imgsz=512)
    assert det.rect, f"{centernet_path} has a fixed input: `make models` reconverts it (scripts/tfjs_to_onnx.py)"
    assert det.input_size(1280, 720) == (512, 288) and det._prepare(zidane)[0].shape == (288, 512, 3)
    assert det.input_size(512, 512) == (512, 512)
    assert load_detector(str(centernet_path), imgsz=416).input_size(1280, 720) == (416, 224)
    assert any(b.class_name == "person" for b in det.detect([zidane])[0])


def test_decode_yolo_head():
    nc, n = 3, 5
    head = np.zeros((4 + nc, n), np.float32)
    head[:4, 1] = [100, 50, 20, 40]  # cx, cy, w, h
    head[4 + 2, 1] = 0.9
    head[4 + 0, 3] = 0.2             # below conf
    head[4 + 1, 4] = 0.6
    head[:4, 4] = [10, 10, 4, 4]
    boxes, scores, cls = decode_yolo(head, 0.35, None)
    assert cls.tolist() == [2, 1] and scores.tolist() == pytest.approx([0.9, 0.6])
    assert boxes[0].tolist() == [90, 30, 110, 70]
    boxes, scores, cls = decode_yolo(head, 0.35, [1])  # only class 1 may win
    assert cls.tolist() == [1] and boxes[0].tolist() == [8, 8, 12, 12]


def test_nms_is_per_class_and_bounded():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 0, 2, 0])
    assert nms(boxes, scores, classes, 0.5, 300).tolist() == [0, 2, 3]  # same place, other class kept
    assert nms(boxes, scores, classes, 0.9, 300).tolist() == [0, 1, 2, 3]
    assert nms(boxes, scores, classes, 0.5, 2).tolist() == [0, 2]
    assert nms(np.empty((0, 4)), np.empty(0), np.empty(0, int), 0.5, 10).tolist() == []


def test_thread_count_from_argument_or_environment(centernet_path, monkeypatch):
    assert load_detector(str(centernet_path), threads=1, runtime="onnxruntime").session.get_session_options().intra_op_num_threads == 1
    monkeypatch.setenv("HAZARDCTL_DETECT_THREADS", "2")
    assert load_detector(str(centernet_path), runtime="onnxruntime").session.get_session_options().intra_op_num_threads == 2
    monkeypatch.setenv("HAZARDCTL_DETECT_THREADS", "two")
    with pytest.raises(ConfigError, match="HAZARDCTL_DETECT_THREADS"):
        load_detector(str(centernet_path))


@needs_ultralytics
@pytest.mark.needs_no_gpu
def test_pt_on_cuda_without_a_gpu_is_a_clear_error(fall_pt_path):
    import torch

    if torch.cuda.is_available():
        skip_for_hardware("a CUDA device is present; the error path cannot happen here")
    with pytest.raises(ConfigError, match="no CUDA device"):
        load_detector(str(fall_pt_path), device="cuda")
