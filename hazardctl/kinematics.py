"""How each tracked road user moves: velocity, speed, heading and time stopped, from its recent boxes.

Pure (no clock, no I/O): the caller passes each box's capture time. Public API:

* `CameraKinematics(cfg)` — the state of one camera (reset it when its tracker is reset).
  - `update(track_id, bbox, ts) -> Motion | None`: one box of one track; the track's motion, or
    None while there is not enough history (first sighting) or when the sample was rejected.
  - `observe(objects, ts) -> list[Motion | None]`: a whole frame (objects with `track_id` and
    `bbox`, None for untracked ones), then forgets tracks not seen for `forget_after_s`.
  - `coast(track_id, ts) -> BBox | None`: where a track missed on the frame at `ts` is predicted to
    be (its last box moved by its velocity), when it was seen on the frame just before (see Coasting).
  - `rejected`: counts of ignored samples by reason (`REJECT_REASONS`), for the stage's metric.
  - `reset()`.
* `stopped_speed(diag, cfg)`: the speed below which a box of that diagonal counts as stopped
  (shared with hazardctl/cues.py so both agree on "stopped").

**Our own estimate, not ByteTrack's Kalman state.** detect's ByteTrack (supervision 0.30) is fed
C-BIoU-*widened* boxes and a fixed frame rate, so its Kalman velocity is in "widened px per tracker
frame" and silently wrong when a frame is missed or a camera's fps changes; its state is not part of
supervision's public output; the ultralytics backend tracks by itself and a MOT replay may keep the
file's ids, so there would be no Kalman state at all. Here velocity is a least-squares line through
the box centres of the last `window_s` seconds of *capture times* (at 2 fps: 3–4 boxes), which
averages ±3 px of box jitter down to ~1.5 px/s, spans a missed frame without bias, and is the same
for every tracker. Its lag (a braking car is seen ~half a window late) is the price of that.

**Bad input is ignored and counted, never trusted.** A non-finite, inverted (x2 ≤ x1) or huge box,
a non-finite or non-positive time, a time not after the track's last sample, and a jump no road
user could make between two samples (an id switch: more than `max_speed_diag_s` box diagonals per
second) are rejected; a time more than `forget_after_s` in the past restarts the track, and so does
a jump (the new box starts a fresh history). So a glitch costs one object a frame of motion, never a
burst of "fast objects". Memory is bounded: `max_samples` boxes per track, tracks unseen for
`forget_after_s` are dropped each frame, and at most `max_tracks` tracks per camera.

**Coasting.** A detector misses a box now and then (the bench's noise: 5 % of boxes); a road user
absent from the first frame after a hazard's onset would have no pair cue on it, and the gate would
wait a frame. `coast` predicts the missed box from the track's motion, only for a track seen on the
frame just before (`ts` within `coast_intervals` × the track's own last sample interval, and at most
`coast_max_s`): a gap of one missed frame at any fps, never a track that left. The prediction is not
added to the history (the velocity stays an estimate from real boxes), and a track whose velocity
rests on fewer than `min_samples` boxes is not coasted.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence

from hazardctl.messages import Motion

BBox = tuple[float, float, float, float]

#: why a sample was ignored (the stage exports these as a metric label)
REJECT_REASONS = ("bad_box", "bad_time", "time_backwards", "jump")
#: beyond this many pixels from the origin a coordinate is corrupt, not a frame position
MAX_COORD = 1e5

STOPPED_SPEED_PX_S = 6.0
"""below this speed (px/s) an object is stopped whatever its size: ±3 px of box jitter alone
gives an estimate of up to ~5 px/s"""
STOPPED_SPEED_DIAG_S = 0.08
"""…or below this many of its own box diagonals per second (a walker covers ~0.5 of its diagonal
per second, a car crawling in a queue ~0.1)"""


@dataclass(frozen=True, slots=True)
class KinematicsConfig:
    window_s: float = 1.5
    """least squares over the boxes of the last window_s seconds (at least the last two)"""
    min_samples: int = 2
    """boxes needed before a motion is reported (2: a track has motion on its second sighting)"""
    max_samples: int = 16
    """boxes kept per track (bounds memory at high fps; 16 at 10 fps still span the window)"""
    forget_after_s: float = 2.0
    """a track unseen this long is forgotten; a gap this long restarts its history"""
    max_speed_diag_s: float = 15.0
    """an apparent speed above this many box diagonals per second is an id switch, not motion
    (a car at 120 km/h covers ~7 of its diagonals per second)"""
    max_tracks: int = 2000
    """per camera; beyond it the least recently seen tracks are dropped"""
    stopped_speed_px_s: float = STOPPED_SPEED_PX_S
    stopped_speed_diag_s: float = STOPPED_SPEED_DIAG_S
    coast_intervals: float = 1.5
    """a track missed on a frame is coasted when that frame comes within this many of the track's own
    last sample intervals after its last box (1.5: exactly one missed frame, with capture-time jitter)"""
    coast_max_s: float = 1.0
    """…and within this many seconds (a 1 fps camera's one missed frame; beyond, the prediction is a guess)"""


def stopped_speed(diag: float, stopped_px_s: float = STOPPED_SPEED_PX_S,
                  stopped_diag_s: float = STOPPED_SPEED_DIAG_S) -> float:
    """Speed (px/s) below which a box with this diagonal is stopped: scale-free above a jitter floor."""
    return max(stopped_px_s, stopped_diag_s * diag)


class Tracked(Protocol):
    """What `observe` needs of an object (detect's Box and the wire DetectedObject fit)."""

    bbox: BBox
    track_id: int | None


@dataclass(slots=True)
class _Track:
    samples: deque = field(default_factory=deque)  # (ts, cx, cy, diag)
    last_ts: float = 0.0
    stopped_since: float | None = None
    last_box: BBox | None = None
    velocity: tuple[float, float] | None = None
    """the last reported velocity (None before `min_samples` boxes); stopped tracks hold (0, 0)"""


def _valid_box(bbox: Sequence[float]) -> bool:
    try:
        x1, y1, x2, y2 = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return False
    if not all(math.isfinite(v) and abs(v) <= MAX_COORD for v in (x1, y1, x2, y2)):
        return False
    return x2 > x1 and y2 > y1


def _fit(samples: Sequence[tuple[float, float, float, float]]) -> tuple[float, float]:
    """Least-squares slopes (vx, vy) of centre x and y against time."""
    n = len(samples)
    t0 = samples[-1][0]
    mt = sum(s[0] - t0 for s in samples) / n
    mx = sum(s[1] for s in samples) / n
    my = sum(s[2] for s in samples) / n
    stt = sx = sy = 0.0
    for t, x, y, _ in samples:
        dt = t - t0 - mt
        stt += dt * dt
        sx += dt * (x - mx)
        sy += dt * (y - my)
    if stt <= 0.0:
        return 0.0, 0.0
    return sx / stt, sy / stt


class CameraKinematics:
    """Per-track motion of one camera's road users (see the module docstring)."""

    def __init__(self, cfg: KinematicsConfig = KinematicsConfig()) -> None:
        self.cfg = cfg
        self._tracks: dict[int, _Track] = {}
        self.rejected: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._tracks)

    def reset(self) -> None:
        """Forget every track (the camera's tracker was reset: its ids mean something else now)."""
        self._tracks.clear()

    def update(self, track_id: int, bbox: BBox, ts: float) -> Motion | None:
        """Add one box of a track seen at capture time `ts`; its motion, or None (see module doc)."""
        cfg = self.cfg
        if not _valid_box(bbox):
            self.rejected["bad_box"] += 1
            return None
        try:
            ts = float(ts)
        except (TypeError, ValueError):
            ts = math.nan
        if not math.isfinite(ts) or ts <= 0.0:
            self.rejected["bad_time"] += 1
            return None
        x1, y1, x2, y2 = (float(v) for v in bbox)
        cx, cy, diag = (x1 + x2) / 2.0, (y1 + y2) / 2.0, math.hypot(x2 - x1, y2 - y1)
        track = self._tracks.get(track_id)
        if track is not None and track.samples:
            dt = ts - track.last_ts
            if dt <= 0.0:
                self.rejected["time_backwards"] += 1
                if dt > -cfg.forget_after_s:
                    return None
                track = None  # the clock jumped back: old history cannot be compared with this box
            elif dt > cfg.forget_after_s:
                track = None  # a long gap: what it did before says little about now
            else:
                _, px, py, pdiag = track.samples[-1]
                if math.hypot(cx - px, cy - py) / dt > cfg.max_speed_diag_s * max(diag, pdiag):
                    self.rejected["jump"] += 1
                    track = None
        if track is None:
            self._tracks.pop(track_id, None)
            if len(self._tracks) >= cfg.max_tracks:
                del self._tracks[min(self._tracks, key=lambda k: self._tracks[k].last_ts)]
            track = self._tracks[track_id] = _Track(deque(maxlen=cfg.max_samples))
        track.samples.append((ts, cx, cy, diag))
        track.last_ts, track.last_box, track.velocity = ts, (x1, y1, x2, y2), None
        if len(track.samples) < cfg.min_samples:
            return None
        window = [s for s in track.samples if s[0] >= ts - cfg.window_s]
        if len(window) < 2:
            window = list(track.samples)[-2:]
        vx, vy = _fit(window)
        speed = math.hypot(vx, vy)
        if speed < stopped_speed(diag, cfg.stopped_speed_px_s, cfg.stopped_speed_diag_s):
            if track.stopped_since is None:
                track.stopped_since = ts
            track.velocity = (0.0, 0.0)
        else:
            track.stopped_since = None
            track.velocity = (vx, vy)
        return Motion(
            vx=vx, vy=vy, speed=speed, heading_deg=math.degrees(math.atan2(vy, vx)),
            stopped_s=0.0 if track.stopped_since is None else ts - track.stopped_since,
            samples=len(window),
        )

    def coast(self, track_id: int, ts: float) -> BBox | None:
        """The predicted box of a track missed on the frame at `ts` (see Coasting), or None."""
        track = self._tracks.get(track_id)
        if track is None or track.velocity is None or track.last_box is None or len(track.samples) < 2:
            return None
        try:
            dt = float(ts) - track.last_ts
        except (TypeError, ValueError):
            return None
        interval = track.last_ts - track.samples[-2][0]
        if not (math.isfinite(dt) and 0.0 < dt <= min(self.cfg.coast_max_s, self.cfg.coast_intervals * interval)):
            return None
        dx, dy = track.velocity[0] * dt, track.velocity[1] * dt
        x1, y1, x2, y2 = track.last_box
        return (x1 + dx, y1 + dy, x2 + dx, y2 + dy)

    def observe(self, objects: Iterable[Tracked], ts: float) -> list[Motion | None]:
        """Motion for each object of one frame (None for untracked ones), then forget stale tracks."""
        out = [None if o.track_id is None else self.update(o.track_id, o.bbox, ts) for o in objects]
        self.forget(ts)
        return out

    def forget(self, now: float) -> None:
        """Drop tracks unseen for `forget_after_s` (and any whose last time is far in the future)."""
        limit = self.cfg.forget_after_s
        stale = [k for k, t in self._tracks.items() if abs(now - t.last_ts) > limit]
        for k in stale:
            del self._tracks[k]
