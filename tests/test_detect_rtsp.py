"""An RTSP camera that goes away mid-stream: detect reports it stale, reconnects and continues,
and the detector never receives a black or repeated frame.

The camera is Debian's gst-rtsp-server (scripts/rtsp_server.py on /usr/bin/python3, installed by
scripts/install-rtsp.sh) serving the walking-people scene as H.264 on 127.0.0.1; detect reads it
with OpenCV's FFmpeg. The real CenterNet detector runs, wrapped to record every frame it gets.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from hazardctl.messages import DetectionResult
from hazardctl.transports import Endpoints
from tests.conftest import ROOT
from tests.detect_scenes import walk, write_jpegs

MODEL = ROOT / ".cache/models/centernet-coco.onnx"
SYSTEM_PYTHON = "/usr/bin/python3"


def _rtsp_server_available() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    probe = ("import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "assert Gst.ElementFactory.find('x264enc') and Gst.ElementFactory.find('rtph264pay')")
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.skipif(not MODEL.is_file(), reason="run scripts/fetch_models.sh (make models) first"),
    pytest.mark.skipif(not _rtsp_server_available(), reason="run scripts/install-rtsp.sh (gst-rtsp-server)"),
    pytest.mark.timeout(90),
]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class RtspCamera:
    def __init__(self, frames: Path, port: int):
        self.frames, self.port = frames, port
        self.url = f"rtsp://127.0.0.1:{port}/cam"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(ROOT / "scripts/rtsp_server.py"), "--frames", str(self.frames),
             "--port", str(self.port), "--fps", "10"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("READY"), f"rtsp server did not start: {line} {self.proc.stderr.read()[-500:]}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class RecordingDetector:
    """The real backend, wrapped: remembers every frame it was given (time, fingerprint, stats)."""

    def __init__(self, inner):
        self.inner = inner
        self.model_name, self.model_version, self.names = inner.model_name, inner.model_version, inner.names
        self.received: list[tuple[float, float, float, bytes]] = []  # time, mean, std, thumbnail bytes
        self.lock = threading.Lock()

    def detect(self, frames):
        with self.lock:
            for f in frames:
                thumb = f[::8, ::8]
                self.received.append((time.time(), float(f.mean()), float(thumb.std()), thumb.tobytes()))
        return self.inner.detect(frames)

    def count(self) -> int:
        with self.lock:
            return len(self.received)


def wait_for(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def state_metric(camera: str, state: str) -> float | None:
    return REGISTRY.get_sample_value("hazardctl_detect_camera_state", {"camera": camera, "state": state})


def test_rtsp_camera_outage_stale_reconnect_no_black_or_repeated_frames(tmp_path):
    import stages.detect as detect
    from stages.detect.backends import load_detector
    from stages.detect.sources import ReaderSettings, make_spec

    frames = write_jpegs(walk(n_frames=60), tmp_path / "frames")
    cam = RtspCamera(frames, free_port())
    cam.start()
    out = tmp_path / "det.jsonl"
    recorder = RecordingDetector(load_detector(str(MODEL), conf=0.3, classes=["person"]))
    cfg = detect.DetectConfig(
        cameras=(make_spec(cam.url, "rtsp-cam", 2.0, False),), out=str(out), classes=("person",), conf=0.3,
        reader=ReaderSettings(stale_after_s=2.0, reconnect_base_s=0.5, open_timeout_s=5.0, read_timeout_s=3.0),
        status_every_s=0)
    stages: list = []
    errors: list = []

    def run_stage():
        try:
            detect.run(cfg, endpoints=Endpoints(), detector=recorder, on_start=stages.append)
        except BaseException as e:  # surfaced by the main thread
            errors.append(e)

    t = threading.Thread(target=run_stage, daemon=True)
    t.start()
    try:
        assert wait_for(lambda: recorder.count() >= 4, 30), f"no frames from the RTSP camera {errors}"
        stage = stages[0]
        reader = stage.cameras["rtsp-cam"].reader
        assert reader.state == "live" and state_metric("rtsp-cam", "live") == 1

        cam.stop()  # the camera goes away mid-stream
        outage_start = time.time()
        assert wait_for(lambda: reader.state == "stale", 10), "outage not reported"
        assert state_metric("rtsp-cam", "stale") == 1 and state_metric("rtsp-cam", "live") == 0
        before = recorder.count()
        time.sleep(max(0.0, outage_start + 4.0 - time.time()))  # down for 4 s
        received_while_down = recorder.count() - before
        outage_end = time.time()
        cam.start()

        assert wait_for(lambda: reader.state == "live", 40), "camera did not come back"
        assert state_metric("rtsp-cam", "live") == 1
        n = recorder.count()
        assert wait_for(lambda: recorder.count() >= n + 4, 20), "no frames after reconnecting"
    finally:
        if stages:
            stages[0].stop.stop()
        t.join(30)
        cam.stop()
    assert not errors, errors

    assert reader.health.reconnects >= 1
    transitions = [(tr.old, tr.new) for tr in stage.cameras["rtsp-cam"].transitions]
    went_stale = transitions.index(("live", "stale"))
    assert ("stale", "live") in transitions[went_stale:], transitions
    # what the detector received: nothing black or uniform, no frame twice in a row
    stds = [s for _, _, s, _ in recorder.received]
    means = [mu for _, mu, _, _ in recorder.received]
    assert min(stds) > 10 and min(means) > 20, "a black/uniform frame reached the detector"
    thumbs = [th for *_, th in recorder.received]
    assert all(a != b for a, b in zip(thumbs, thumbs[1:])), "the same frame reached the detector twice"
    assert received_while_down <= 1  # at most one frame already decoded when the server died
    # published results: none was captured while the camera was down, and frames continue after it
    rs = [DetectionResult.model_validate_json(line) for line in out.read_text().splitlines()]
    assert not [r for r in rs if outage_start + 1.0 < r.frame_ts < outage_end]
    after = [r for r in rs if r.frame_ts > outage_end]
    assert len(after) >= 4 and all(r.objects for r in after[-3:])
    assert len({r.message_id for r in rs}) == len(rs)
