"""`hazardctl detect` end to end with the real COCO detector (CenterNet ONNX) on real photos."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from hazardctl.messages import DetectionResult
from tests.conftest import HAZARDCTL, ROOT

MODEL = ROOT / ".cache/models/centernet-coco.onnx"
BUS = ROOT / "tests/data/bus.jpg"
ZIDANE = ROOT / "tests/data/zidane.jpg"

pytestmark = [pytest.mark.skipif(not MODEL.is_file(), reason="run scripts/fetch_models.sh (make models) first"),
              pytest.mark.timeout(90)]


def detect(*args: str, timeout: float = 80) -> subprocess.CompletedProcess:
    return subprocess.run([*HAZARDCTL, "detect", "--model", str(MODEL), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def results(proc: subprocess.CompletedProcess) -> list[DetectionResult]:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [DetectionResult.model_validate_json(line) for line in proc.stdout.splitlines()]


def test_bus_jpg_gives_persons_a_bus_and_a_group_with_its_crop():
    (r,) = results(detect("--source", str(BUS)))
    classes = [o.class_name for o in r.objects]
    assert classes.count("person") >= 2 and "bus" in classes
    assert (r.camera_id, r.frame_id, r.frame_width, r.frame_height) == ("bus", 0, 810, 1080)
    assert r.detector.model == "centernet-coco" and r.detector.version
    assert r.times.capture <= r.times.detect <= r.times.published
    assert r.groups
    g = r.groups[0]
    assert len(g.member_ids) >= 2 and g.features.pedestrian_count >= 1 and g.features.vehicle_count >= 1
    crop = cv2.imdecode(np.frombuffer(base64.b64decode(g.crop_jpeg_b64), np.uint8), cv2.IMREAD_COLOR)
    assert max(crop.shape[:2]) == 768 and g.crop_size == (crop.shape[1], crop.shape[0])


def test_several_cameras_in_one_process_and_output_to_a_file(tmp_path):
    out = tmp_path / "det.jsonl"
    proc = detect("--source", str(BUS), "--camera-id", "cam-a", "--source", str(ZIDANE), "--camera-id", "cam-b",
                  "--out", str(out))
    assert proc.returncode == 0 and proc.stdout == ""
    rs = [DetectionResult.model_validate_json(line) for line in out.read_text().splitlines()]
    assert sorted(r.camera_id for r in rs) == ["cam-a", "cam-b"]
    assert len({r.message_id for r in rs}) == 2


def test_message_stays_under_max_message_bytes_by_shrinking_crops():
    proc = detect("--source", str(BUS), "--max-message-bytes", "60000")
    (r,) = results(proc)
    line = proc.stdout.splitlines()[0]
    assert len(line.encode()) <= 60000
    assert r.groups[0].crop_jpeg_b64 and max(r.groups[0].crop_size) < 768


def test_misspelt_class_is_one_line_naming_the_valid_ones():
    proc = detect("--source", str(BUS), "--classes", "person,traffic_light")
    assert proc.returncode == 2
    assert "traffic light" in proc.stderr and "Traceback" not in proc.stderr


def test_closed_pipe_stops_the_stage_and_sigterm_drains_and_exits_0(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.jpg"), cv2.imread(str(BUS)))
    # downstream reads one result and goes away: detect notices and stops by itself
    p = subprocess.Popen([*HAZARDCTL, "detect", "--model", str(MODEL), "--source", str(folder), "--loop", "--fps", "4"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    json.loads(p.stdout.readline())
    p.stdout.close()
    assert p.wait(timeout=30) == 0
    # a looping camera only ends on SIGTERM: it drains and exits 0
    p = subprocess.Popen([*HAZARDCTL, "detect", "--model", str(MODEL), "--source", str(folder), "--loop"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    json.loads(p.stdout.readline())
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err[-1000:]
    assert time.monotonic() - t0 < 15
    assert b"detect: frames=" in err


def test_fall_detection_pt_through_ultralytics_gives_the_persons():
    """The same command with a real YOLOv8 .pt (the fall detector: classes Normal/Fall) via ultralytics."""
    pytest.importorskip("ultralytics", reason="needs the [ultralytics] extra (make test installs it)")
    pt = ROOT / ".cache/models/fall-yolov8.pt"
    if not pt.is_file():
        pytest.skip("run scripts/fetch_test_models.sh (make models) first")
    proc = subprocess.run([*HAZARDCTL, "detect", "--model", str(pt), "--classes", "Normal,Fall", "--source", str(BUS)],
                          capture_output=True, text=True, timeout=80, cwd=ROOT)
    (r,) = results(proc)
    assert r.detector.model == "fall-yolov8"
    people = [o for o in r.objects if o.class_name == "Normal"]
    assert len(people) >= 3, [(o.class_name, o.confidence) for o in r.objects]
    assert all(o.bbox[3] > 350 for o in people)  # the people standing in front of the bus, not the bus
