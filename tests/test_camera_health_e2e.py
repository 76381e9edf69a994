"""Must show (issue 18): a detect camera killed (its RTSP source gone) → a `camera` incident within the
stale timeout, ended when the camera returns; pushed to WebSocket clients and to a webhook sink.

Real parts: gst-rtsp-server as the camera (scripts/rtsp_server.py), `detect` with the real CenterNet
detector and `--status-out kafka://…` (status topic on the local broker), `hazardctl consume
--camera-status kafka://… --sink webhook:…` as a process, a WebSocket client, an aiohttp receiver.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest

from hazardctl.transports import Endpoints
from tests.consume_proc import ConsumeProcess
from tests.detect_scenes import walk, write_jpegs
from tests.sink_receivers import WebhookReceiver, wait_until
from tests.test_detect_rtsp import MODEL, RtspCamera, _rtsp_server_available, free_port

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(not MODEL.is_file(), reason="run scripts/fetch_models.sh (make models) first"),
    pytest.mark.skipif(not _rtsp_server_available(), reason="run scripts/install-rtsp.sh (gst-rtsp-server)"),
    pytest.mark.timeout(150),
]

STALE_AFTER_S, READ_TIMEOUT_S = 2.0, 3.0


class WsEvents(threading.Thread):
    def __init__(self, url: str):
        super().__init__(daemon=True)
        from websockets.sync.client import connect

        self.ws = connect(url, open_timeout=10)
        self.events: list[tuple[float, dict]] = []

    def run(self) -> None:
        try:
            with self.ws:
                for raw in self.ws:
                    self._on(json.loads(raw))
        except Exception:  # noqa: BLE001 — closed at the end
            pass

    def _on(self, msg: dict) -> None:
        if msg.get("type") == "incident" and msg["incident"].get("type") == "camera":
            self.events.append((time.time(), msg))

    def first(self, action: str) -> tuple[float, dict] | None:
        return next(((t, m) for t, m in list(self.events) if m["event"] == action), None)


def test_a_killed_camera_opens_a_camera_incident_and_its_return_ends_it(kafka_bootstrap, make_topic, hazardctl_env,
                                                                         tmp_path):
    import stages.detect as detect
    from hazardctl.config import KafkaSettings
    from stages.detect.backends import load_detector
    from stages.detect.sources import ReaderSettings, make_spec

    status_topic = make_topic("camera-status", 1)
    frames = write_jpegs(walk(n_frames=40), tmp_path / "frames")
    cam = RtspCamera(frames, free_port())
    cam.start()
    hook = WebhookReceiver(b"k")
    (tmp_path / "secret").write_bytes(b"k")
    consume = ConsumeProcess("--camera-status", f"kafka://{status_topic}", "--group", f"cam-health-{status_topic}",
                             "--sink", f"webhook:{hook.url}", "--sink-secret-file", str(tmp_path / "secret"),
                             "--dlq", str(tmp_path / "dlq.jsonl"), "--data-dir", str(tmp_path / "data"), "--http", "127.0.0.1:0",
                             env=hazardctl_env, timeout=60)
    ws = WsEvents(consume.ws_url)
    ws.start()
    cfg = detect.DetectConfig(
        cameras=(make_spec(cam.url, "rtsp-cam", 2.0, False),), out=str(tmp_path / "det.jsonl"), classes=("person",),
        conf=0.3, status_out=f"kafka://{status_topic}", heartbeat_s=2.0, status_every_s=0,
        reader=ReaderSettings(stale_after_s=STALE_AFTER_S, reconnect_base_s=0.5, open_timeout_s=5.0,
                              read_timeout_s=READ_TIMEOUT_S))
    stages: list = []
    errors: list = []

    def run_detect():
        try:
            detect.run(cfg, endpoints=Endpoints(settings=KafkaSettings(bootstrap_servers=kafka_bootstrap)),
                       detector=load_detector(str(MODEL), conf=0.3, classes=["person"]), on_start=stages.append)
        except BaseException as e:  # noqa: BLE001 — surfaced below
            errors.append(e)

    t = threading.Thread(target=run_detect, daemon=True)
    t.start()
    try:
        wait_until(lambda: stages and stages[0].cameras["rtsp-cam"].reader.state == "live", 30, "the camera live")
        wait_until(lambda: consume.get("/healthz")[0] == 200 and stages[0].camera_status.sent >= 1, 10,
                   "the first camera status")
        time.sleep(1.0)  # consume has applied it (tick 0.5 s)
        assert ws.first("new") is None  # live: nothing to report
        # the first analysed frame went out as the camera's snapshot (--snapshot-every), served to the page
        with urllib.request.urlopen(f"http://127.0.0.1:{consume.http_port}/cameras/rtsp-cam/snapshot", timeout=5) as r:
            snap, ctype, size = r.read(), r.headers["Content-Type"], r.headers["X-Snapshot-Size"]
        assert ctype == "image/jpeg" and snap[:2] == b"\xff\xd8" and cv2.imdecode(
            np.frombuffer(snap, np.uint8), cv2.IMREAD_COLOR).shape[1::-1] == tuple(map(int, size.split("x")))

        cam.stop()  # the camera goes away
        killed = time.time()
        wait_until(lambda: ws.first("new"), READ_TIMEOUT_S + STALE_AFTER_S + 8, "a camera incident")
        opened_at, new = ws.first("new")
        inc = new["incident"]
        assert inc["camera_id"] == "rtsp-cam" and inc["camera_state"] == "stale" and inc["state"] == "open"
        time_to_incident = opened_at - killed
        assert consume.metric("hazardctl_consume_cameras_down") == 1
        # an operator acknowledges the outage: it stays open until the camera is back
        req = urllib.request.Request(f"http://127.0.0.1:{consume.http_port}/incidents/{inc['incident_id']}/ack",
                                     data=b'{"note": "crew sent", "by": "desk 2"}', method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            acked = json.loads(r.read())
        assert (acked["disposition"], acked["state"]) == ("acked", "open")

        cam.start()  # it returns
        back = time.time()
        wait_until(lambda: ws.first("end"), 40, "the camera incident to end")
        ended_at, end = ws.first("end")
        assert end["incident"]["incident_id"] == inc["incident_id"] and end["incident"]["state"] == "ended"
        assert consume.metric("hazardctl_consume_cameras_down") == 0
        wait_until(lambda: len(hook.snapshot()) >= 3, 10, "the camera incident's events at the webhook")
        assert [(r.doc["event"], r.doc["incident"]["type"]) for r in hook.snapshot()] == [
            ("new", "camera"), ("ack", "camera"), ("end", "camera")]
        # and it is history: the store has the outage, opened and ended (the writer thread: allow a moment)
        def stored():
            status, page = consume.get("/incidents?camera=rtsp-cam")
            return status == 200 and [i for i in page["incidents"] if i["state"] == "ended"]
        wait_until(stored, 10, "the camera incident in the store")
        (hist,) = consume.get("/incidents?camera=rtsp-cam")[1]["incidents"]
        assert (hist["incident_id"], hist["type"], hist["risk_types"]) == (inc["incident_id"], "camera", ["camera stale"])
        detail = consume.get(f"/incidents/{inc['incident_id']}")[1]
        assert detail["disposition"] == "acked" and [(e["action"], e["by"]) for e in detail["timeline"]] == [
            ("ack", "desk 2")]
        print(f"camera incident {time_to_incident:.1f}s after the source died (stale after {STALE_AFTER_S}s, "
              f"read timeout {READ_TIMEOUT_S}s); ended {ended_at - back:.1f}s after it came back")
    finally:
        if stages:
            stages[0].stop.stop()
        t.join(30)
        cam.stop()
        ws.ws.close()
        consume.stop()
        consume.kill()
        hook.close()
    assert not errors, errors
    assert "Traceback" not in "".join(consume.stderr), "".join(consume.stderr[-30:])
