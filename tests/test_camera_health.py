"""Camera health, pure rules with a fake clock (hazardctl/camera_watch.py) and detect's status messages
(stages/detect/camera_status.py); a CameraStatus that reaches expand by mistake is a dead letter."""

from __future__ import annotations

import json
import subprocess
import sys

from hazardctl.camera_watch import CameraWatch, camera_incident_id
from hazardctl.messages import CameraStatus
from hazardctl.synthetic import detection
from tests.conftest import ROOT


def st(state: str, ts: float, previous: str | None = "live", reason: str = "", since: float | None = None,
       camera: str = "cam-1", heartbeat: float | None = 10.0) -> CameraStatus:
    return CameraStatus(camera_id=camera, state=state, previous=previous, reason=reason,
                        since=ts if since is None else since, ts=ts, heartbeat_s=heartbeat)


def test_a_camera_down_opens_one_incident_updated_by_the_kind_of_outage_and_ended_when_live():
    w = CameraWatch()
    assert w.apply(st("live", 0.0, previous=None), 0.0) == []
    (new,) = w.apply(st("stale", 5.0, reason="read failed"), 5.0)
    assert (new.kind, new.action) == ("incident", "new")
    assert new.body["type"] == "camera" and new.body["camera_state"] == "stale" and new.body["opened_at"] == 5.0
    assert new.body["incident_id"] == camera_incident_id("cam-1", 5.0)
    assert w.apply(st("stale", 15.0, previous=None, since=5.0), 15.0) == []  # a heartbeat: nothing new
    (upd,) = w.apply(st("frozen", 20.0, previous="stale", reason="same frame"), 20.0)
    assert upd.action == "update" and upd.body["camera_state"] == "frozen"
    assert upd.body["incident_id"] == new.body["incident_id"]
    assert w.down() == 1 and [i["incident_id"] for i in w.open_incidents()] == [new.body["incident_id"]]
    (end,) = w.apply(st("live", 30.0, previous="frozen"), 30.0)
    assert end.action == "end" and end.body["ended_at"] == 30.0 and end.body["state"] == "ended"
    assert w.down() == 0 and w.open_incidents() == []
    assert w.find(new.body["incident_id"])["state"] == "ended"


def test_a_quiet_live_camera_and_an_ended_file_are_not_down():
    w = CameraWatch()
    assert w.apply(st("live", 0.0, previous=None), 0.0) == []
    assert w.apply(st("live", 100.0, previous=None), 100.0) == []
    assert w.apply(st("ended", 101.0, previous="live", reason="end of input", camera="file-cam"), 101.0) == []
    assert w.down() == 0
    # hours later without a word from detect: the live camera is silent (down), the ended one is not
    assert [(e.camera_id, e.action) for e in w.tick(10_000.0)] == [("cam-1", "new")]


def test_silence_from_detect_is_down_and_a_status_ends_it():
    w = CameraWatch(silent_factor=3.0, min_silence_s=15.0)
    w.apply(st("live", 0.0, previous=None, heartbeat=10.0), 0.0)
    assert w.tick(29.0) == []
    (new,) = w.tick(30.0)
    assert new.action == "new" and new.body["camera_state"] == "silent" and "no status from detect" in new.body["description"]
    assert w.tick(60.0) == []  # one incident per outage
    (end,) = w.apply(st("live", 61.0, previous=None), 61.0)
    assert end.action == "end"


def test_restored_outages_end_when_the_camera_is_live_and_keep_their_id_while_down():
    """consume restarted during two outages (the store gives back their open camera incidents): one camera
    reports live (its incident ends), the other is still down (same incident, no second `new`), and a third
    never reports again (silent after the usual silence, the same incident updated)."""
    before = CameraWatch()
    opened = {}
    for cam in ("cam-a", "cam-b", "cam-c"):
        before.apply(st("live", 0.0, previous=None, camera=cam), 0.0)
        (new,) = before.apply(st("stale", 5.0, camera=cam), 5.0)
        opened[cam] = new.body
    after = CameraWatch(silent_factor=3.0, min_silence_s=15.0)
    after.restore([dict(b, camera_state=None) for b in opened.values()], now=100.0)  # as read back from the store
    assert after.down() == 3 and {i["incident_id"] for i in after.open_incidents()} == {
        b["incident_id"] for b in opened.values()}
    (end,) = after.apply(st("live", 101.0, previous="stale", camera="cam-a"), 101.0)
    assert (end.action, end.body["incident_id"]) == ("end", opened["cam-a"]["incident_id"])
    assert after.apply(st("stale", 102.0, previous=None, since=5.0, camera="cam-b"), 102.0) == []
    (silent,) = after.tick(116.0)
    assert (silent.camera_id, silent.action, silent.body["camera_state"]) == ("cam-c", "update", "silent")
    assert silent.body["incident_id"] == opened["cam-c"]["incident_id"]
    assert after.down() == 2


def test_an_older_status_than_the_last_is_ignored_and_so_is_history():
    w = CameraWatch(max_age_s=60.0)
    w.apply(st("stale", 10.0), 10.0)
    assert w.apply(st("live", 5.0, previous="stale"), 11.0) == []  # redelivered from before the outage
    assert w.down() == 1
    assert w.apply(st("stale", 100.0, camera="cam-2"), 161.0) == []  # last week's outage, read from the topic
    assert "cam-2" not in w.cameras and w.too_old == 1


def test_expand_dead_letters_a_camera_status_on_its_input_and_goes_on(tmp_path):
    """If detect's status topic is pointed at expand by mistake: one dead letter per status, no crash,
    the detections around it still become tasks."""
    det = detection("cam-1", 1, 1_700_000_000.0, groups=2).model_dump_json()
    status = st("stale", 1_700_000_001.0, reason="read failed").model_dump_json()
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([det, status, det.replace('"frame_id":1', '"frame_id":2')]) + "\n")
    r = subprocess.run([sys.executable, "-m", "hazardctl.cli", "expand", "--in", str(src),
                        "--dlq", str(tmp_path / "dlq.jsonl")], cwd=ROOT, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    tasks = [json.loads(line) for line in r.stdout.decode().splitlines()]
    dead = [json.loads(line) for line in (tmp_path / "dlq.jsonl").read_text().splitlines()]
    assert len(tasks) >= 2 and {t["camera_id"] for t in tasks} == {"cam-1"}
    assert len(dead) == 1 and dead[0]["stage"] == "expand" and dead[0]["line"] == 2
    assert dead[0]["error_class"] == "validation" and json.loads(dead[0]["payload"])["type"] == "camera-status"


class Camera:
    """A reader's face as the publisher sees it: its state and its real CameraHealth."""

    def __init__(self):
        from stages.detect.camera_state import CameraHealth

        self.health = CameraHealth(stale_after_s=2.0)

    @property
    def state(self) -> str:
        return self.health.state


def test_detect_publishes_changes_heartbeats_frozen_and_a_final_ended(tmp_path):
    from hazardctl.transports import open_line_output
    from stages.detect.camera_status import CameraStatusPublisher

    clock = [1000.0]
    out_path = tmp_path / "status.jsonl"
    out = open_line_output(str(out_path))
    pub = CameraStatusPublisher(out, heartbeat_s=10.0, first_grace_s=5.0, clock=lambda: clock[0])
    cams = {"a": Camera(), "never": Camera()}

    def step(dt: float) -> None:
        clock[0] += dt
        pub.pump(cams)

    step(1.0)  # both still connecting: nothing yet
    cams["a"].health.frame(0.0)
    pub.note("a", "transition", None)
    step(0.1)  # a: live
    step(5.0)  # "never" never connected: stale after the grace
    step(5.0)  # a's heartbeat (10 s after its first status)
    cams["a"].health.failed(0.0, "read failed")
    pub.note("a", "transition", None)
    step(0.1)  # a: stale
    pub.note("a", "drop", "repeated")  # the same frame keeps coming
    step(0.1)  # a: frozen
    pub.close(cams, 1.0)
    out.close()
    sent = [CameraStatus.model_validate_json(line) for line in out_path.read_text().splitlines()]
    seen = [(s.camera_id, s.state, s.previous) for s in sent]
    assert seen == [("a", "live", "stale"), ("never", "stale", None), ("a", "live", None), ("a", "stale", "live"),
                    ("a", "frozen", "stale"), ("a", "ended", "frozen"), ("never", "ended", "stale")]
    assert sent[2].since == sent[0].since == 1001.1  # a heartbeat keeps the time the state began
    assert sent[3].reason == "read failed" and sent[4].reason == "the same frame again and again"
    assert sent[5].reason == "detect stopped" and all(s.heartbeat_s == 10.0 for s in sent)


def test_the_shipped_camera_down_rule_fires_after_a_minute_and_resolves(tmp_path):
    """deploy/prometheus/alerts.yml's HazardctlCameraDown evaluated by Prometheus' own rule engine
    (`promtool test rules`, Debian's prometheus package) on a series like consume's."""
    import shutil

    import pytest
    import yaml

    if shutil.which("promtool") is None:
        pytest.fail("promtool missing: bash scripts/install-prometheus.sh")
    rules = ROOT / "deploy" / "prometheus" / "alerts.yml"
    labels = {"stage": "consume", "instance": "ops:9104"}
    series = 'hazardctl_consume_cameras_down{stage="consume", instance="ops:9104"}'
    test = {"rule_files": [str(rules)], "evaluation_interval": "15s", "tests": [{
        "interval": "15s",
        # up at 0, one camera down from 1m to 3m45s (16 samples of 1), two at 4m, none from 5m
        "input_series": [{"series": series, "values": "0x3 1x15 2x3 0x8"}],
        "alert_rule_test": [
            {"eval_time": "1m30s", "alertname": "HazardctlCameraDown", "exp_alerts": []},  # pending, not firing yet
            {"eval_time": "2m30s", "alertname": "HazardctlCameraDown",
             "exp_alerts": [{"exp_labels": {**labels, "severity": "warning"}, "exp_annotations": {
                 "summary": "1 camera(s) down (seen by consume at ops:9104)",
                 "description": _camera_down_rule(rules)["annotations"]["description"]}}]},
            {"eval_time": "6m", "alertname": "HazardctlCameraDown", "exp_alerts": []},  # resolved
        ]}]}
    path = tmp_path / "camera_down_test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    r = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def _camera_down_rule(path) -> dict:
    import yaml

    return next(r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]
                if r.get("alert") == "HazardctlCameraDown")


def test_a_snapshot_with_the_scene_drawn_goes_with_the_next_status_once(tmp_path):
    """detect --snapshot-every: a small frame with the zones and detections drawn (the preview's drawing)
    rides the camera's next status, sent at once; none until it is due again; consume keeps the newest."""
    import base64

    import cv2
    import numpy as np

    from hazardctl.messages import DetectedObject
    from hazardctl.transports import open_line_output
    from hazardctl.zones import SceneConfig, build_scene
    from stages.detect.camera_status import CameraStatusPublisher

    image = cv2.imread(str(ROOT / "tests/data/bus.jpg"))  # 810 x 1080, portrait
    h, w = image.shape[:2]
    scene = build_scene("a", SceneConfig(zones=[{"name": "road", "kind": "roadway",
                                                  "polygon": [[0, 0.6], [1, 0.6], [1, 1], [0, 1]]}]), (w, h))
    bus = DetectedObject(object_id=0, class_name="bus", class_id=5, confidence=0.9, bbox=(20.0, 230.0, 800.0, 750.0))
    clock = [1000.0]
    out = open_line_output(str(tmp_path / "status.jsonl"))
    pub = CameraStatusPublisher(out, heartbeat_s=10.0, snapshot_s=30.0, snapshot_max_side=480, clock=lambda: clock[0])
    cams = {"a": Camera()}
    cams["a"].health.frame(0.0)
    pub.pump(cams)  # the first status: no snapshot yet
    assert pub.wants_snapshot("a")
    pub.offer_snapshot("a", image, scene, [bus], 999.5)
    assert not pub.wants_snapshot("a")
    clock[0] += 0.1
    pub.pump(cams)  # sent at once, not at the next heartbeat
    clock[0] += 10.0
    pub.pump(cams)  # the heartbeat: no image again
    clock[0] += 20.0
    assert pub.wants_snapshot("a")  # due again after --snapshot-every
    out.close()
    sent = [CameraStatus.model_validate_json(x) for x in (tmp_path / "status.jsonl").read_text().splitlines()]
    assert [s.snapshot_jpeg_b64 is not None for s in sent] == [False, True, False]
    snap = sent[1]
    assert (snap.snapshot_size, snap.snapshot_ts) == ((360, 480), 999.5)
    drawn = cv2.imdecode(np.frombuffer(base64.b64decode(snap.snapshot_jpeg_b64), np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == (480, 360, 3)
    plain = cv2.resize(image, (360, 480), interpolation=cv2.INTER_AREA).astype(int)
    # the roadway (lower 40 %) is tinted blue-ish (BGR 200, 90, 30 at 35 %), the rest is not
    road, above = (slice(300, 470), slice(5, 355)), (slice(10, 270), slice(5, 355))
    blue_gain = [(drawn[r].astype(int) - plain[r])[..., 0].mean() for r in (road, above)]
    print("blue gain road, above:", blue_gain)
    assert blue_gain[0] > blue_gain[1] + 8, blue_gain
    w_ = CameraWatch()
    w_.apply(snap, 1000.2)
    assert w_.snapshot("a")[0] == snap.snapshot_jpeg_b64 and w_.views()[0]["snapshot_ts"] == 999.5


def test_operators_ack_and_resolve_camera_incidents_and_a_resolved_outage_stays_quiet():
    w = CameraWatch()
    w.apply(st("live", 0.0, previous=None), 0.0)
    (new,) = w.apply(st("stale", 5.0, reason="read failed"), 5.0)
    iid = new.body["incident_id"]
    assert w.act("cam-nope", "ack", 6.0) == (None, [])
    shown, (ev,) = w.act(iid, "ack", 6.0)
    assert (ev.action, shown["disposition"], shown["acked_at"], shown["state"]) == ("ack", "acked", 6.0, "open")
    shown, (ev,) = w.act(iid, "resolve", 7.0)
    assert (ev.action, shown["disposition"], shown["state"], shown["ended_at"]) == ("resolve", "resolved", "ended", 7.0)
    assert w.open_incidents() == [] and w.down() == 1  # the camera is still down; the operator closed the incident
    assert w.apply(st("stale", 15.0, previous=None, since=5.0), 15.0) == []  # the same outage: no new incident
    assert w.apply(st("frozen", 20.0, previous="stale", since=20.0), 20.0)[0].action == "new"  # another one opens
    w.apply(st("live", 30.0, previous="frozen"), 30.0)
    (again,) = w.apply(st("stale", 40.0, reason="read failed"), 40.0)  # after it was back: a new outage
    assert again.action == "new" and again.body["incident_id"] != iid
