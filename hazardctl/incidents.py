"""What operators see (spec §7) — pure logic: per-camera state, incidents and their lifecycle.

`IncidentBoard.apply(result, now)` folds one risk-assessment result into the board and returns the
events to push; `tick(now)` ends quiet incidents and expires silent groups. No I/O, no clock: the
stage passes the time in, so the rules are tested with a fake clock and a Kafka replay after a
restart rebuilds the same incidents (same ids) by passing each record's own timestamp.

Rules, and why:
- Order is kept per (camera, group): a camera's results arrive interleaved across groups because
  the LLM calls of one frame run concurrently, so only a result *older than the newest one of the
  same group* is late; it is counted and never overwrites newer state.
- Time is the frame's capture time (event time, clamped to `now` so a camera clock running ahead
  cannot keep an incident open), which is what a replay reproduces exactly.
- A task id seen before (at-least-once redelivery, or a re-sent result) changes nothing and emits
  nothing: a bounded LRU remembers recent ids.
- Failed / stale results are not evidence of safety or danger: they are counted, the view keeps its
  last judgement.
- An incident update is pushed only when something an operator sees changes (level, risk types,
  description); the newest crop and times ride along with it and are always in the state.
- Operators act on incidents (`act`): ack keeps one open; resolve and false positive end it at once,
  so the group's next hot result opens a new incident with a new id. `Applied.incident` names the
  incident each result went into and `restore` puts stored incidents back after a restart: what the
  store (stages/consume_store.py) needs, without any I/O here.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Literal

from hazardctl.messages import RISK_LEVELS, RiskAssessmentResult, RiskLevel

LEVEL_RANK: dict[str, int] = {lvl: i for i, lvl in enumerate(RISK_LEVELS)}

Outcome = Literal["applied", "duplicate", "late", "failed"]
EventKind = Literal["camera", "incident"]
EventAction = Literal["new", "update", "end", "removed", "ack", "resolve", "false_positive"]
OperatorAction = Literal["ack", "resolve", "false_positive"]
OPERATOR_ACTIONS: tuple[str, ...] = ("ack", "resolve", "false_positive")
DISPOSITION = {"ack": "acked", "resolve": "resolved", "false_positive": "false_positive"}


def rank(level: str | None) -> int:
    return LEVEL_RANK.get(level or "none", 0)


def incident_id(camera_id: str, group_id: str, opening_task_id: str) -> str:
    """Stable for an incident's life, and the same again when a replay reopens it."""
    digest = hashlib.sha1(f"{camera_id}\x1f{group_id}\x1f{opening_task_id}".encode()).hexdigest()
    return f"inc-{digest[:16]}"


@dataclass(frozen=True, slots=True)
class BoardConfig:
    min_level: RiskLevel = "medium"
    """a result at or above this level opens (or keeps open) an incident"""
    quiet_period_s: float = 30.0
    """an incident ends after this long without a result at or above `min_level`"""
    group_ttl_s: float = 60.0
    """a group without any result for this long leaves its camera's view"""
    camera_ttl_s: float = 3600.0
    """a camera without any result and without groups for this long is forgotten"""
    seen_task_ids: int = 100_000
    """how many task ids are remembered to drop duplicates (≈ 30 min at 50 results/s)"""
    ended_history: int = 200
    """ended incidents kept for /incidents"""
    refresh_s: float = 5.0
    """a camera or incident that got results without a visible change is re-sent this often, so
    its frame, result count and times stay live without an event per result"""

    def __post_init__(self) -> None:
        if self.min_level not in LEVEL_RANK:
            raise ValueError(f"min_level must be one of {', '.join(RISK_LEVELS)}")
        if self.quiet_period_s <= 0 or self.group_ttl_s <= 0:
            raise ValueError("quiet_period_s and group_ttl_s must be > 0")


@dataclass(slots=True)
class GroupState:
    """The latest judgement of one group, as shown in its camera's view."""

    group_id: str
    level: RiskLevel
    risk_types: tuple[str, ...]
    description: str
    confidence: float | None
    frame_id: int
    frame_ts: float
    task_id: str

    def visible(self) -> tuple:
        return self.group_id, self.level, self.risk_types

    def as_dict(self) -> dict:
        return {"group_id": self.group_id, "level": self.level, "risk_types": list(self.risk_types),
                "description": self.description, "confidence": self.confidence,
                "frame_id": self.frame_id, "frame_ts": self.frame_ts, "task_id": self.task_id}


@dataclass(slots=True)
class CameraState:
    """One camera: its groups' latest judgements merged into a camera-level view (max level)."""

    camera_id: str
    groups: dict[str, GroupState] = field(default_factory=dict)
    frame_id: int = -1
    frame_ts: float = 0.0
    last_result_at: float = 0.0
    results: int = 0
    failed: int = 0
    open_incidents: int = 0
    stale_since: float | None = None
    """when the first result that was not pushed arrived (None: what clients have is current)"""

    @property
    def level(self) -> RiskLevel:
        best: RiskLevel = "none"
        for g in self.groups.values():
            if LEVEL_RANK[g.level] > LEVEL_RANK[best]:
                best = g.level
        return best

    def visible(self) -> tuple:
        return self.level, self.open_incidents, tuple(sorted(g.visible() for g in self.groups.values()))

    def as_dict(self) -> dict:
        groups = sorted(self.groups.values(), key=lambda g: (-LEVEL_RANK[g.level], g.group_id))
        return {"camera_id": self.camera_id, "level": self.level, "frame_id": self.frame_id,
                "frame_ts": self.frame_ts, "last_result_at": self.last_result_at, "results": self.results,
                "failed_results": self.failed, "open_incidents": self.open_incidents,
                "groups": [g.as_dict() for g in groups]}


@dataclass(slots=True)
class Incident:
    """A dangerous situation of one group of one camera, from its first hot result to quiet."""

    incident_id: str
    camera_id: str
    group_id: str
    opened_at: float
    level: RiskLevel
    peak_level: RiskLevel
    risk_types: tuple[str, ...]
    description: str
    confidence: float | None
    frame_id: int
    frame_ts: float
    task_id: str
    last_hot_at: float
    updated_at: float
    crop_jpeg_b64: str | None = None
    times: dict = field(default_factory=dict)
    results: int = 1
    ended_at: float | None = None
    stale_since: float | None = None
    """when the first update that was not pushed arrived (None: what clients have is current)"""
    disposition: str | None = None
    """the operator's word on it: None, acked, resolved or false_positive"""
    acked_at: float | None = None
    resolved_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self.ended_at is None

    @classmethod
    def from_dict(cls, d: dict, crop_jpeg_b64: str | None = None) -> "Incident":
        """An incident read back from the store (the keys of `as_dict`)."""
        return cls(incident_id=d["incident_id"], camera_id=d["camera_id"], group_id=d["group_id"],
                   opened_at=d["opened_at"], level=d["level"], peak_level=d["peak_level"],
                   risk_types=tuple(d["risk_types"]), description=d["description"], confidence=d["confidence"],
                   frame_id=int(d["frame_id"]), frame_ts=d["frame_ts"], task_id=d["task_id"],
                   last_hot_at=d["last_hot_at"], updated_at=d["updated_at"], crop_jpeg_b64=crop_jpeg_b64,
                   times=dict(d.get("times") or {}), results=int(d["results"]), ended_at=d.get("ended_at"),
                   disposition=d.get("disposition"), acked_at=d.get("acked_at"), resolved_at=d.get("resolved_at"))

    def visible(self) -> tuple:
        return self.level, self.risk_types, self.description

    def as_dict(self, crop: bool = True) -> dict:
        d = {"incident_id": self.incident_id, "camera_id": self.camera_id, "group_id": self.group_id,
             "state": "open" if self.ended_at is None else "ended", "level": self.level,
             "peak_level": self.peak_level, "risk_types": list(self.risk_types), "description": self.description,
             "confidence": self.confidence, "opened_at": self.opened_at, "updated_at": self.updated_at,
             "last_hot_at": self.last_hot_at, "ended_at": self.ended_at, "frame_id": self.frame_id,
             "frame_ts": self.frame_ts, "task_id": self.task_id, "results": self.results, "times": self.times,
             "disposition": self.disposition, "acked_at": self.acked_at, "resolved_at": self.resolved_at}
        if crop:
            d["crop_jpeg_b64"] = self.crop_jpeg_b64
        return d


@dataclass(frozen=True, slots=True)
class Event:
    """Something to push: a camera view that changed, or an incident's new / update / end."""

    kind: EventKind
    action: EventAction
    camera_id: str
    body: dict


@dataclass(frozen=True, slots=True)
class Applied:
    outcome: Outcome
    events: list[Event]
    incident: Incident | None = None
    """the incident this result was applied to (opened or updated): what the store records"""


_NOTHING: list[Event] = []


class SeenIds:
    """A bounded set with LRU eviction: the task ids whose results were already applied."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def check_and_add(self, task_id: str) -> bool:
        """True when `task_id` was seen before (and refreshes it); else remembers it."""
        ids = self._ids
        if task_id in ids:
            ids.move_to_end(task_id)
            return True
        ids[task_id] = None
        if len(ids) > self.capacity:
            ids.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._ids)


class IncidentBoard:
    """Camera views, open incidents and recent history; `apply` and `tick` return the events."""

    def __init__(self, cfg: BoardConfig = BoardConfig()):
        self.cfg = cfg
        self.cameras: dict[str, CameraState] = {}
        self.open: dict[tuple[str, str], Incident] = {}
        self.ended: deque[Incident] = deque(maxlen=cfg.ended_history)
        self.seen = SeenIds(cfg.seen_task_ids)
        self._min_rank = LEVEL_RANK[cfg.min_level]

    # ---- input ---------------------------------------------------------------------------------

    def apply(self, r: RiskAssessmentResult, now: float) -> Applied:
        # (task, status): a redelivered result is a duplicate, but a task that failed or went stale
        # and was then assessed after all (a scheduler restart) still counts once it is ok
        if self.seen.check_and_add(f"{r.task_id}/{r.status}"):
            return Applied("duplicate", _NOTHING)
        cam = self.cameras.get(r.camera_id)
        before: tuple | None = None  # None: a camera never seen before is always announced
        if cam is None:
            cam = self.cameras[r.camera_id] = CameraState(r.camera_id)
        else:
            before = cam.visible()
        cam.results += 1
        cam.last_result_at = max(cam.last_result_at, now)
        ts = min(r.frame_ts, now)
        group = cam.groups.get(r.group_id)
        outcome: Outcome = "applied"
        if r.status != "ok" or r.level is None:
            cam.failed += 1
            outcome = "failed"
        elif (group is not None and ts < group.frame_ts) or now - ts >= self.cfg.group_ttl_s:
            outcome = "late"
        if outcome != "applied":
            if before is None:
                return Applied(outcome, [Event("camera", "update", cam.camera_id, cam.as_dict())])
            cam.stale_since = cam.stale_since or now
            return Applied(outcome, _NOTHING)

        cam.groups[r.group_id] = GroupState(r.group_id, r.level, tuple(r.risk_types), r.description, r.confidence,
                                            r.frame_id, ts, r.task_id)
        if ts >= cam.frame_ts:
            cam.frame_ts, cam.frame_id = ts, r.frame_id
        events, inc = self._incident_events(r, ts, now)
        cam.open_incidents += sum(1 for e in events if e.action == "new")
        if cam.visible() != before:
            cam.stale_since = None
            events.append(Event("camera", "update", cam.camera_id, cam.as_dict()))
        else:
            cam.stale_since = cam.stale_since or now
        return Applied("applied", events, inc)

    def _incident_events(self, r: RiskAssessmentResult, ts: float,
                         now: float) -> tuple[list[Event], Incident | None]:
        key = (r.camera_id, r.group_id)
        hot = LEVEL_RANK[r.level] >= self._min_rank
        inc = self.open.get(key)
        times = r.times.model_dump(exclude_none=True)
        ended: list[Event] = []
        if inc is not None and ts - inc.last_hot_at >= self.cfg.quiet_period_s:
            # already quiet at this result's time (the tick has not run yet, or a replay): end it first,
            # so the lifecycle depends only on the group's own results and a replay rebuilds the same ids
            ended.append(self._end(inc))
            inc = None
        if inc is None:
            if not hot or now - ts >= self.cfg.quiet_period_s:  # too old to still be an incident
                return ended, None
            inc = Incident(incident_id(r.camera_id, r.group_id, r.task_id), r.camera_id, r.group_id, opened_at=ts,
                           level=r.level, peak_level=r.level, risk_types=tuple(r.risk_types),
                           description=r.description, confidence=r.confidence, frame_id=r.frame_id, frame_ts=ts,
                           task_id=r.task_id, last_hot_at=ts, updated_at=ts, crop_jpeg_b64=r.crop_jpeg_b64,
                           times=times)
            self.open[key] = inc
            return ended + [Event("incident", "new", r.camera_id, inc.as_dict())], inc
        if ts < inc.frame_ts:
            return ended, None
        before = inc.visible()
        inc.level, inc.risk_types, inc.description = r.level, tuple(r.risk_types), r.description
        inc.confidence, inc.frame_id, inc.frame_ts, inc.task_id = r.confidence, r.frame_id, ts, r.task_id
        inc.updated_at, inc.times = ts, times
        inc.results += 1
        if r.crop_jpeg_b64:
            inc.crop_jpeg_b64 = r.crop_jpeg_b64
        if hot:
            inc.last_hot_at = max(inc.last_hot_at, ts)
            if LEVEL_RANK[r.level] > LEVEL_RANK[inc.peak_level]:
                inc.peak_level = r.level
        if inc.visible() == before:
            inc.stale_since = inc.stale_since or now
            return [], inc
        inc.stale_since = None
        return [Event("incident", "update", r.camera_id, inc.as_dict())], inc

    # ---- time ----------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Event]:
        """End quiet incidents, drop silent groups, forget long-silent cameras."""
        cfg = self.cfg
        events: list[Event] = []
        touched: dict[str, tuple] = {}
        for inc in list(self.open.values()):
            if now - inc.last_hot_at >= cfg.quiet_period_s:
                cam = self.cameras.get(inc.camera_id)
                if cam is not None:
                    touched.setdefault(cam.camera_id, cam.visible())
                events.append(self._end(inc))
        for cid, cam in list(self.cameras.items()):
            stale = [gid for gid, g in cam.groups.items() if now - g.frame_ts >= cfg.group_ttl_s]
            if stale:
                touched.setdefault(cid, cam.visible())
                for gid in stale:
                    del cam.groups[gid]
            if not cam.groups and not cam.open_incidents and now - cam.last_result_at >= cfg.camera_ttl_s:
                del self.cameras[cid]
                touched.pop(cid, None)
                events.append(Event("camera", "removed", cid, {"camera_id": cid}))
        for cid, before in touched.items():
            cam = self.cameras[cid]
            if cam.visible() != before:
                cam.stale_since = None
                events.append(Event("camera", "update", cid, cam.as_dict()))
        # results that changed nothing visible: re-send now and then so frame, counts and times stay live
        for inc in self.open.values():
            if inc.stale_since is not None and now - inc.stale_since >= cfg.refresh_s:
                inc.stale_since = None
                events.append(Event("incident", "update", inc.camera_id, inc.as_dict()))
        for cid, cam in self.cameras.items():
            if cam.stale_since is not None and now - cam.stale_since >= cfg.refresh_s:
                cam.stale_since = None
                events.append(Event("camera", "update", cid, cam.as_dict()))
        return events

    def _end(self, inc: Incident, at: float | None = None) -> Event:
        # when it became quiet, not when we looked (or when an operator closed it)
        inc.ended_at = inc.last_hot_at + self.cfg.quiet_period_s if at is None else at
        del self.open[(inc.camera_id, inc.group_id)]
        self.ended.append(inc)
        cam = self.cameras.get(inc.camera_id)
        if cam is not None:
            cam.open_incidents -= 1
        return Event("incident", "end", inc.camera_id, inc.as_dict())

    # ---- operators and restarts ----------------------------------------------------------------

    def act(self, incident_id: str, action: OperatorAction, now: float) -> tuple[Incident | None, list[Event]]:
        """An operator's ack / resolve / false positive on an incident the board holds (open or recently
        ended): (the incident, the events to push), or (None, []) when the board does not hold it.

        Resolve and false positive end an open incident at once, so the group's next hot result opens
        a new incident (a new id: the id comes from the opening task); ack keeps it open. A later
        resolve or false positive overrides an ack; an ack never overrides them."""
        inc = self.find_incident(incident_id)
        if inc is None:
            return None, []
        extra: list[Event] = []
        if action == "ack":
            inc.acked_at = inc.acked_at or now
            inc.disposition = inc.disposition or "acked"
        else:
            inc.disposition, inc.resolved_at = DISPOSITION[action], now
            if inc.is_open:
                cam = self.cameras.get(inc.camera_id)
                before = cam.visible() if cam is not None else None
                self._end(inc, at=now)
                if cam is not None and cam.visible() != before:
                    cam.stale_since = None
                    extra.append(Event("camera", "update", cam.camera_id, cam.as_dict()))
        inc.stale_since = None
        return inc, [Event("incident", action, inc.camera_id, inc.as_dict()), *extra]

    def restore(self, open_incidents: list[Incident], ended: list[Incident]) -> None:
        """Put incidents read back from the store on the board (a restart): open ones keep their ids and
        take their group's next results (their group's last judgement is its camera's view until
        then); ended ones (oldest first) fill the recent history."""
        for inc in ended:
            self.ended.append(inc)
        for inc in open_incidents:
            self.open[(inc.camera_id, inc.group_id)] = inc
            cam = self.cameras.get(inc.camera_id)
            if cam is None:
                cam = self.cameras[inc.camera_id] = CameraState(inc.camera_id)
            cam.open_incidents += 1
            cam.last_result_at = max(cam.last_result_at, inc.updated_at)
            if inc.frame_ts >= cam.frame_ts:
                cam.frame_ts, cam.frame_id = inc.frame_ts, inc.frame_id
            g = cam.groups.get(inc.group_id)
            if g is None or g.frame_ts < inc.frame_ts:
                cam.groups[inc.group_id] = GroupState(inc.group_id, inc.level, inc.risk_types, inc.description,
                                                      inc.confidence, inc.frame_id, inc.frame_ts, inc.task_id)

    # ---- views ---------------------------------------------------------------------------------

    def snapshot(self, cameras: frozenset[str] | None = None, ended: int = 10) -> dict:
        """Camera views, open incidents and the last `ended` ended ones (all, or those of `cameras`)."""
        cams = [c for c in self.cameras.values() if cameras is None or c.camera_id in cameras]
        incs = [i for i in self.open.values() if cameras is None or i.camera_id in cameras]
        cams.sort(key=lambda c: c.camera_id)
        incs.sort(key=lambda i: i.opened_at)
        recent: list[Incident] = []
        for inc in reversed(self.ended):
            if len(recent) >= ended:
                break
            if cameras is None or inc.camera_id in cameras:
                recent.append(inc)
        return {"cameras": [c.as_dict() for c in cams], "incidents": [i.as_dict() for i in incs],
                "ended": [i.as_dict() for i in recent]}

    def incidents(self, open_only: bool = False, camera_id: str | None = None) -> list[Incident]:
        """Open incidents (oldest first), then recently ended ones (newest first) unless `open_only`."""
        items: list[Incident] = sorted(self.open.values(), key=lambda i: i.opened_at)
        if not open_only:
            items += reversed(self.ended)
        return [i for i in items if camera_id is None or i.camera_id == camera_id]

    def find_incident(self, inc_id: str) -> Incident | None:
        for inc in self.open.values():
            if inc.incident_id == inc_id:
                return inc
        for inc in self.ended:
            if inc.incident_id == inc_id:
                return inc
        return None


def result_summary(r: RiskAssessmentResult, outcome: Outcome, received_at: float) -> dict:
    """A result as kept in the recent-results cache: everything but the crop (bounded memory)."""
    return {"task_id": r.task_id, "camera_id": r.camera_id, "group_id": r.group_id, "frame_id": r.frame_id,
            "frame_ts": r.frame_ts, "status": r.status, "level": r.level, "risk_types": r.risk_types,
            "description": r.description, "confidence": r.confidence, "key_name": r.key_name, "model": r.model,
            "attempts": r.attempts, "error_class": r.error_class, "outcome": outcome, "received_at": received_at,
            "times": r.times.model_dump(exclude_none=True)}


class RecentResults:
    """The last N results (without crops), newest last: what /results and /cameras/{id} show."""

    def __init__(self, capacity: int = 1000):
        self._items: deque[dict] = deque(maxlen=capacity)

    def add(self, summary: dict) -> None:
        self._items.append(summary)

    def latest(self, camera_id: str | None = None, limit: int = 100) -> list[dict]:
        out: list[dict] = []
        for item in reversed(self._items):
            if camera_id is None or item["camera_id"] == camera_id:
                out.append(item)
                if len(out) >= limit:
                    break
        return out

    def __len__(self) -> int:
        return len(self._items)
