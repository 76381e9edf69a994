"""Inference workers (stages/detect/inference.py): several detector calls at once, each camera in order.

The real CenterNet runs on a real video (people walking, tests/detect_scenes.py); it is wrapped only to
count how many calls overlap. A detector that fails or blocks is a stand-in only where the real model
cannot be made to fail or hang on cue.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from hazardctl.messages import DetectionResult
from hazardctl.transports import Endpoints
from tests import detect_scenes
from tests.conftest import ROOT

MODEL = ROOT / ".cache/models/centernet-coco.onnx"
pytestmark = pytest.mark.timeout(120)
needs_model = pytest.mark.skipif(not MODEL.is_file(), reason="run scripts/fetch_models.sh (make models) first")


class Overlap:
    """A detector wrapper that records how many calls run at the same time."""

    def __init__(self, inner, *, thread_safe: bool = True, per_call: int = 1, fail_on: int | None = None,
                 block: threading.Event | None = None, slow_odd_calls: float = 0.0):
        self.inner = inner
        self.model_name = getattr(inner, "model_name", "stand-in")
        self.model_version = getattr(inner, "model_version", "0")
        self.thread_safe, self.per_call = thread_safe, per_call
        self.fail_on, self.block, self.slow_odd_calls = fail_on, block, slow_odd_calls
        self.started = threading.Event()
        self._lock = threading.Lock()
        self.running = self.most = self.calls = 0

    def detect(self, frames):
        with self._lock:
            self.calls += 1
            call = self.calls
            self.running += 1
            self.most = max(self.most, self.running)
        self.started.set()
        try:
            if self.block is not None:
                self.block.wait(10)
            if call % 2:
                time.sleep(self.slow_odd_calls)
            if call == self.fail_on:
                raise RuntimeError("simulated inference failure")
            return self.inner.detect(frames) if self.inner else [[] for _ in frames]
        finally:
            with self._lock:
                self.running -= 1


def run_stage(tmp_path: Path, detector, workers: int | None, cameras: int = 3, name: str = "out"):
    import stages.detect as detect
    from stages.detect.sources import ReaderSettings, make_spec

    video = tmp_path / "walk.mp4"
    if not video.exists():
        detect_scenes.write_video(detect_scenes.walk(n_frames=40), video)
    out = tmp_path / f"{name}.jsonl"
    cfg = detect.DetectConfig(
        cameras=tuple(make_spec(str(video), f"cam{i}", 2.0, False) for i in range(cameras)),
        out=str(out), reader=ReaderSettings(realtime=False), status_every_s=0, inference_workers=workers)
    stats = detect.run(cfg, endpoints=Endpoints(), detector=detector)
    return stats, [DetectionResult.model_validate_json(line) for line in out.read_text().splitlines()]


def boxes_by_frame(results):
    return {(r.camera_id, r.frame_id): [(o.class_name, o.bbox, o.track_id) for o in r.objects] for r in results}


@needs_model
def test_two_workers_overlap_calls_and_find_the_same_boxes_in_camera_order(tmp_path):
    from stages.detect.backends import load_detector

    model = load_detector(str(MODEL), threads=1)
    one = Overlap(model)
    stats1, single = run_stage(tmp_path, one, workers=1, name="one")
    two = Overlap(model)
    stats2, double = run_stage(tmp_path, two, workers=2, name="two")

    assert one.most == 1
    assert two.most == 2, "two workers never ran the detector at the same time"
    assert stats1.frames == stats2.frames == 3 * 8  # 40 frames at 10 fps, sampled at 2 fps, per camera
    assert stats2.errors == 0
    # the same frames give the same boxes, whichever worker ran them, and the same track ids: each
    # camera's tracker saw its frames in the same order
    assert boxes_by_frame(double) == boxes_by_frame(single)
    assert any(o.track_id is not None for r in double for o in r.objects)
    assert sum(len(r.objects) for r in double) >= 3 * 8 * 4  # the walkers were found, not nothing twice
    for cam in ("cam0", "cam1", "cam2"):  # and leave in that order
        ids = [r.frame_id for r in double if r.camera_id == cam]
        assert ids == sorted(ids) and len(ids) == 8


def test_a_camera_never_has_two_frames_on_the_workers(tmp_path):
    """Every other call is slow: were a camera's next frame given to the idle worker, it would finish
    first and reach the tracker before the frame taken earlier."""
    stand_in = Overlap(None, slow_odd_calls=0.15)
    stats, results = run_stage(tmp_path, stand_in, workers=2, cameras=1)
    ids = [r.frame_id for r in results]
    assert len(ids) == 8 and ids == sorted(ids)
    assert stand_in.most == 1  # one camera: one frame at a time


def test_a_failed_call_loses_only_its_frame_and_the_stage_goes_on(tmp_path):
    stand_in = Overlap(None, fail_on=5)  # no model needed: the frames' boxes do not matter here
    stats, results = run_stage(tmp_path, stand_in, workers=2)
    assert stats.errors == 1
    assert stats.frames == len(results) == 3 * 8 - 1


def test_a_detector_that_is_not_thread_safe_gets_one_worker(tmp_path):
    stand_in = Overlap(None, thread_safe=False)
    stats, results = run_stage(tmp_path, stand_in, workers=None)
    assert stand_in.most == 1 and len(results) == 3 * 8


def test_stop_publishes_the_frames_the_workers_still_have(tmp_path):
    import stages.detect as detect
    from stages.detect.sources import ReaderSettings, make_spec

    video = detect_scenes.write_video(detect_scenes.walk(n_frames=40), tmp_path / "walk.mp4")
    release = threading.Event()
    stand_in = Overlap(None, block=release)
    out = tmp_path / "out.jsonl"
    cfg = detect.DetectConfig(cameras=(make_spec(str(video), "cam0", 2.0, True),), out=str(out),
                              reader=ReaderSettings(realtime=False), status_every_s=0, inference_workers=2)
    stages = []
    result = {}
    worker = threading.Thread(target=lambda: result.update(
        stats=detect.run(cfg, endpoints=Endpoints(), detector=stand_in, on_start=stages.append)))
    worker.start()
    assert stand_in.started.wait(20), "the detector was never called"
    stages[0].stop.stop()  # as SIGTERM does, while a frame is on a worker
    time.sleep(0.3)
    release.set()
    worker.join(20)
    assert not worker.is_alive()
    published = out.read_text().splitlines()
    assert result["stats"].frames == len(published) == stand_in.calls >= 1


def test_cameras_opened_together_are_sampled_spread_over_the_period(tmp_path):
    """Four cameras at 2 fps, started at the same moment (as a detect process starts them): their due
    times are 0.125 s apart, so the workers get one frame at a time instead of four at once."""
    import stages.detect as detect
    from stages.detect.sources import ReaderSettings, make_spec

    video = detect_scenes.write_video(detect_scenes.walk(n_frames=30), tmp_path / "walk.mp4")
    out = tmp_path / "out.jsonl"
    cfg = detect.DetectConfig(cameras=tuple(make_spec(str(video), f"cam{i}", 2.0, False) for i in range(4)),
                              out=str(out), reader=ReaderSettings(realtime=True, keyframes_only=False),
                              status_every_s=0)
    detect.run(cfg, endpoints=Endpoints(), detector=Overlap(None))
    results = [DetectionResult.model_validate_json(line) for line in out.read_text().splitlines()]
    first = {}
    for r in results:
        first.setdefault(r.camera_id, r.times.capture)
    starts = sorted(first.values())
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(first) == 4 and all(0.08 <= g <= 0.2 for g in gaps), gaps
    assert len(results) == 4 * 6  # 3 s of video at 2 fps each: spreading loses no frame


@needs_model
def test_motion_regions_in_the_stage_run_the_model_where_walkers_move(tmp_path):
    """`--motion-regions`: frames after the first run the model only around the walkers (the rest of the
    road is still); the walkers are still found, each camera's results in order."""
    import stages.detect as detect
    from stages.detect.backends import load_detector
    from stages.detect.motion_gate import MotionGateConfig
    from stages.detect.sources import ReaderSettings, make_spec

    video = detect_scenes.write_video(detect_scenes.walk(n_frames=80), tmp_path / "walk.mp4")
    model = load_detector(str(MODEL), threads=1, classes=["person"], conf=0.3)
    runs = {}
    for name, regions in (("whole", False), ("regions", True)):
        out = tmp_path / f"{name}.jsonl"
        cfg = detect.DetectConfig(cameras=(make_spec(str(video), "cam0", 2.0, False),), out=str(out),
                                  reader=ReaderSettings(realtime=False), status_every_s=0, classes=("person",),
                                  conf=0.3, motion_gate=MotionGateConfig(regions=regions, force_every_s=60.0))
        stats = detect.run(cfg, endpoints=Endpoints(), detector=model)
        runs[name] = (stats, [DetectionResult.model_validate_json(line) for line in out.read_text().splitlines()])
    stats, results = runs["regions"]
    assert stats.inference_regional >= 8 and stats.errors == 0  # 16 frames: all but the first in regions
    assert [r.frame_id for r in results] == list(range(0, 80, 5))
    whole = sum(len(r.objects) for r in runs["whole"][1])
    found = sum(len(r.objects) for r in results)
    assert found >= 0.9 * whole, (found, whole)


def test_free_workers_get_the_frames_that_waited_longest(tmp_path):
    """Near capacity frames queue in the readers' slots; the oldest go first, whatever the cameras' order
    (a fixed or rotating order let a frame wait behind a whole round and be superseded: issue 21). A
    superseded frame's camera keeps its place (it has waited since the first), and a camera whose frame is
    still on a worker is passed over."""
    import numpy as np

    import stages.detect as detect
    from hazardctl.transports import Endpoints
    from stages.detect.sources import Frame, ReaderSettings, make_spec

    video = detect_scenes.write_video(detect_scenes.walk(n_frames=10), tmp_path / "walk.mp4")
    cfg = detect.DetectConfig(cameras=tuple(make_spec(str(video), f"cam{i}", 2.0, False) for i in range(4)),
                              out=str(tmp_path / "out.jsonl"), reader=ReaderSettings(realtime=True),
                              status_every_s=0, inference_workers=2)
    output = Endpoints().output(cfg.out)
    stage = detect.DetectStage(cfg, Overlap(None), output, max_message_bytes=1 << 20, stop_on_delivery_failure=True)
    readers = [stage.cameras[f"cam{i}"].reader for i in range(4)]  # never started: frames handed in below
    image = np.zeros((8, 8, 3), np.uint8)

    def arrive(cam: int, frame_id: int = 0) -> None:
        readers[cam]._deliver(Frame(f"cam{cam}", frame_id, time.time(), image))
        time.sleep(0.002)  # distinct arrival times on any clock

    try:
        for cam in (2, 0, 3, 1):
            arrive(cam)
        taken = [f.camera_id for f in stage._take_ready(readers)]  # two workers free: two frames
        assert taken == ["cam2", "cam0"]
        assert [f.camera_id for f in stage._take_ready(readers)] == ["cam3", "cam1"]

        arrive(1, 1)
        arrive(0, 1)
        arrive(1, 2)  # supersedes cam1's frame 1: cam1 has still waited longest
        stage._inferring.add("cam3")
        arrive(3, 1)
        assert [(f.camera_id, f.frame_id) for f in stage._take_ready(readers)] == [("cam1", 2), ("cam0", 1)]
        assert stage._take_ready(readers) == []  # cam3 waits for its frame on the workers
        stage._inferring.discard("cam3")
        assert [f.camera_id for f in stage._take_ready(readers)] == ["cam3"]
    finally:
        stage.pool.close()
        output.close()
