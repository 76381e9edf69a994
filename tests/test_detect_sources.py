"""Camera sources: classification, pacing, latest-frame-wins, reconnect/backoff, stale reporting.

Real sources throughout: video files written with cv2.VideoWriter, image folders, and a real HTTP
MJPEG camera (multipart/x-mixed-replace, as IP cameras serve it) on 127.0.0.1 that the test can
break, blacken or freeze. The RTSP camera has its own test (test_detect_rtsp.py).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from hazardctl.errors import ConfigError
from stages.detect.camera_state import ENDED, LIVE, STALE, CameraHealth, reconnect_delay
from stages.detect.sources import (
    CameraReader,
    ReaderSettings,
    classify,
    default_camera_id,
    is_blank,
    load_cameras,
    make_spec,
    thumbnail,
    unique_ids,
)

ROOT = Path(__file__).resolve().parent.parent


def numbered_frame(i: int, size=(240, 320)) -> np.ndarray:
    img = np.full((*size, 3), 90, np.uint8)
    cv2.putText(img, str(i), (40, 170), cv2.FONT_HERSHEY_SIMPLEX, 4, (255, 255, 255), 8)
    cv2.rectangle(img, (i * 7 % 280, 10), (i * 7 % 280 + 30, 40), (0, 0, 255), -1)
    return img


def make_video(path: Path, n: int, fps: int = 10) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    for i in range(n):
        vw.write(numbered_frame(i))
    vw.release()
    return path


def drain(reader: CameraReader, until: float, consume_every: float = 0.0) -> list:
    """Take frames from a running reader until it ends or `until` (monotonic) passes."""
    got = []
    while time.monotonic() < until:
        f = reader.take()
        if f is not None:
            got.append((time.monotonic(), f))
            if consume_every:
                time.sleep(consume_every)
        elif reader.ended:
            break
        else:
            time.sleep(0.005)
    return got


# --- classification and config ----------------------------------------------------------------

def test_classify_and_default_ids(tmp_path):
    (tmp_path / "imgs").mkdir()
    assert classify("rtsp://user:secret@10.0.0.5:554/stream1") == "live"
    assert classify("HTTP://cam/mjpeg") == "live"
    assert classify("0") == "device"
    assert classify(str(tmp_path / "imgs")) == "images"
    assert classify("x/frame.PNG") == "images"
    assert classify("clip.mp4") == "video"
    cid = default_camera_id("rtsp://user:secret@10.0.0.5:554/stream1", "live")
    assert "secret" not in cid and "user" not in cid and cid == "10.0.0.5-554-stream1"
    assert default_camera_id("/data/cam-07.mp4", "video") == "cam-07"
    assert default_camera_id("2", "device") == "device-2"


def test_missing_or_empty_sources_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="nope.mp4: file not found"):
        make_spec(str(tmp_path / "nope.mp4"), None, 2.0, False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        make_spec(str(tmp_path / "empty"), None, 2.0, False)
    with pytest.raises(ConfigError, match="--fps"):
        make_spec("rtsp://x/y", None, 0, False)


def test_camera_ids_are_unique(tmp_path):
    a = make_spec(str(ROOT / "tests/data/bus.jpg"), None, 2.0, False)
    assert [s.camera_id for s in unique_ids([a, a, a], set())] == ["bus", "bus-2", "bus-3"]
    b = make_spec(str(ROOT / "tests/data/bus.jpg"), "cam", 2.0, False)
    with pytest.raises(ConfigError, match="more than one source"):
        unique_ids([b, b], {"cam"})


def test_cameras_yaml(tmp_path):
    f = tmp_path / "cams.yaml"
    f.write_text(f"fps: 1\ncameras:\n  - id: a\n    source: rtsp://127.0.0.1:1/x\n"
                 f"  - id: b\n    source: {ROOT / 'tests/data/bus.jpg'}\n    fps: 3\n    loop: true\n"
                 f"  - id: c\n    source: rtsp://127.0.0.1:1/z\n    enabled: false\n")
    specs = load_cameras(str(f))
    assert [(s.camera_id, s.kind, s.fps, s.loop) for s in specs] == [("a", "live", 1.0, False),
                                                                      ("b", "images", 3.0, True)]
    f.write_text("cameras:\n  - id: a\n    source: rtsp://x/y\n    fsp: 3\n")
    with pytest.raises(ConfigError, match=r"cams.yaml: cameras.0.fsp"):
        load_cameras(str(f))
    f.write_text(f"cameras:\n  - id: a\n    source: {tmp_path / 'gone.mp4'}\n")
    with pytest.raises(ConfigError, match=r"cameras.0 \(a\).*file not found"):
        load_cameras(str(f))


def test_example_cameras_yaml_is_valid(monkeypatch):
    monkeypatch.chdir(ROOT)  # file sources in it are relative to the repository
    specs = load_cameras("config/cameras.yaml")
    assert specs and len({s.camera_id for s in specs}) == len(specs)


# --- pure state and backoff -------------------------------------------------------------------

def test_reconnect_backoff_is_exponential_and_capped_at_30s():
    plain = [reconnect_delay(a, jitter=0.0) for a in range(10)]
    assert plain[:7] == [0.5, 1, 2, 4, 8, 16, 30]
    assert plain[7:] == [30, 30, 30]
    for a in range(12):
        for r in (0.0, 0.5, 0.999):
            d = reconnect_delay(a, jitter=0.2, rand=r)
            assert 0.8 * min(30, 0.5 * 2 ** a) - 1e-9 <= d <= 30.0
    assert reconnect_delay(1000) == 30.0


def test_camera_health_with_a_fake_clock():
    h = CameraHealth(stale_after_s=5.0)
    assert (h.state, h.reason) == (STALE, "connecting")
    assert h.frame(0.0).new == LIVE and h.reconnects == 0
    assert h.frame(1.0) is None
    assert h.check(5.9) is None
    t = h.check(6.5)
    assert (t.old, t.new) == (LIVE, STALE) and "no usable frame" in t.reason
    assert h.failed(7.0, "read failed") is None and h.reason == "read failed"
    assert h.frame(9.0).new == LIVE and h.reconnects == 1
    assert h.ended().new == ENDED
    assert h.frame(10.0) is None and h.failed(10.0, "x") is None and h.state == ENDED


def test_blank_frames_are_recognised():
    assert is_blank(thumbnail(np.zeros((720, 1280, 3), np.uint8)), 3.0)
    assert is_blank(thumbnail(np.full((720, 1280, 3), 128, np.uint8)), 3.0)
    assert not is_blank(thumbnail(numbered_frame(3)), 3.0)


# --- files ----------------------------------------------------------------------------------------

def run_reader(spec, settings, seconds: float, consume_every: float = 0.0):
    reader = CameraReader(spec, settings, threading.Event())
    t0 = time.monotonic()
    reader.start()
    try:
        got = drain(reader, t0 + seconds, consume_every)
    finally:
        reader.stop()
        reader.join(5)
    return reader, [(t - t0, f) for t, f in got]


def test_video_file_is_sampled_at_fps_and_paced_at_real_time(tmp_path):
    video = make_video(tmp_path / "v.mp4", 30, fps=10)  # 3 s of video
    spec = make_spec(str(video), "v", 2.0, False)
    reader, got = run_reader(spec, ReaderSettings(realtime=True), 10)
    assert [f.frame_id for _, f in got] == [0, 5, 10, 15, 20, 25]
    assert got[-1][0] >= 2.4, "frame at 2.5 s of video was delivered before 2.5 s of wall time"
    assert reader.state == ENDED and reader.counters.read == 30
    assert reader.counters.dropped == {"sampling": 24}


def test_as_fast_as_possible_loses_no_sampled_frame_even_with_a_slow_consumer(tmp_path):
    video = make_video(tmp_path / "v.mp4", 30, fps=10)
    spec = make_spec(str(video), "v", 5.0, False)
    reader, got = run_reader(spec, ReaderSettings(realtime=False), 20, consume_every=0.05)
    assert [f.frame_id for _, f in got] == list(range(0, 30, 2))
    assert "superseded" not in reader.counters.dropped


def test_real_time_file_with_a_slow_consumer_keeps_only_the_newest_frame(tmp_path):
    video = make_video(tmp_path / "v.mp4", 30, fps=10)
    spec = make_spec(str(video), "v", 10.0, False)  # every frame is a sample
    reader, got = run_reader(spec, ReaderSettings(realtime=True), 10, consume_every=0.35)
    ids = [f.frame_id for _, f in got]
    assert ids == sorted(ids) and len(ids) < 20  # no backlog: the consumer sees recent frames only
    assert reader.counters.dropped.get("superseded", 0) >= 10
    assert ids[-1] >= 25


def test_image_folder_in_order_and_loop(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"img{i}.png"), numbered_frame(i))
    (folder / "notes.txt").write_text("not an image")
    spec = make_spec(str(folder), None, 50.0, False)
    assert spec.camera_id == "imgs" and len(spec.images) == 3
    reader, got = run_reader(spec, ReaderSettings(realtime=False), 10)
    assert [f.frame_id for _, f in got] == [0, 1, 2] and reader.state == ENDED
    looped = make_spec(str(folder), None, 50.0, True)
    reader, got = run_reader(looped, ReaderSettings(realtime=True), 0.5)
    ids = [f.frame_id for _, f in got]
    assert len(ids) >= 7 and ids == list(range(len(ids)))
    assert np.array_equal(got[3][1].image, got[0][1].image)  # image 3 is image 0 again


# --- a live HTTP camera ---------------------------------------------------------------------------

class MjpegCamera:
    """A real HTTP MJPEG camera on 127.0.0.1 whose picture can be made black, frozen, or cut off."""

    def __init__(self, fps: float = 20.0):
        self.mode = "ok"  # ok | black | frozen | down
        self.sent = 0
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if cam.mode == "down":
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                frozen = numbered_frame(999)
                try:
                    while cam.mode != "down":
                        cam.sent += 1
                        img = {"ok": lambda: numbered_frame(cam.sent), "frozen": lambda: frozen,
                               "black": lambda: np.zeros((240, 320, 3), np.uint8)}[cam.mode]()
                        jpg = cv2.imencode(".jpg", img)[1].tobytes()
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpg)).encode() + b"\r\n\r\n" + jpg + b"\r\n")
                        time.sleep(1 / fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cam"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.mode = "down"
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mjpeg_camera():
    cam = MjpegCamera()
    yield cam
    cam.close()


def wait_for(cond, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


@pytest.mark.timeout(60)
def test_live_camera_black_frozen_and_dropped_feed(mjpeg_camera):
    """Black and frozen pictures are never handed on and make the camera stale; a cut feed is
    reconnected with backoff; frames flow again once the camera is back."""
    settings = ReaderSettings(stale_after_s=1.0, reconnect_base_s=0.2, read_timeout_s=2.0, open_timeout_s=2.0)
    spec = make_spec(mjpeg_camera.url, "http-cam", 10.0, False)
    events = []
    reader = CameraReader(spec, settings, threading.Event(), on_event=lambda c, k, v: events.append((k, v)))
    taken = []

    def take_all():
        while (f := reader.take()) is not None:
            taken.append((mjpeg_camera.mode, f))

    reader.start()
    try:
        assert wait_for(lambda: (take_all(), reader.state == LIVE)[1], 10)
        assert wait_for(lambda: (take_all(), len(taken) >= 5)[1], 5)
        for mode in ("black", "frozen"):
            mjpeg_camera.mode = mode
            assert wait_for(lambda: (take_all(), reader.state == STALE)[1], 5), f"{mode} feed not reported stale"
            mjpeg_camera.mode = "ok"
            assert wait_for(lambda: (take_all(), reader.state == LIVE)[1], 5)
        mjpeg_camera.mode = "down"  # connection closed, new connections refused with 503
        assert wait_for(lambda: (take_all(), reader.state == STALE)[1], 8)
        time.sleep(1.0)
        mjpeg_camera.mode = "ok"
        assert wait_for(lambda: (take_all(), reader.state == LIVE)[1], 10), "camera did not come back"
        n = len(taken)
        assert wait_for(lambda: (take_all(), len(taken) >= n + 3)[1], 5)
    finally:
        reader.stop()
        reader.join(5)
    images = [f.image for _, f in taken]
    assert not any(is_blank(thumbnail(i), 3.0) for i in images), "a black frame was handed on"
    frozen = numbered_frame(999)
    frozen_handed = [i for i in images if np.abs(i.astype(int) - frozen).mean() < 8]
    assert len(frozen_handed) <= 1, "a frozen picture was handed on more than once"
    assert reader.counters.dropped.get("blank", 0) > 0 and reader.counters.dropped.get("repeated", 0) > 0
    assert reader.health.reconnects >= 3
    transitions = [(v.old, v.new) for k, v in events if k == "transition"]
    assert transitions.count((LIVE, STALE)) >= 3 and transitions.count((STALE, LIVE)) >= 4


@pytest.mark.timeout(30)
def test_unreachable_stream_stays_stale_and_retries_with_backoff():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    spec = make_spec(f"rtsp://127.0.0.1:{port}/cam", "gone", 2.0, False)
    reader = CameraReader(spec, ReaderSettings(reconnect_base_s=0.1, open_timeout_s=1.0), threading.Event())
    reader.start()
    time.sleep(2.0)
    reader.stop()
    reader.join(5)
    assert reader.take() is None and reader.counters.read == 0
    assert reader.health.reason.startswith("cannot open") or reader.state == ENDED
    assert reader.health.last_frame_at is None
