"""Zone cues: what a road user's place in the scene says about danger (pure; the clock is passed in).

Per camera, `SceneCues(scene).observe(objects, ts, width, height) -> FrameZones` puts each object in
its zones (hazardctl/zones.py: bottom-centre anchor) and raises named flags, which detect adds to
`GroupCues.flags` and the gate treats as `suspect` (hazardctl/gating.py, `--suspect-flags`):

* `pedestrian_in_roadway` — a person in a roadway zone and in no crosswalk zone;
* `vehicle_in_crosswalk` — a vehicle in a crosswalk zone while a pedestrian is in the same crosswalk
  (both are flagged);
* `wrong_way` — a vehicle in a roadway with a lane direction, moving (≥ `wrong_way_min_px_s`, or
  `wrong_way_min_kmh` when calibrated) with a heading more than `wrong_way_angle_deg` from the
  lane's arrow, for `wrong_way_frames` analysed frames in a row (one frame of jitter is not enough);
* `stopped_in_roadway` — a vehicle in a roadway stopped for ≥ `stopped_s` seconds (kinematics'
  stopped time; when calibrated, slower than `stopped_kmh` on the ground).

With a calibration each tracked object with motion also gets its ground speed in km/h
(`Motion.speed_kmh`): a least-squares line through its ground points (the homography of its box's
bottom centre) over the last 1.5 s — on the ground motion is linear, in the image it is not.
`FrameZones.group(members)` gives a group's zone names and flags, whether it lies entirely in
`ignore` zones (detect drops it, counted) and whether it is all on a sidewalk with no vehicle
(detect marks it calm). State per track (wrong-way runs, calibrated stop times) is forgotten after
`forget_after_s` unseen.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from hazardctl.messages import Motion
from hazardctl.zones import Scene, footpoints

PEDESTRIAN_IN_ROADWAY = "pedestrian_in_roadway"
VEHICLE_IN_CROSSWALK = "vehicle_in_crosswalk"
WRONG_WAY = "wrong_way"
STOPPED_IN_ROADWAY = "stopped_in_roadway"
FLAGS = (PEDESTRIAN_IN_ROADWAY, VEHICLE_IN_CROSSWALK, WRONG_WAY, STOPPED_IN_ROADWAY)

PEDESTRIANS = frozenset({"person"})
#: road users that drive in a lane (a cyclist riding against the traffic is wrong-way too)
LANE_USERS = frozenset({"car", "motorcycle", "bus", "truck", "bicycle"})
VEHICLES = frozenset({"car", "motorcycle", "bus", "truck"})


class Placed(Protocol):
    class_name: str
    bbox: tuple[float, float, float, float]
    track_id: int | None
    motion: Motion | None


@dataclass
class FrameZones:
    """One frame's zone names and flags per object (indices as in the frame's object list)."""

    zones: list[list[str]]
    flags: list[list[str]]
    kinds: list[frozenset[str]]
    speed_kmh: list[float | None]
    classes: list[str]

    def group(self, members: Sequence[int]) -> tuple[list[str], list[str], bool, bool]:
        """(zone names, flags, entirely in ignore zones, all on sidewalks with no vehicle)."""
        names = sorted({z for i in members for z in self.zones[i]})
        flags = sorted({f for i in members for f in self.flags[i]})
        ignored = bool(members) and all("ignore" in self.kinds[i] for i in members)
        sidewalk = (bool(members) and all(self.kinds[i] == frozenset({"sidewalk"}) for i in members)
                    and not any(self.classes[i] in LANE_USERS for i in members))
        return names, flags, ignored, sidewalk

    @property
    def flagged(self) -> list[int]:
        return [i for i, f in enumerate(self.flags) if f]


@dataclass
class _Track:
    against: int = 0
    slow_since: float | None = None
    last_ts: float = 0.0
    ground: deque = field(default_factory=lambda: deque(maxlen=16))
    """(ts, x m, y m) of its ground point: calibrated speed is fitted on the ground, where motion is
    linear (image velocity shrinks with distance, and a box centre is not where the wheels are)"""


def ground_speed_kmh(samples, window_s: float) -> float | None:
    """Least-squares ground speed over the samples of the last `window_s` seconds (at least two)."""
    v = ground_velocity(samples, window_s)
    if v is None:
        return None
    kmh = float(np.hypot(*v)) * 3.6
    return kmh if math.isfinite(kmh) else None


def ground_velocity(samples, window_s: float) -> tuple[float, float] | None:
    """Least-squares ground velocity (m/s, x and y) over the samples of the last `window_s` seconds."""
    if len(samples) < 2:
        return None
    last = samples[-1][0]
    pts = [s for s in samples if s[0] >= last - window_s] or list(samples)[-2:]
    if len(pts) < 2:
        pts = list(samples)[-2:]
    t = np.array([p[0] - last for p in pts])
    xy = np.array([(p[1], p[2]) for p in pts])
    dt = t - t.mean()
    den = float((dt * dt).sum())
    if den <= 0:
        return None
    vx, vy = (dt[:, None] * (xy - xy.mean(axis=0))).sum(axis=0) / den
    return float(vx), float(vy)


def _unit(v) -> tuple[float, float] | None:
    n = float(np.hypot(v[0], v[1]))
    return (float(v[0]) / n, float(v[1]) / n) if n > 0 and math.isfinite(n) else None


@dataclass
class SceneCues:
    """The zone cues of one camera (see the module docstring)."""

    scene: Scene
    forget_after_s: float = 5.0
    speed_window_s: float = 1.5
    """calibrated speed: least squares over the ground points of this many seconds (kinematics' window)"""
    _tracks: dict[int, _Track] = field(default_factory=dict)
    _sized: dict[tuple[int, int], Scene] = field(default_factory=dict)

    def reset(self) -> None:
        self._tracks.clear()

    def sized(self, width: int, height: int) -> Scene:
        """The scene in the pixels of frames of this size (computed once per size)."""
        scene = self._sized.get((width, height))
        if scene is None:
            scene = self._sized[(width, height)] = self.scene.for_frame(width, height)
        return scene

    def observe(self, objects: Sequence[Placed], ts: float, width: int, height: int) -> FrameZones:
        scene = self.sized(width, height)
        cfg = scene.cues
        classes = [o.class_name for o in objects]
        n = len(objects)
        inside = scene.membership([o.bbox for o in objects], classes) if n else np.zeros((0, len(scene.zones)), bool)
        zones = [[z.name for j, z in enumerate(scene.zones) if inside[i, j]] for i in range(n)]
        kinds = [frozenset(z.kind for j, z in enumerate(scene.zones) if inside[i, j]) for i in range(n)]
        flags: list[list[str]] = [[] for _ in range(n)]
        speeds: list[float | None] = [None] * n
        feet = footpoints([o.bbox for o in objects]) if n else np.zeros((0, 2))
        cal = scene.calibration
        cos_line = math.cos(math.radians(cfg.wrong_way_angle_deg))
        ground = cal.ground_of(feet) if cal is not None and n else None
        for i, o in enumerate(objects):
            m = o.motion
            cls, k = o.class_name, kinds[i]
            if cls in PEDESTRIANS and "roadway" in k and "crosswalk" not in k:
                flags[i].append(PEDESTRIAN_IN_ROADWAY)
            track = None
            if o.track_id is not None:
                track = self._tracks.setdefault(o.track_id, _Track())
                if ts <= track.last_ts or ts - track.last_ts > self.forget_after_s:
                    track.ground.clear()  # time went back or a long gap: old points say nothing now
                track.last_ts = ts
                if m is None:
                    track.ground.clear()  # a first sighting, or kinematics rejected the box (an id switch)
                if ground is not None and np.isfinite(ground[i]).all():
                    track.ground.append((ts, float(ground[i][0]), float(ground[i][1])))
                    if m is not None:  # a motion: kinematics accepted the box (no id switch, no bad time)
                        speeds[i] = ground_speed_kmh(track.ground, self.speed_window_s)
            if cls not in LANE_USERS or track is None:
                continue
            # wrong way: against the arrow of a roadway it is in; with a calibration the headings are
            # compared on the ground (perspective bends image directions: a lane going away from the
            # camera converges, so a car changing lanes far off can look against it in the image)
            lanes = [z for j, z in enumerate(scene.zones) if inside[i, j] and z.direction is not None]
            against = False
            if lanes and m is not None:
                fast = (speeds[i] >= cfg.wrong_way_min_kmh) if speeds[i] is not None else m.speed >= cfg.wrong_way_min_px_s
                heading, arrows = None, [z.direction for z in lanes]
                if speeds[i] is not None:
                    heading = _unit(ground_velocity(track.ground, self.speed_window_s) or (0.0, 0.0))
                    arrows = [_unit(np.diff(cal.ground_of(np.asarray(z.arrow, float)), axis=0)[0]) for z in lanes]
                elif m.speed > 0:
                    heading = (m.vx / m.speed, m.vy / m.speed)
                if fast and heading is not None and all(a is not None for a in arrows):
                    against = all(heading[0] * a[0] + heading[1] * a[1] <= cos_line for a in arrows)
            track.against = track.against + 1 if against else 0
            if track.against >= cfg.wrong_way_frames:
                flags[i].append(WRONG_WAY)
            # stopped in a roadway
            if cls in VEHICLES and "roadway" in k and m is not None:
                if speeds[i] is not None:
                    slow = speeds[i] < cfg.stopped_kmh
                    track.slow_since = (track.slow_since if track.slow_since is not None else ts) if slow else None
                    stopped_for = 0.0 if track.slow_since is None else ts - track.slow_since
                else:
                    stopped_for = m.stopped_s
                if stopped_for >= cfg.stopped_s:
                    flags[i].append(STOPPED_IN_ROADWAY)
        # a vehicle in a crosswalk while a pedestrian is in it
        for j, z in enumerate(scene.zones):
            if z.kind != "crosswalk":
                continue
            here = [i for i in range(n) if inside[i, j]]
            peds = [i for i in here if classes[i] in PEDESTRIANS]
            cars = [i for i in here if classes[i] in VEHICLES]
            if peds and cars:
                for i in peds + cars:
                    if VEHICLE_IN_CROSSWALK not in flags[i]:
                        flags[i].append(VEHICLE_IN_CROSSWALK)
        self._forget(ts)
        return FrameZones(zones, flags, kinds, speeds, classes)

    def _forget(self, now: float) -> None:
        stale = [k for k, t in self._tracks.items() if abs(now - t.last_ts) > self.forget_after_s]
        for k in stale:
            del self._tracks[k]
