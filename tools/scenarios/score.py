"""Score expand's tasks against a scenario's labels (pure): recall, onset → task delay, calls, false alarms.

Definitions (docs/gate.md "bench-gate"):

* A labelled hazard is **covered** when some task whose group holds both of its road users (their
  MOT ids, mapped back to actors through labels.json, so an id switch does not hide them) was
  built from a frame captured between the hazard's onset and its conflict point, inclusive, or is
  a `suspect` task from a frame less than one frame interval before the onset: the estimated TTC
  crossed the line a frame before the true one (noise, or the onset falling just after a frame),
  an early warning for the right pair, not a miss. Its delay counts from when it was built, and
  0 when that was before the onset. `strict_delay_s` keeps the window-only figure.
* **onset → task** of a covered hazard = the wall-clock time expand built that first covering
  task (`times.expand`) − the moment of onset (camera start + onset_s). The replay runs in real
  time, so this holds everything a live camera would see: waiting for the next analysed frame
  (up to 1/fps), detect (tracking, kinematics, grouping, cues, serialisation), the pipe, expand.
  Split as frame wait (capture − onset) + processing (expand − capture).
* **calls per camera-second** = tasks / the scenario's length (frames / fps).
* a **false suspect** is a task with reason `suspect` in a calm scenario (no possible conflict).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import orjson


@dataclass(frozen=True)
class TaskSeen:
    camera_id: str
    frame_id: int
    frame_ts: float
    reason: str
    expand_ts: float | None
    track_ids: frozenset[int]


def read_tasks(path: Path) -> list[TaskSeen]:
    out = []
    for line in Path(path).read_bytes().splitlines():
        if not line.strip():
            continue
        t = orjson.loads(line)
        out.append(TaskSeen(t["camera_id"], t["frame_id"], t["frame_ts"], t["reason"], t.get("times", {}).get("expand"),
                            frozenset(o["track_id"] for o in t.get("objects", ()) if o.get("track_id") is not None)))
    return out


def camera_starts(detections: Path, fps: dict[str, float]) -> dict[str, float]:
    """Each camera's clock start (capture time of MOT frame 1), from its detection results:
    frame k is captured at start + (k − 1) / fps."""
    starts: dict[str, float] = {}
    for line in Path(detections).read_bytes().splitlines():
        if not line.strip():
            continue
        d = orjson.loads(line)
        cam = d.get("camera_id")
        if cam in fps and cam not in starts:
            starts[cam] = d["frame_ts"] - (d["frame_id"] - 1) / fps[cam]
    return starts


def frames_seen(detections: Path, labels: dict[str, dict]) -> dict[str, list[tuple[float, frozenset[int]]]]:
    """Per camera, each published frame's capture time and the actors detect reported on it."""
    out: dict[str, list[tuple[float, frozenset[int]]]] = {}
    actor_of = {cam: {int(k): v for k, v in lab["mot_ids"].items()} for cam, lab in labels.items()}
    for line in Path(detections).read_bytes().splitlines():
        if not line.strip():
            continue
        d = orjson.loads(line)
        ids = actor_of.get(d.get("camera_id"))
        if ids is not None:
            out.setdefault(d["camera_id"], []).append(
                (d["frame_ts"], frozenset(ids.get(o.get("track_id")) for o in d.get("objects", ()))))
    return out


@dataclass
class HazardOutcome:
    scenario: str
    kind: str
    onset_s: float
    conflict_s: float
    covered: bool
    reason: str | None = None
    delay_s: float | None = None
    frame_wait_s: float | None = None
    processing_s: float | None = None
    seen_at_onset: bool | None = None
    """both road users were on the scene's first frame at or after the onset (False: the detector
    noise missed one there, or detect, behind real time on a busy machine, skipped that frame; no
    gate can send what detect did not publish)"""
    suspect_before_s: float | None = None
    """a `suspect` task for the pair came from the last frame before the onset, this long before it
    (the estimated TTC crossed the line a frame ahead of the true one): it covers the hazard"""
    strict_delay_s: float | None = None
    """onset → the first covering task from a frame at or after the onset (early suspects not counted)"""


def hazard_outcomes(name: str, labels: dict, tasks: list[TaskSeen], start: float,
                    frames: list[tuple[float, frozenset[int]]] | None = None) -> list[HazardOutcome]:
    """One outcome per labelled hazard of a scenario, from the tasks of its camera."""
    actor_of = {int(k): v for k, v in labels["mot_ids"].items()}
    mine = sorted((t for t in tasks if t.camera_id == name), key=lambda t: (t.frame_ts, t.expand_ts or 0.0))
    out = []
    for h in labels["hazards"]:
        pair = set(h["actors"])
        onset, conflict = start + h["onset_s"], start + h["conflict_s"]
        hit = next((t for t in mine if onset - 1e-6 <= t.frame_ts <= conflict + 1e-6
                    and pair <= {actor_of.get(i) for i in t.track_ids}), None)
        period = 1.0 / labels["fps"]
        early = [t for t in mine if t.reason == "suspect" and onset - period + 1e-6 < t.frame_ts < onset - 1e-6
                 and pair <= {actor_of.get(i) for i in t.track_ids}]
        strict = None if hit is None or hit.expand_ts is None else hit.expand_ts - onset
        if early:
            hit = early[0]
        o = HazardOutcome(name, h["kind"], h["onset_s"], h["conflict_s"], hit is not None, strict_delay_s=strict)
        if early:
            o.suspect_before_s = onset - early[0].frame_ts
        if frames is not None:  # the scene's first frame at or after the onset, if detect published it
            due = start + math.ceil(h["onset_s"] * labels["fps"] - 1e-6) / labels["fps"]
            first = next((seen for ts, seen in frames if abs(ts - due) < 1e-3), None)
            o.seen_at_onset = first is not None and pair <= first
        if hit is not None:
            o.reason = hit.reason
            o.frame_wait_s = hit.frame_ts - onset  # negative for an early suspect
            if hit.expand_ts is not None:
                o.processing_s = hit.expand_ts - hit.frame_ts
                o.delay_s = max(0.0, hit.expand_ts - onset)
        out.append(o)
    return out


@dataclass
class ScenarioFigures:
    name: str
    kind: str
    duration_s: float
    tasks: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    hazards: list[HazardOutcome] = field(default_factory=list)

    @property
    def calls_per_s(self) -> float:
        return self.tasks / self.duration_s if self.duration_s else 0.0

    @property
    def suspects(self) -> int:
        return self.reasons.get("suspect", 0)


def scenario_figures(name: str, labels: dict, tasks: list[TaskSeen], start: float | None,
                     frames: list[tuple[float, frozenset[int]]] | None = None) -> ScenarioFigures:
    mine = [t for t in tasks if t.camera_id == name]
    f = ScenarioFigures(name, labels["kind"], labels["frames"] / labels["fps"], len(mine))
    for t in mine:
        f.reasons[t.reason] = f.reasons.get(t.reason, 0) + 1
    if labels["hazards"]:
        if start is None:  # the camera published nothing: every hazard missed
            f.hazards = [HazardOutcome(name, h["kind"], h["onset_s"], h["conflict_s"], False) for h in labels["hazards"]]
        else:
            f.hazards = hazard_outcomes(name, labels, tasks, start, frames)
    return f


def pct(values: list[float], p: float) -> float | None:
    """Exact percentile, nearest rank (as the loadtest reports them)."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


@dataclass
class GateFigures:
    """One gate's figures over the whole library."""

    gate: str
    scenarios: list[ScenarioFigures]

    def hazards(self) -> list[HazardOutcome]:
        return [h for s in self.scenarios for h in s.hazards]

    @property
    def recall(self) -> float | None:
        hz = self.hazards()
        return sum(h.covered for h in hz) / len(hz) if hz else None

    def delay(self, p: float, what: str = "delay_s", seen_only: bool = False) -> float | None:
        """Percentile over the covered hazards (`seen_only`: those whose road users were both detected on
        the first frame after the onset; `what="strict_delay_s"`: early suspects not counted)."""
        values = [getattr(h, what) for h in self.hazards() if h.seen_at_onset or not seen_only]
        return pct([v for v in values if v is not None], p)

    @property
    def missed_at_onset(self) -> int:
        return sum(h.seen_at_onset is False for h in self.hazards())

    def calm(self) -> list[ScenarioFigures]:
        return [s for s in self.scenarios if s.kind == "calm"]

    @property
    def calm_hours(self) -> float:
        return sum(s.duration_s for s in self.calm()) / 3600.0

    @property
    def false_suspects_per_hour(self) -> float | None:
        h = self.calm_hours
        return sum(s.suspects for s in self.calm()) / h if h else None
