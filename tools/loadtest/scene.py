"""One simulated camera's road scene: groups that persist, change and vanish, frame by frame (pure).

The scene is built so that expand's gate (hazardctl.gating) passes `rate` groups per second per
camera to the LLM, as a real road would, and suppresses the rest:

- one *queued* group (cars waiting at a light) stays unchanged: the gate suppresses it on every
  frame and re-sends it each refresh interval (reason `refresh`);
- `dynamic` groups take turns at an *event*, one every 1 / (rate − 1/refresh) seconds: by turns a
  road user of the group is replaced by another (reason `changed`), or the group drives away and a
  new one arrives in its place (the old id vanishes; reason `new`). Between events they drift a
  pixel a frame and are suppressed. At slow rates a dynamic group drives away before the gate
  would refresh it, and the next event brings a new one, so the rate holds there too.

So with the defaults (rate 0.5, refresh 10 s, 1 fps) each camera sends 0.4 events/s + 0.1
refreshes/s = 0.5 groups/s, while it shows 3 groups on a frame (3 groups/s offered to the gate).
A camera starts on an empty road: its queue appears at a random second of the first refresh
interval and each dynamic group at its first event, so a run starts at its rate without a burst of
`new` groups from every camera at once (and the queues' refreshes are spread over the interval).
No clock inside: frame k is at `k / fps` seconds after the camera's start; the caller adds the time.

With `motion` (loadtest --motion) the scene is a street as the danger-aware gate sees it: every object
carries the motion detect would estimate (hazardctl.kinematics over its boxes at the frame times)
and every group the cues detect would compute (hazardctl.cues), so expand's gate decides on real
cues. The queue and the dynamic groups barely move: they are *calm* (no possible conflict), so the
gate sends them when new and on the calm refresh, and a member replaced is no reason. Next to
them, every `hazard_every_s` a *hazard* appears in its own lane: a car approaching a pedestrian
standing in the road at `HAZARD_SPEED` px/s from `HAZARD_TTC0_S` s away, which stops `HAZARD_STOP_GAP`
px short of them and leaves `HAZARD_LINGER_S` later (true TTC ≤ 1.5 s from `hazard_onset_s` on: a
labelled near-miss the gate must send as `suspect`). `--rate` keeps its meaning: the activity of the
road, i.e. what the classic clock-and-shape gate would pass; what the danger gate really sends
(calls per camera-second) is a result, reported beside it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hazardctl.cues import frame_pairs
from hazardctl.kinematics import CameraKinematics
from tools.loadtest.crops import Crop

#: classes of a group's road users, and their box sizes (w, h) in a 1280x720 frame
PATTERNS = (("person", "car"), ("car", "car", "truck"), ("person", "bicycle", "car"), ("car", "bus"),
            ("motorcycle", "car"), ("person", "person", "car"))
SIZES = {"person": (40, 100), "bicycle": (60, 70), "car": (160, 90), "motorcycle": (60, 80), "truck": (200, 120),
         "bus": (260, 140)}
CLASS_IDS = {"person": 0, "bicycle": 1, "car": 2, "motorcycle": 3, "bus": 5, "truck": 7}
VEHICLES = {"car", "truck", "bus", "motorcycle"}
WIDTH, HEIGHT = 1280, 720
#: the hazard's car: px/s (at this frame's scale ~30 km/h), how far off it starts (as TTC, s), the gap it
#: stops at (px), how long the pair stays after it stopped (s), and the lane (y of the boxes' top)
HAZARD_SPEED, HAZARD_TTC0_S, HAZARD_STOP_GAP, HAZARD_LINGER_S, HAZARD_Y = 250.0, 3.6, 30.0, 3.0, 610.0


@dataclass(frozen=True)
class SceneConfig:
    rate: float = 0.5
    """groups per second per camera that should reach the LLM (new + changed + refresh)"""
    fps: float = 1.0
    """frames per second per camera"""
    refresh_s: float = 10.0
    """expand's refresh interval: an unchanged group is re-sent this often"""
    dynamic: int = 2
    """groups that take turns changing or being replaced"""
    motion: bool = False
    """objects carry motion, groups cues (the danger-aware gate's input); see the module docstring"""
    hazard_every_s: float = 60.0
    """with motion: one approaching car–pedestrian pair per camera this often (0: none)"""

    @property
    def queued(self) -> int:
        """1 when the rate leaves room for a refreshed queue, else 0 (every task is then an event)."""
        return 1 if self.rate > 1.0 / self.refresh_s + 1e-9 else 0

    @property
    def event_every(self) -> float:
        return 1.0 / (self.rate - self.queued / self.refresh_s)

    def check(self) -> str | None:
        """What makes the design unable to deliver `rate` (one line), or None."""
        if self.rate <= 0 or self.fps <= 0:
            return "--rate and --fps must be > 0"
        if self.event_every < 1.0 / self.fps:
            return (f"--rate {self.rate:g} needs more than one changed group per frame at --fps {self.fps:g}: "
                    f"raise --fps to at least {1.0 / self.event_every:g}")
        if self.motion and self.hazard_every_s and self.hazard_every_s < hazard_lifetime_s() + 1.0 / self.fps:
            return f"--hazard-every {self.hazard_every_s:g} s: a hazard lasts {hazard_lifetime_s():.1f} s; give more"
        if self.motion and self.hazard_every_s and self.fps < 1.0:
            return "--motion needs --fps ≥ 1: a hazard's car is seen too few times before it arrives"
        return None


def hazard_lifetime_s() -> float:
    return HAZARD_TTC0_S - HAZARD_STOP_GAP / HAZARD_SPEED + HAZARD_LINGER_S


def hazard_onset_s() -> float:
    """Seconds after a hazard appears at which its true TTC reaches 1.5 s (the labelled onset)."""
    return HAZARD_TTC0_S - 1.5


@dataclass
class Member:
    track_id: int
    cls: str
    dx: float
    dy: float


@dataclass
class GroupState:
    group_id: str
    members: list[Member]
    x: float
    y: float
    crop: int
    drift: float
    events: int = 0
    changed_at: float = 0.0


@dataclass
class Hazard:
    """A car approaching a pedestrian in the hazard lane (see the module docstring)."""

    group_id: str
    car: int
    person: int
    appeared: float
    """scene time (s) it appeared"""

    def boxes(self, t: float) -> tuple[list[float], list[float]]:
        """(car box, pedestrian box) at scene time t: the car drives at HAZARD_SPEED until it stops."""
        cw, ch = SIZES["car"]
        pw, ph = SIZES["person"]
        car_x0 = 20.0
        person_x = car_x0 + cw + HAZARD_SPEED * HAZARD_TTC0_S
        stop_at = (HAZARD_SPEED * HAZARD_TTC0_S - HAZARD_STOP_GAP) / HAZARD_SPEED
        x = car_x0 + HAZARD_SPEED * min(max(0.0, t - self.appeared), stop_at)
        return ([round(x, 1), HAZARD_Y, round(x + cw, 1), HAZARD_Y + ch],
                [round(person_x, 1), HAZARD_Y - 10.0, round(person_x + pw, 1), min(HEIGHT, HAZARD_Y - 10.0 + ph)])


@dataclass
class CameraScene:
    camera_id: str
    cfg: SceneConfig
    crops: list[Crop]
    seed: int
    queue_share: float | None = None
    """where in the refresh interval the queue appears (0..1); default random. Cameras spread them
    evenly, so the refreshes of many cameras do not bunch up by chance"""
    event_share: float | None = None
    """the same for the first event, within one event interval"""
    groups: list[GroupState | None] = field(default_factory=list)
    next_event: float = 0.0
    hazard_share: float | None = None
    """where in the hazard interval the camera's first hazard appears (0..1); default random"""
    hazard: Hazard | None = None
    hazards_started: int = 0
    replace_first: bool = False
    """with motion: the camera's first dynamic groups are replaced at their next event instead of changed.
    The danger gate holds a calm group's changes and sends only the replacements (new groups), which
    come in pairs every other pair of events; half the cameras (Cameras alternates it) run that cycle
    half a turn later, so the rate the gate passes is flat instead of 5 s on, 5 s off"""
    _turn: int = 0
    _tracks: int = 0
    _group_seq: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        share = self.rng.random()
        # the first event (an arrival) within one event interval; with motion within two refresh intervals:
        # the danger gate sends every arrival (new) but holds the changes that follow, so the arrivals that
        # fill the empty road are extra on top of the steady rate (bunched in the first 2.5 s they made 54/s
        # at 100 cameras against ~28/s steady; spread over 20 s the start peaks at ~40/s, under the keys' 48/s)
        first_within = max(self.cfg.event_every, 2 * self.cfg.refresh_s) if self.cfg.motion else self.cfg.event_every
        self.next_event = (self.event_share if self.event_share is not None else share) * first_within
        share = self.rng.random()
        self.queue_at = (self.queue_share if self.queue_share is not None else share) * self.cfg.refresh_s
        self.groups = [None] * (self.cfg.queued + self.cfg.dynamic)
        self.kinematics = CameraKinematics() if self.cfg.motion else None
        share = self.rng.random()
        every = self.cfg.hazard_every_s if self.cfg.motion else 0.0
        self.next_hazard = ((self.hazard_share if self.hazard_share is not None else share) * every
                            if every else float("inf"))
        self._t = 0.0

    # -- what happens on the road ---------------------------------------------------------------------
    def _new_group(self, slot: int, drift: float, t: float = 0.0) -> GroupState:
        self._group_seq += 1
        pattern = PATTERNS[self.rng.randrange(len(PATTERNS))]
        members = []
        for j, cls in enumerate(pattern):
            self._tracks += 1
            members.append(Member(self._tracks, cls, dx=j * 70.0, dy=j * 12.0))
        x = 60 + slot * (WIDTH - 420) / max(1, self.cfg.queued + self.cfg.dynamic - 1) + self.rng.uniform(-20, 20)
        y = 220 + self.rng.uniform(-60, 200)
        return GroupState(f"{self.camera_id}-g{self._group_seq}", members, x, y,
                          self.rng.randrange(len(self.crops)), drift, changed_at=t)

    def _event(self, t: float) -> None:
        """The next dynamic group, by turns: a member replaced (changed) or the group replaced (new)."""
        slot = self.cfg.queued + self._turn % self.cfg.dynamic
        g = self.groups[slot]
        if g is None:  # a group arrives on an empty part of the road
            self.groups[slot] = self._new_group(slot, drift=1.0, t=t)
            if self.cfg.motion and self.replace_first and self._turn < self.cfg.dynamic:
                self.groups[slot].events = 1  # this camera's first arrivals are replaced before they change
        elif g.events % 2 == 0:  # one road user leaves, another of the same kind takes its place
            self._tracks += 1
            g.members[0] = Member(self._tracks, g.members[0].cls, g.members[0].dx, g.members[0].dy)
            g.events += 1
            g.changed_at = t
        else:  # the group drives away; a new one arrives
            self.groups[slot] = self._new_group(slot, drift=1.0, t=t)
        self._turn += 1

    def advance(self, t: float) -> None:
        """Move the road to `t` seconds after the camera's start (call once per frame, in order)."""
        for slot in range(self.cfg.queued):
            if self.groups[slot] is None and self.queue_at <= t + 1e-9:
                self.groups[slot] = self._new_group(slot, drift=0.0)
        while self.next_event <= t + 1e-9:
            self._event(t)
            self.next_event += self.cfg.event_every
        # a dynamic group leaves before the gate would refresh it. The gate refreshes on a per-group phase
        # grid, as early as half an interval after a send (gating.refresh_due), so only where a group's own
        # events come further apart than that (slow rates; at the default rate they come every 5 s, on the
        # frame of the earliest refresh, and the event wins)
        if self.cfg.dynamic * self.cfg.event_every > self.cfg.refresh_s / 2 + 1e-9:
            leave = self.cfg.refresh_s / 2 - 1.0 / self.cfg.fps
            for slot in range(self.cfg.queued, len(self.groups)):
                g = self.groups[slot]
                if g is not None and t - g.changed_at >= leave - 1e-9:
                    self.groups[slot] = None
        for g in self.groups:
            if g is not None:
                g.x += g.drift
        if self.hazard is not None and t - self.hazard.appeared >= hazard_lifetime_s() - 1e-9:
            self.hazard = None
        if self.hazard is None and self.next_hazard <= t + 1e-9:
            self._group_seq += 1
            self._tracks += 2
            self.hazard = Hazard(f"{self.camera_id}-h{self._group_seq}", self._tracks - 1, self._tracks, t)
            self.hazards_started += 1
            self.next_hazard += self.cfg.hazard_every_s
        self._t = t

    def hazard_group_id(self) -> str | None:
        """The id of the hazard group on the road now, if any."""
        return self.hazard.group_id if self.hazard is not None else None

    # -- what the detector would publish ------------------------------------------------------------------
    def frame(self, frame_id: int, ts: float, message_id: str) -> dict:
        """The detection result of this frame as a JSON-ready dict (valid `DetectionResult`)."""
        objects: list[dict] = []
        groups: list[dict] = []
        for g in self.groups:
            if g is None:
                continue
            ids, boxes = [], []
            for m in g.members:
                w, h = SIZES[m.cls]
                x1, y1 = round(g.x + m.dx, 1), round(g.y + m.dy, 1)
                box = [x1, y1, min(WIDTH, x1 + w), min(HEIGHT, y1 + h)]
                ids.append(len(objects))
                boxes.append(box)
                objects.append({"object_id": len(objects), "class_name": m.cls, "class_id": CLASS_IDS[m.cls],
                                "confidence": 0.8, "bbox": box, "track_id": m.track_id})
            classes = [m.cls for m in g.members]
            union = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                     max(b[3] for b in boxes)]
            area = max(1.0, (union[2] - union[0]) * (union[3] - union[1]))
            crop = self.crops[g.crop]
            peds = sum(c in ("person", "bicycle") for c in classes)
            groups.append({
                "group_id": g.group_id, "member_ids": ids, "bbox": union, "classes": classes,
                "mean_confidence": 0.8,
                "features": {"density_per_10k_px2": round(len(ids) / area * 1e4, 3), "mean_spacing": 70.0,
                             "min_spacing": 70.0, "vehicle_count": sum(c in VEHICLES for c in classes),
                             "pedestrian_count": peds,
                             "min_pedestrian_vehicle_distance": 70.0 if peds and peds < len(classes) else None},
                "crop_jpeg_b64": crop.b64, "crop_size": list(crop.size),
            })
        if self.hazard is not None:
            h = self.hazard
            car, person = h.boxes(self._t)
            ids = [len(objects), len(objects) + 1]
            objects.append({"object_id": ids[0], "class_name": "car", "class_id": CLASS_IDS["car"], "confidence": 0.8,
                            "bbox": car, "track_id": h.car})
            objects.append({"object_id": ids[1], "class_name": "person", "class_id": CLASS_IDS["person"],
                            "confidence": 0.8, "bbox": person, "track_id": h.person})
            crop = self.crops[h.car % len(self.crops)]
            union = [min(car[0], person[0]), min(car[1], person[1]), max(car[2], person[2]), max(car[3], person[3])]
            gap = max(0.0, person[0] - car[2])
            groups.append({
                "group_id": h.group_id, "member_ids": ids, "bbox": union, "classes": ["car", "person"],
                "mean_confidence": 0.8,
                "features": {"density_per_10k_px2": round(2 / max(1.0, (union[2] - union[0]) * (union[3] - union[1])) * 1e4, 3),
                             "mean_spacing": gap, "min_spacing": gap, "vehicle_count": 1, "pedestrian_count": 1,
                             "min_pedestrian_vehicle_distance": gap},
                "crop_jpeg_b64": crop.b64, "crop_size": list(crop.size),
            })
        if self.kinematics is not None:
            self._add_motion(objects, groups, ts)
        return {"schema_version": 1, "message_id": message_id, "camera_id": self.camera_id, "frame_id": frame_id,
                "frame_ts": ts, "frame_width": WIDTH, "frame_height": HEIGHT,
                "detector": {"model": "loadtest-camera", "version": "1"}, "objects": objects, "groups": groups,
                "times": {}}

    def _add_motion(self, objects: list[dict], groups: list[dict], ts: float) -> None:
        """What detect adds: each object's motion from its track's boxes at the capture times
        (hazardctl.kinematics), each group's worst cues (hazardctl.cues), as JSON."""
        motions = self.kinematics.observe([_Seen(o["bbox"], o["track_id"]) for o in objects], ts)
        seen = []
        for o, m in zip(objects, motions):
            o["motion"] = None if m is None else m.model_dump()
            seen.append(_Moving(o["object_id"], o["class_name"], tuple(o["bbox"]), m))
        pairs = frame_pairs(seen)  # one pass over the frame's pairs, as detect does
        for g in groups:
            cues = pairs.group_cues(g["member_ids"])
            g["cues"] = None if cues is None else cues.model_dump()


@dataclass(frozen=True, slots=True)
class _Seen:
    bbox: list
    track_id: int | None


@dataclass(frozen=True, slots=True)
class _Moving:
    object_id: int
    class_name: str
    bbox: tuple
    motion: object
