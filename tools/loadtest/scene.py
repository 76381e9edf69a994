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
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tools.loadtest.crops import Crop

#: classes of a group's road users, and their box sizes (w, h) in a 1280x720 frame
PATTERNS = (("person", "car"), ("car", "car", "truck"), ("person", "bicycle", "car"), ("car", "bus"),
            ("motorcycle", "car"), ("person", "person", "car"))
SIZES = {"person": (40, 100), "bicycle": (60, 70), "car": (160, 90), "motorcycle": (60, 80), "truck": (200, 120),
         "bus": (260, 140)}
CLASS_IDS = {"person": 0, "bicycle": 1, "car": 2, "motorcycle": 3, "bus": 5, "truck": 7}
VEHICLES = {"car", "truck", "bus", "motorcycle"}
WIDTH, HEIGHT = 1280, 720


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
        return None


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
    _turn: int = 0
    _tracks: int = 0
    _group_seq: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        share = self.rng.random()
        self.next_event = (self.event_share if self.event_share is not None else share) * self.cfg.event_every
        share = self.rng.random()
        self.queue_at = (self.queue_share if self.queue_share is not None else share) * self.cfg.refresh_s
        self.groups = [None] * (self.cfg.queued + self.cfg.dynamic)

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
        # a dynamic group leaves before the gate would refresh it (only at slow rates: at the default
        # rate every dynamic group has its next event well within the refresh interval)
        for slot in range(self.cfg.queued, len(self.groups)):
            g = self.groups[slot]
            if g is not None and t - g.changed_at >= self.cfg.refresh_s - 1.0 / self.cfg.fps - 1e-9:
                self.groups[slot] = None
        for g in self.groups:
            if g is not None:
                g.x += g.drift

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
        return {"schema_version": 1, "message_id": message_id, "camera_id": self.camera_id, "frame_id": frame_id,
                "frame_ts": ts, "frame_width": WIDTH, "frame_height": HEIGHT,
                "detector": {"model": "loadtest-camera", "version": "1"}, "objects": objects, "groups": groups,
                "times": {}}
