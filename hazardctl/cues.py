"""Pair cues under constant velocity: gap, closing speed, time to collision, smallest predicted gap.

Pure geometry over arrays of pairs (numpy, supervision-style; no clock, no I/O), in image pixels
and seconds, so no camera calibration is needed. Public API:

* `frame_pairs(objects, cfg) -> FramePairs`: every vehicle–pedestrian, vehicle–cyclist and
  vehicle–vehicle pair of one frame whose two objects both have `motion`, computed at once.
  - `FramePairs.group_cues(member_indices) -> GroupCues | None`: a group's worst cues.
  - `FramePairs.predicted_links(link_k) -> list[(i, j)]`: pairs that will come within grouping's
    linking distance inside the horizon (hazardctl/grouping.py links them now).
  - `FramePairs.cue(k) -> PairCue`, `FramePairs.cues() -> list[PairCue]`.
* `group_cues(objects, member_indices, cfg) -> GroupCues | None`: the same for one group alone
  (what the loadtest calls for its simulated cameras).
* `box_pairs(a, va, b, vb, horizon_s) -> (gap, closing, ttc, min_gap, min_gap_t)`: the physics on
  arrays of box pairs (xyxy), for anyone with boxes and velocities but no messages.

Physics (per pair, B relative to A, relative velocity v = v_B − v_A):

* **gap**: Euclidean distance between the two boxes' edges (0 when they overlap), as grouping uses.
* **closing speed**: how fast that gap shrinks now (−d gap/dt); for boxes that already overlap,
  how fast their centres approach. Negative: moving apart.
* **TTC**: the first t ≥ 0 at which the two moving axis-aligned boxes touch (x and y intervals
  both overlap); None if never. "A car 100 px away closing at 50 px/s has TTC 2.0 s." Boxes that
  overlap now have TTC 0 only while closing faster than the conflict threshold: in image space
  overlap is often just perspective (a pedestrian in front of a car), and jitter alone must not
  make it a collision.
* **smallest gap within the horizon** (default 3 s) and when: the gap is convex in t, so it is
  exact at the breakpoints (an axis starting or ending to overlap) and the stationary points
  between them.

An object whose speed is below `kinematics.stopped_speed` of its box is *stopped* and predicted
with velocity 0, so box jitter of parked cars does not make them approach each other.

**conflict_possible** (a group is not *calm*) = some pair with a vehicle in it closing faster than
`max(min_closing_px_s, min_closing_size_s × size)` (the px/s floor doubled while a moving member's
velocity rests on fewer than 3 boxes: measured, 2-box estimates of small boxes with ±3 px jitter
made a creeping queue "close" a few times an hour), where for a vehicle–pedestrian/cyclist pair the
vehicle itself is moving. A crowd on a plaza (no vehicle), a parked row (stopped), parallel traffic
at equal speed (closing ≈ 0) are not. The group's `min_ttc_s`, `max_closing_speed`,
`min_gap_ratio` (smallest predicted gap / the pair's size) and worst `pair` are over its conflict
pairs only: a pedestrian brushing past a parked car is not a hazard cue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

import numpy as np

from hazardctl.kinematics import STOPPED_SPEED_DIAG_S, STOPPED_SPEED_PX_S
from hazardctl.messages import GroupCues, Motion, PairCue

BBox = tuple[float, float, float, float]

#: vehicles for cues (a bicycle is the vulnerable side of a pair, not a vehicle that threatens)
CUE_VEHICLES = frozenset({"car", "motorcycle", "bus", "truck"})
CUE_PEDESTRIANS = frozenset({"person"})
CUE_CYCLISTS = frozenset({"bicycle"})
KINDS = ("vehicle-pedestrian", "vehicle-cyclist", "vehicle-vehicle")


@dataclass(frozen=True, slots=True)
class CueConfig:
    horizon_s: float = 3.0
    """how far ahead the smallest gap is predicted (constant velocity is a fair guess for ~3 s)"""
    min_closing_px_s: float = 8.0
    """closing slower than this (px/s) is not "in closing motion": above the jitter of two estimates"""
    min_closing_size_s: float = 0.1
    """…nor slower than this many of the pair's sizes per second (scale-free part of the threshold)"""
    settled_samples: int = 3
    """a moving object whose velocity rests on fewer boxes (a new track, or misses) is noisier…"""
    young_closing_factor: float = 2.0
    """…so min_closing_px_s is multiplied by this for its pairs (a real approach is far faster)"""
    stopped_speed_px_s: float = STOPPED_SPEED_PX_S
    stopped_speed_diag_s: float = STOPPED_SPEED_DIAG_S


class Moving(Protocol):
    """What cues need of an object (the wire DetectedObject fits; `object_id` is optional)."""

    class_name: str
    bbox: BBox
    motion: Motion | None


# --- the physics on arrays ----------------------------------------------------------------------

def _axis_sep(p: np.ndarray, q: np.ndarray, v: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """Separation along one axis at time t: max(0, p + v t, q − v t) (broadcasts)."""
    return np.maximum(0.0, np.maximum(p + v * t, q - v * t))


def _contact_window(p: np.ndarray, q: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Times [lo, hi] during which the two intervals overlap along one axis (empty: lo > hi)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a, b = q / v, -p / v
    still = v == 0.0
    overlapping = (p <= 0.0) & (q <= 0.0)
    lo = np.where(still, np.where(overlapping, -np.inf, np.inf), np.minimum(a, b))
    hi = np.where(still, np.where(overlapping, np.inf, -np.inf), np.maximum(a, b))
    return lo, hi


def box_pairs(a: np.ndarray, va: np.ndarray, b: np.ndarray, vb: np.ndarray, horizon_s: float,
              overlap_closing: np.ndarray | float = 0.0):
    """Gap, closing speed, TTC (NaN: never), smallest gap within the horizon and when, for pairs.

    a, b: (n, 4) boxes x1, y1, x2, y2; va, vb: (n, 2) velocities px/s. `overlap_closing`: the
    closing speed above which boxes that overlap now get TTC 0 (see the module docstring)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    v = np.asarray(vb, np.float64).reshape(-1, 2) - np.asarray(va, np.float64).reshape(-1, 2)
    vx, vy = v[:, 0], v[:, 1]
    px, qx = b[:, 0] - a[:, 2], a[:, 0] - b[:, 2]  # B right of A by px > 0; left of A by qx > 0
    py, qy = b[:, 1] - a[:, 3], a[:, 1] - b[:, 3]
    sx = np.where(px > 0, px, np.where(qx > 0, -qx, 0.0))  # signed separation, + = B right/below
    sy = np.where(py > 0, py, np.where(qy > 0, -qy, 0.0))
    gap = np.hypot(sx, sy)
    # closing: −d gap/dt while apart; while overlapping, how fast the centres approach
    cx = (b[:, 0] + b[:, 2] - a[:, 0] - a[:, 2]) / 2.0
    cy = (b[:, 1] + b[:, 3] - a[:, 1] - a[:, 3]) / 2.0
    centre = np.hypot(cx, cy)
    with np.errstate(divide="ignore", invalid="ignore"):
        apart = -(sx * vx + sy * vy) / gap
        together = np.where(centre > 0, -(cx * vx + cy * vy) / centre, 0.0)
    closing = np.where(gap > 0, apart, together)
    # time to collision: first time both axes overlap
    lox, hix = _contact_window(px, qx, vx)
    loy, hiy = _contact_window(py, qy, vy)
    first = np.maximum(np.maximum(lox, loy), 0.0)
    ttc = np.where(first <= np.minimum(hix, hiy), first, np.nan)
    ttc = np.where(gap > 0, ttc, np.where(closing > overlap_closing, 0.0, np.nan))
    # smallest gap within [0, horizon]: candidates are the ends, the breakpoints, and the
    # stationary point of each piece between breakpoints (gap is convex in t)
    h = float(horizon_s)
    with np.errstate(divide="ignore", invalid="ignore"):
        breaks = np.stack([-px / vx, qx / vx, -py / vy, qy / vy], axis=1)
    breaks = np.clip(np.nan_to_num(breaks, nan=0.0, posinf=h, neginf=0.0), 0.0, h)
    ends = np.stack([np.zeros_like(gap), np.full_like(gap, h)], axis=1)
    knots = np.sort(np.concatenate([ends, breaks], axis=1), axis=1)
    lo, hi = knots[:, :-1], knots[:, 1:]
    mid = (lo + hi) / 2.0

    def piece(p, q, vv):  # the linear piece a + b t of one axis's separation on each segment
        up, down = p[:, None] + vv[:, None] * mid, q[:, None] - vv[:, None] * mid
        use_up = (up >= down) & (up > 0)
        use_down = ~use_up & (down > 0)
        return (np.where(use_up, p[:, None], np.where(use_down, q[:, None], 0.0)),
                np.where(use_up, vv[:, None], np.where(use_down, -vv[:, None], 0.0)))

    ax, bx = piece(px, qx, vx)
    ay, by = piece(py, qy, vy)
    den = bx * bx + by * by
    with np.errstate(divide="ignore", invalid="ignore"):
        tstar = np.where(den > 0, -(ax * bx + ay * by) / den, lo)
    tstar = np.clip(np.nan_to_num(tstar, nan=0.0), lo, hi)
    times = np.concatenate([knots, tstar], axis=1)
    gaps = np.hypot(_axis_sep(px[:, None], qx[:, None], vx[:, None], times),
                    _axis_sep(py[:, None], qy[:, None], vy[:, None], times))
    min_gap = gaps.min(axis=1)
    tol = 1e-6 * (1.0 + min_gap[:, None])
    min_gap_t = np.where(gaps <= min_gap[:, None] + tol, times, np.inf).min(axis=1)
    return gap, closing, ttc, min_gap, min_gap_t


# --- pairs of one frame -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FramePairs:
    """The cue pairs of one frame as parallel arrays; `i` is the vehicle (the lower index for two)."""

    i: np.ndarray
    j: np.ndarray
    kind: np.ndarray
    """index into KINDS"""
    object_ids: tuple[tuple[int, int], ...]
    gap: np.ndarray
    closing: np.ndarray
    ttc: np.ndarray
    """NaN: no contact"""
    min_gap: np.ndarray
    min_gap_t: np.ndarray
    size: np.ndarray
    conflict: np.ndarray
    """a vehicle in closing motion in this pair (see the module docstring)"""
    moving: frozenset[int]
    """indices of the objects that have motion at all"""

    def __len__(self) -> int:
        return len(self.i)

    def cue(self, k: int) -> PairCue:
        ttc = float(self.ttc[k])
        return PairCue(
            kind=KINDS[int(self.kind[k])], object_ids=self.object_ids[k], gap=float(self.gap[k]),
            closing_speed=float(self.closing[k]), ttc_s=None if np.isnan(ttc) else ttc,
            min_gap=float(self.min_gap[k]), min_gap_in_s=float(self.min_gap_t[k]), size=float(self.size[k]))

    def cues(self) -> list[PairCue]:
        return [self.cue(k) for k in range(len(self))]

    def predicted_links(self, link_k: float) -> list[tuple[int, int]]:
        """Pairs (object indices) in closing motion whose smallest gap within the horizon is at most
        link_k × their size: grouping links them now, before they are close."""
        hit = self.conflict & (self.min_gap <= link_k * self.size)
        return [(int(a), int(b)) for a, b in zip(self.i[hit], self.j[hit])]

    def group_cues(self, members: Iterable[int]) -> GroupCues | None:
        """The worst cues among the group's pairs; None when no member has motion."""
        mem = set(members)
        if not mem & self.moving:
            return None
        members_arr = np.fromiter(mem, dtype=int, count=len(mem))
        sel = self.conflict & np.isin(self.i, members_arr) & np.isin(self.j, members_arr)
        if not sel.any():
            return GroupCues(conflict_possible=False)
        idx = np.nonzero(sel)[0]
        ttc = self.ttc[idx]
        ratio = self.min_gap[idx] / self.size[idx]
        if np.isfinite(ttc).any():
            worst = idx[int(np.nanargmin(ttc))]
            min_ttc = float(np.nanmin(ttc))
        else:
            worst, min_ttc = idx[int(np.argmin(ratio))], None
        return GroupCues(conflict_possible=True, min_ttc_s=min_ttc, max_closing_speed=float(self.closing[idx].max()),
                         min_gap_ratio=float(ratio.min()), pair=self.cue(int(worst)))


def _role(class_name: str) -> int:
    """0 vehicle, 1 pedestrian, 2 cyclist, -1 no cues."""
    if class_name in CUE_VEHICLES:
        return 0
    if class_name in CUE_PEDESTRIANS:
        return 1
    if class_name in CUE_CYCLISTS:
        return 2
    return -1


def _empty(moving: frozenset[int]) -> FramePairs:
    z, zi = np.zeros(0), np.zeros(0, dtype=int)
    return FramePairs(zi, zi, zi, (), z, z, z, z, z, z, np.zeros(0, dtype=bool), moving)


def frame_pairs(objects: Sequence[Moving], cfg: CueConfig = CueConfig(),
                indices: Iterable[int] | None = None) -> FramePairs:
    """Every cue pair among `objects` (or only among `indices`) whose two objects have motion."""
    pool = range(len(objects)) if indices is None else sorted(set(indices))
    with_motion = [k for k in pool if objects[k].motion is not None]
    moving_set = frozenset(with_motion)
    cand = [k for k in with_motion if _role(objects[k].class_name) >= 0]
    if len(cand) < 2:
        return _empty(moving_set)
    idx = np.array(cand)
    role = np.array([_role(objects[k].class_name) for k in cand])
    box = np.array([objects[k].bbox for k in cand], dtype=np.float64).reshape(-1, 4)
    vel = np.array([(objects[k].motion.vx, objects[k].motion.vy) for k in cand], dtype=np.float64)
    speed = np.array([objects[k].motion.speed for k in cand], dtype=np.float64)
    samples = np.array([objects[k].motion.samples for k in cand])
    diag = np.hypot(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
    still = speed < np.maximum(cfg.stopped_speed_px_s, cfg.stopped_speed_diag_s * diag)
    vel[still] = 0.0  # jitter of a stopped object is not motion
    a, b = np.triu_indices(len(cand), 1)
    keep = (role[a] == 0) | (role[b] == 0)
    a, b = a[keep], b[keep]
    if len(a) == 0:
        return _empty(moving_set)
    swap = role[a] != 0  # put the vehicle first (two vehicles: the lower index first)
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    kind = np.where(role[b] == 0, 2, role[b] - 1)
    size = np.maximum((diag[a] + diag[b]) / 2.0, 1e-6)
    young = ~still & (samples < cfg.settled_samples)
    floor = np.where(young[a] | young[b], cfg.min_closing_px_s * cfg.young_closing_factor, cfg.min_closing_px_s)
    threshold = np.maximum(floor, cfg.min_closing_size_s * size)
    gap, closing, ttc, min_gap, min_gap_t = box_pairs(box[a], vel[a], box[b], vel[b], cfg.horizon_s, threshold)
    conflict = (closing >= threshold) & ((kind == 2) | ~still[a])
    oid = [_object_id(objects, k) for k in cand]
    ids = tuple((oid[x], oid[y]) for x, y in zip(a.tolist(), b.tolist()))
    return FramePairs(idx[a], idx[b], kind, ids, gap, closing, ttc, min_gap, min_gap_t, size, conflict, moving_set)


def _object_id(objects: Sequence[Moving], k: int) -> int:
    oid = getattr(objects[k], "object_id", None)
    return k if oid is None else int(oid)


def group_cues(objects: Sequence[Moving], member_indices: Iterable[int], cfg: CueConfig = CueConfig()) -> GroupCues | None:
    """A group's worst cues from its members alone (indices into `objects`); None without motion."""
    members = list(member_indices)
    return frame_pairs(objects, cfg, members).group_cues(members)
