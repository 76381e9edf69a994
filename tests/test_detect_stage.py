"""The detect stage in-process: batching across cameras, per-camera counters and metrics.

The real CenterNet detector runs, wrapped only to record the batches it is called with.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from prometheus_client import REGISTRY

from hazardctl.messages import DetectionResult
from hazardctl.transports import Endpoints
from tests.conftest import ROOT

MODEL = ROOT / ".cache/models/centernet-coco.onnx"
pytestmark = [pytest.mark.skipif(not MODEL.is_file(), reason="run scripts/fetch_models.sh (make models) first"),
              pytest.mark.timeout(90)]


class BatchRecorder:
    def __init__(self, inner):
        self.inner = inner
        self.model_name, self.model_version, self.names = inner.model_name, inner.model_version, inner.names
        self.batches: list[list[tuple[int, int]]] = []

    def detect(self, frames):
        self.batches.append([f.shape[:2] for f in frames])
        return self.inner.detect(frames)


def folder_of(image: Path, n: int, dest: Path) -> Path:
    dest.mkdir()
    img = cv2.imread(str(image))
    for i in range(n):
        cv2.imwrite(str(dest / f"{i:03d}.jpg"), img)
    return dest


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_frames_ready_across_cameras_are_detected_in_one_batch(tmp_path):
    import stages.detect as detect
    from stages.detect.backends import load_detector
    from stages.detect.sources import ReaderSettings, make_spec

    a = folder_of(ROOT / "tests/data/bus.jpg", 4, tmp_path / "a")
    b = folder_of(ROOT / "tests/data/zidane.jpg", 4, tmp_path / "b")
    c = folder_of(ROOT / "tests/data/bus.jpg", 4, tmp_path / "c")
    before = {cam: sample("hazardctl_detect_frames_processed_total", camera=cam) for cam in ("sa", "sb", "sc")}
    groups_before = sample("hazardctl_detect_groups_per_frame_count")
    recorder = BatchRecorder(load_detector(str(MODEL)))
    out = tmp_path / "out.jsonl"
    cfg = detect.DetectConfig(
        cameras=(make_spec(str(a), "sa", 2.0, False), make_spec(str(b), "sb", 2.0, False),
                 make_spec(str(c), "sc", 2.0, False)),
        out=str(out), max_batch=2, reader=ReaderSettings(realtime=False), status_every_s=0)
    stats = detect.run(cfg, endpoints=Endpoints(), detector=recorder)

    assert sum(len(bt) for bt in recorder.batches) == 12 == stats.frames == stats.published
    assert max(len(bt) for bt in recorder.batches) == 2  # batched, and never above --batch
    assert any({(1080, 810), (720, 1280)} <= set(bt) for bt in recorder.batches)  # across cameras
    rs = [DetectionResult.model_validate_json(line) for line in out.read_text().splitlines()]
    assert sorted((r.camera_id, r.frame_id) for r in rs) == [(cam, i) for cam in ("sa", "sb", "sc") for i in range(4)]
    assert len({r.message_id for r in rs}) == 12
    for cam in ("sa", "sb", "sc"):
        assert stats.cameras[cam]["processed"] == 4 and stats.cameras[cam]["state"] == "ended"
        assert sample("hazardctl_detect_frames_processed_total", camera=cam) - before[cam] == 4
        assert sample("hazardctl_detect_camera_state", camera=cam, state="ended") == 1
    assert sample("hazardctl_detect_groups_per_frame_count") - groups_before == 12
    # the same bus photo in two cameras: group ids are per camera, and stable within each camera
    ids = {cam: {g.group_id for r in rs if r.camera_id == cam for g in r.groups} for cam in ("sa", "sc")}
    assert len(ids["sa"]) == 1 and len(ids["sc"]) == 1
