"""Camera health as operators see it (issue 18.6) — pure logic: a `camera` incident while a camera is down.

`CameraWatch.apply(status, now)` folds one CameraStatus from detect in; `tick(now)` notices a
camera whose detect went silent. Both return incident events shaped like the board's
(hazardctl/incidents.py), with `type: "camera"`, so the WebSocket push, the page and the alert
sinks carry them unchanged. No I/O, no clock.

Rules, and why:
- stale, frozen and blank are *down*: the camera gives nothing usable, which is not the same as a
  quiet camera (frames arrive, nothing dangerous in them). One incident per outage: it opens on
  the first down status, is updated when the kind of outage changes (stale → frozen), and ends when
  the camera is live again.
- ended is not down: a file finished, or detect stopped on purpose; an open incident ends.
- A camera whose statuses stop (detect killed, its host gone) is down once nothing came for
  `silent_factor` × its heartbeat: state `silent`.
- Statuses are applied in order of their `ts`; an older one than the last seen is ignored
  (redelivery after a restart), and so is one older than `max_age_s` (a new consumer reading a
  topic's history must not replay last week's outages as alerts: the next heartbeat says the truth).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from hazardctl.incidents import DISPOSITION, Event
from hazardctl.messages import CameraStatus

DOWN = frozenset({"stale", "frozen", "blank", "silent"})
INCIDENT_TYPE = "camera"


def camera_incident_id(camera_id: str, since: float) -> str:
    """Stable for one outage: the same status replayed reopens the same id."""
    digest = hashlib.sha1(f"camera\x1f{camera_id}\x1f{since:.3f}".encode()).hexdigest()
    return f"cam-{digest[:16]}"


@dataclass(slots=True)
class CameraHealthView:
    camera_id: str
    state: str
    reason: str
    since: float
    last_status_at: float
    """`ts` of the newest status applied"""
    heard_at: float
    """when (our clock) the newest status arrived"""
    heartbeat_s: float | None = None
    last_frame_ts: float | None = None
    incident: dict | None = None
    ended_incidents: list[dict] = field(default_factory=list)
    snapshot: tuple[str, tuple[int, int], float] | None = None
    """the newest snapshot detect sent: (JPEG base64, (width, height), capture time)"""
    muted_since: float | None = None
    """an operator resolved the outage that began then: no new incident for it (a new outage opens one)"""

    def as_dict(self) -> dict:
        return {"camera_id": self.camera_id, "state": self.state, "reason": self.reason, "since": self.since,
                "last_status_at": self.last_status_at, "last_frame_ts": self.last_frame_ts,
                "down": self.state in DOWN, "incident_id": self.incident["incident_id"] if self.incident else None,
                "snapshot_ts": self.snapshot[2] if self.snapshot else None}


class CameraWatch:
    def __init__(self, silent_factor: float = 3.0, min_silence_s: float = 15.0, max_age_s: float = 60.0):
        self.silent_factor = silent_factor
        self.min_silence_s = min_silence_s
        self.max_age_s = max_age_s
        self.too_old = 0
        self.cameras: dict[str, CameraHealthView] = {}

    def apply(self, s: CameraStatus, now: float) -> list[Event]:
        if now - s.ts > self.max_age_s:
            self.too_old += 1
            return []
        cam = self.cameras.get(s.camera_id)
        if cam is None:
            cam = self.cameras[s.camera_id] = CameraHealthView(s.camera_id, s.state, s.reason, s.since, s.ts, now)
        elif s.ts < cam.last_status_at:
            return []
        else:
            cam.last_status_at = s.ts
            cam.heard_at = now
        cam.heartbeat_s = s.heartbeat_s
        cam.last_frame_ts = s.last_frame_ts
        if s.snapshot_jpeg_b64:
            cam.snapshot = (s.snapshot_jpeg_b64, s.snapshot_size or (0, 0), s.snapshot_ts or s.ts)
        if s.state != cam.state or s.previous is not None:
            cam.state, cam.reason = s.state, s.reason
            cam.since = s.since
        return self._incident_events(cam, now)

    def restore(self, incidents: list[dict], now: float) -> None:
        """Open camera incidents read back from the store after a restart. Each camera is taken as down as
        stored, heard now: its next status decides (live ends the incident; the same outage keeps its id),
        and if none comes the silence rule applies as to any camera."""
        for inc in incidents:
            if inc["camera_id"] in self.cameras:
                continue
            state = inc.get("camera_state") or _state_of(inc)
            cam = CameraHealthView(inc["camera_id"], state, "", inc["opened_at"], 0.0, now,
                                   heartbeat_s=self.min_silence_s / self.silent_factor,
                                   last_frame_ts=inc.get("frame_ts"))
            cam.incident = {**inc, "camera_state": state, "type": INCIDENT_TYPE}
            self.cameras[cam.camera_id] = cam

    def act(self, incident_id: str, action: str, now: float) -> tuple[dict | None, list[Event]]:
        """An operator's ack / resolve / false positive on a camera incident this watch holds: (the
        incident, its event), or (None, []). Ack keeps it open (the operator knows); resolve and false
        positive end it, and the same outage opens no new one (the camera's next outage does)."""
        for cam in self.cameras.values():
            for inc in ([cam.incident] if cam.incident else []) + cam.ended_incidents:
                if inc["incident_id"] != incident_id:
                    continue
                if action == "ack":
                    inc["disposition"] = inc.get("disposition") or "acked"
                    inc["acked_at"] = inc.get("acked_at") or now
                else:
                    inc.update(disposition=DISPOSITION[action], resolved_at=now, updated_at=now)
                    if inc is cam.incident:
                        inc.update(state="ended", ended_at=now)
                        cam.incident, cam.muted_since = None, cam.since
                        cam.ended_incidents = (cam.ended_incidents + [inc])[-10:]
                return dict(inc), [Event("incident", action, cam.camera_id, dict(inc))]
        return None, []

    def tick(self, now: float) -> list[Event]:
        events: list[Event] = []
        for cam in self.cameras.values():
            if cam.state in ("ended", "silent") or not cam.heartbeat_s:
                continue
            silence = max(self.min_silence_s, self.silent_factor * cam.heartbeat_s)
            if now - cam.heard_at >= silence:
                cam.state = "silent"
                cam.reason = f"no status from detect for {now - cam.heard_at:.0f}s (detect stopped or unreachable)"
                cam.since = cam.heard_at
                events += self._incident_events(cam, now)
        return events

    def _incident_events(self, cam: CameraHealthView, now: float) -> list[Event]:
        inc = cam.incident
        if cam.state in DOWN:
            if inc is None:
                if cam.muted_since == cam.since:
                    return []  # an operator resolved this outage
                cam.incident = inc = _incident(cam, now)
                return [Event("incident", "new", cam.camera_id, dict(inc))]
            if inc["camera_state"] != cam.state:
                inc.update(camera_state=cam.state, description=_describe(cam), updated_at=now,
                           risk_types=[f"camera {cam.state}"], results=inc["results"] + 1)
                return [Event("incident", "update", cam.camera_id, dict(inc))]
            return []
        cam.muted_since = None
        if inc is not None:
            inc.update(state="ended", ended_at=cam.since if cam.state == "live" else now, updated_at=now,
                       description=_describe(cam, back=True))
            cam.incident = None
            cam.ended_incidents = (cam.ended_incidents + [inc])[-10:]
            return [Event("incident", "end", cam.camera_id, dict(inc))]
        return []

    def open_incidents(self, cameras: frozenset[str] | None = None) -> list[dict]:
        return [dict(c.incident) for c in self.cameras.values()
                if c.incident is not None and (cameras is None or c.camera_id in cameras)]

    def find(self, incident_id: str) -> dict | None:
        for c in self.cameras.values():
            for inc in ([c.incident] if c.incident else []) + c.ended_incidents:
                if inc["incident_id"] == incident_id:
                    return dict(inc)
        return None

    def snapshot(self, camera_id: str) -> tuple[str, tuple[int, int], float] | None:
        cam = self.cameras.get(camera_id)
        return cam.snapshot if cam is not None else None

    def down(self) -> int:
        """Cameras down now (also read by the metrics thread: a snapshot of the values, never a live iteration)."""
        return sum(1 for c in list(self.cameras.values()) if c.state in DOWN)

    def views(self, cameras: frozenset[str] | None = None) -> list[dict]:
        return [c.as_dict() for c in sorted(self.cameras.values(), key=lambda c: c.camera_id)
                if cameras is None or c.camera_id in cameras]


def _state_of(inc: dict) -> str:
    """The outage kind of a stored camera incident: its risk type reads `camera <state>`."""
    for r in inc.get("risk_types") or ():
        kind = r.removeprefix("camera ")
        if kind in DOWN:
            return kind
    return "silent"


def _describe(cam: CameraHealthView, back: bool = False) -> str:
    if back:
        return f"camera {cam.state} again ({cam.reason})" if cam.reason else f"camera {cam.state} again"
    return f"camera {cam.state}: {cam.reason}" if cam.reason else f"camera {cam.state}"


def _incident(cam: CameraHealthView, now: float) -> dict:
    """An incident body with the fields of a scene incident (incidents.Incident.as_dict), typed `camera`."""
    return {"incident_id": camera_incident_id(cam.camera_id, cam.since), "type": INCIDENT_TYPE,
            "camera_id": cam.camera_id, "group_id": "camera", "state": "open", "camera_state": cam.state,
            "level": "none", "peak_level": "none", "risk_types": [f"camera {cam.state}"],
            "description": _describe(cam), "confidence": None, "opened_at": cam.since, "updated_at": now,
            "last_hot_at": now, "ended_at": None, "frame_id": -1, "frame_ts": cam.last_frame_ts or cam.since,
            "task_id": None, "results": 1, "times": {}}
