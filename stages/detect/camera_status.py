"""detect's camera health messages (issue 18.6): a CameraStatus on every change of state and as a heartbeat.

The readers report transitions and dropped frames from their own threads (`note`); the stage's loop
calls `pump` to send what changed and the heartbeats, so only the loop touches the output. What is
sent: live; stale (reads fail, the stream cannot be opened, or nothing usable for a while), refined
to frozen (the frames that still come are the same frame) or blank (black/uniform) from the drops
of the last seconds; ended (a file finished, or detect stopping: said once, so consume does not
take a deliberate stop for an outage). A camera that never connected is reported stale after
`first_grace_s`; until then "connecting" is not an outage. Every `snapshot_s` a small frame with the
camera's scene and detections drawn on it goes with the next status (at once), so the page can show
what the camera sees and whether the zones fit.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from hazardctl.messages import CameraStatus
from hazardctl.scene_draw import Detection, draw
from hazardctl.zones import Scene

log = logging.getLogger("hazardctl.detect")

#: how recent a blank/repeated drop must be to call a stale camera blank/frozen
DROP_WINDOW_S = 3.0
REFINED = {"blank": "blank", "repeated": "frozen"}


@dataclass(frozen=True)
class Snapshot:
    jpeg_b64: str
    size: tuple[int, int]
    ts: float


def render_snapshot(image: np.ndarray, scene: Scene | None, objects: list, ts: float, max_side: int,
                    quality: int = 70) -> Snapshot:
    """The frame made small (longest side `max_side`), with the scene and the detections drawn on it, as
    `hazardctl zones preview` draws them."""
    h, w = image.shape[:2]
    f = min(1.0, max_side / max(h, w))
    small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA) \
        if f < 1.0 else image
    if scene is not None:
        dets = [Detection(o.class_name, o.confidence, tuple(v * f for v in o.bbox)) for o in objects]
        small, _ = draw(small, scene, dets)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return Snapshot(base64.b64encode(buf.tobytes()).decode(), (small.shape[1], small.shape[0]), ts)


class CameraStatusPublisher:
    def __init__(self, output, *, heartbeat_s: float = 10.0, first_grace_s: float = 10.0, snapshot_s: float = 0.0,
                 snapshot_max_side: int = 480, clock=time.time):
        self.output = output
        self.heartbeat_s = heartbeat_s
        self.first_grace_s = first_grace_s
        self.snapshot_s = snapshot_s
        self.snapshot_max_side = snapshot_max_side
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self._drops: dict[str, tuple[str, float]] = {}
        self._dirty: set[str] = set()
        self._sent: dict[str, tuple[str, float, float]] = {}  # camera → (state, since, last sent)
        self._snapshots: dict[str, Snapshot] = {}  # made, not sent yet
        self._snapshot_due: dict[str, float] = {}
        self.sent = 0
        self.snapshots = 0

    def wants_snapshot(self, camera_id: str) -> bool:
        """From the stage's loop, per analysed frame: is a snapshot of this camera due (cheap)?"""
        return (self.output is not None and self.snapshot_s > 0
                and self.clock() >= self._snapshot_due.get(camera_id, 0.0))

    def offer_snapshot(self, camera_id: str, image: np.ndarray, scene: Scene | None, objects: list,
                       ts: float) -> None:
        """From the stage's loop: draw this frame now; it goes with the camera's next status (sent at once)."""
        self._snapshot_due[camera_id] = self.clock() + self.snapshot_s
        try:
            snap = render_snapshot(image, scene, objects, ts, self.snapshot_max_side)
        except Exception as e:  # noqa: BLE001 — a snapshot never stops the cameras
            log.warning("detect: snapshot of %s not made (%s)", camera_id, e)
            return
        with self._lock:
            self._snapshots[camera_id] = snap
            self._dirty.add(camera_id)

    def note(self, camera_id: str, kind: str, value: object) -> None:
        """From a reader thread: a drop or a transition (cheap; the loop sends)."""
        if kind == "drop" and str(value) in REFINED:
            with self._lock:
                self._drops[camera_id] = (str(value), self.clock())
                self._dirty.add(camera_id)
        elif kind == "transition":
            with self._lock:
                self._dirty.add(camera_id)

    def _state(self, camera_id: str, reader_state: str, now: float) -> str:
        if reader_state != "stale":
            return reader_state
        drop = self._drops.get(camera_id)
        if drop is not None and now - drop[1] <= DROP_WINDOW_S:
            return REFINED[drop[0]]
        return "stale"

    def pump(self, readers: Mapping[str, object], final: bool = False) -> None:
        """Send changes and due heartbeats; `readers`: camera id → its CameraReader (state, health)."""
        if self.output is None:
            return
        now = self.clock()
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            states = {cid: self._state(cid, "ended" if final else r.state, now) for cid, r in readers.items()}
        for cid, reader in readers.items():
            state = states[cid]
            last = self._sent.get(cid)
            if last is None:
                if state == "stale" and now - self.started < self.first_grace_s and not final:
                    continue  # still connecting
                self._send(cid, reader, state, None if state != "live" else "stale", now, now)
            elif state != last[0]:
                self._send(cid, reader, state, last[0], now, now)
            elif cid in dirty or now - last[2] >= self.heartbeat_s:
                if cid in dirty or state != "ended":
                    self._send(cid, reader, state, None, last[1], now)
        self.output.poll(0)

    def _send(self, cid: str, reader, state: str, previous: str | None, since: float, now: float) -> None:
        health = getattr(reader, "health", None)
        reason = "detect stopped" if state == "ended" and previous and getattr(reader, "state", "") != "ended" \
            else (getattr(health, "reason", "") or "")
        if state in ("frozen", "blank"):
            reason = {"frozen": "the same frame again and again", "blank": "black or uniform frames"}[state]
        last_frame = getattr(health, "last_frame_at", None)
        with self._lock:
            snap = self._snapshots.pop(cid, None)
        msg = CameraStatus(camera_id=cid, state=state, previous=previous, reason=reason[:500], since=since, ts=now,
                           last_frame_ts=None if last_frame is None else now - (time.monotonic() - last_frame),
                           reconnects=getattr(health, "reconnects", 0), heartbeat_s=self.heartbeat_s,
                           **({} if snap is None else {"snapshot_jpeg_b64": snap.jpeg_b64,
                                                       "snapshot_size": snap.size, "snapshot_ts": snap.ts}))
        self.snapshots += snap is not None
        self._sent[cid] = (state, since, now)
        self.sent += 1
        try:
            self.output.send(msg.model_dump_json().encode(), cid.encode())
        except Exception as e:  # noqa: BLE001 — health reporting never stops the cameras
            log.warning("detect: camera status for %s not sent (%s)", cid, e)

    def close(self, readers: Mapping[str, object], timeout: float) -> None:
        """detect stops: every camera is `ended` (said once), then flush."""
        if self.output is None:
            return
        self.pump(readers, final=True)
        self.output.flush(timeout)
