"""Road users as boxes moving under simple physics, and the ground-truth time to collision (pure).

An `Actor` is a box of fixed size whose centre follows a trajectory sampled on a fine time grid
(`DT`, 20 ms): constant velocity, braking to a target speed at a constant deceleration from a
chosen time, or a walk with heading changes inside an area. Velocities are the exact derivatives
of the trajectory (no noise: the detector noise is added when the boxes are written, noise.py).

`box_ttc` is the labelling oracle: the time until two axis-aligned boxes, each moving at its
present velocity, first touch (the slab method, per axis), or None when they never do. It is
written here independently of hazardctl/cues.py, which it is used to judge.

Scale: a traffic camera of 1920x1080 looking down a city street, PX_PER_M pixels per metre at the
road, so 20-60 km/h are 144-433 px/s and a walking pedestrian (1.4 m/s) about 36 px/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

WIDTH, HEIGHT = 1920, 1080
PX_PER_M = 26.0
DT = 0.02
"""seconds between trajectory samples (the MOT frames are taken from this grid)"""

#: box (w, h) in pixels by class, at PX_PER_M
SIZES = {"person": (22.0, 52.0), "bicycle": (46.0, 50.0), "car": (115.0, 60.0), "truck": (220.0, 95.0),
         "bus": (300.0, 110.0), "motorcycle": (50.0, 48.0)}
VEHICLES = frozenset({"car", "truck", "bus", "motorcycle"})


def kmh(v: float) -> float:
    """km/h → px/s at the road."""
    return v / 3.6 * PX_PER_M


def mps(v: float) -> float:
    """m/s (or m/s² for decelerations) → px/s (px/s²)."""
    return v * PX_PER_M


@dataclass
class Actor:
    """One road user: class, box size, and its centre and velocity on the scenario's time grid."""

    actor_id: int
    cls: str
    t: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    visible: np.ndarray
    """on screen (inside the frame, between its entry and exit times)"""
    w: float = 0.0
    h: float = 0.0
    role: str = ""
    """what it is in the scenario (e.g. "car", "pedestrian", "leader"), for the labels"""

    def __post_init__(self) -> None:
        if not self.w:
            self.w, self.h = SIZES[self.cls]

    def index(self, ts: float) -> int:
        return min(len(self.t) - 1, max(0, int(round(ts / DT))))

    def box(self, i: int) -> tuple[float, float, float, float]:
        return (self.cx[i] - self.w / 2, self.cy[i] - self.h / 2, self.cx[i] + self.w / 2, self.cy[i] + self.h / 2)


def grid(duration: float) -> np.ndarray:
    return np.arange(0.0, duration + DT / 2, DT)


def _on_screen(cx: np.ndarray, cy: np.ndarray, w: float, h: float) -> np.ndarray:
    """Visible while at least half the box is inside the frame."""
    return (cx > 0) & (cx < WIDTH) & (cy > 0) & (cy < HEIGHT)


def moving(actor_id: int, cls: str, duration: float, start: tuple[float, float], heading_deg: float, speed: float, *,
           brake_at: float | None = None, decel: float = 0.0, min_speed: float = 0.0, enter_at: float = 0.0,
           role: str = "") -> Actor:
    """Straight line from `start` (at `enter_at`) at `speed` px/s; from `brake_at` it slows at `decel`
    px/s² down to `min_speed` (0: it stops). Before `enter_at` it is off screen."""
    t = grid(duration)
    v = np.full_like(t, speed)
    if brake_at is not None and decel > 0:
        after = t >= brake_at
        v[after] = np.maximum(min_speed, speed - decel * (t[after] - brake_at))
    v[t < enter_at] = 0.0
    # distance = integral of the speed (trapezoids on the grid), exact for piecewise-linear speed
    dist = np.concatenate(([0.0], np.cumsum((v[1:] + v[:-1]) / 2 * DT)))
    ux, uy = math.cos(math.radians(heading_deg)), math.sin(math.radians(heading_deg))
    cx, cy = start[0] + ux * dist, start[1] + uy * dist
    w, h = SIZES[cls]
    vis = _on_screen(cx, cy, w, h) & (t >= enter_at)
    return Actor(actor_id, cls, t, cx, cy, ux * v, uy * v, vis, role=role)


def parked(actor_id: int, cls: str, duration: float, at: tuple[float, float], role: str = "parked") -> Actor:
    t = grid(duration)
    z = np.zeros_like(t)
    return Actor(actor_id, cls, t, z + at[0], z + at[1], z.copy(), z.copy(), np.ones_like(t, dtype=bool), role=role)


def walker(actor_id: int, duration: float, start: tuple[float, float], heading_deg: float, speed: float,
           area: tuple[float, float, float, float], rng: np.random.Generator, *, turn_sd_deg: float = 25.0,
           turn_every_s: float = 4.0, role: str = "pedestrian") -> Actor:
    """A pedestrian walking at `speed` px/s who turns by a random angle now and then and turns back at the
    edges of `area` (x1, y1, x2, y2): a plaza or a pavement, not a road."""
    t = grid(duration)
    n = len(t)
    cx, cy, vx, vy = (np.zeros(n) for _ in range(4))
    x, y, head = start[0], start[1], math.radians(heading_deg)
    next_turn = rng.exponential(turn_every_s)
    for i in range(n):
        if t[i] >= next_turn:
            head += math.radians(rng.normal(0.0, turn_sd_deg))
            next_turn = t[i] + rng.exponential(turn_every_s)
        ux, uy = math.cos(head), math.sin(head)
        nx, ny = x + ux * speed * DT, y + uy * speed * DT
        if not area[0] <= nx <= area[2]:
            head = math.pi - head
        if not area[1] <= ny <= area[3]:
            head = -head
        ux, uy = math.cos(head), math.sin(head)
        cx[i], cy[i], vx[i], vy[i] = x, y, ux * speed, uy * speed
        x, y = x + ux * speed * DT, y + uy * speed * DT
    return Actor(actor_id, "person", t, cx, cy, vx, vy, _on_screen(cx, cy, *SIZES["person"]), role=role)


# -- ground truth --------------------------------------------------------------------------------------

def _axis_window(d: float, r: float, half: float) -> tuple[float, float]:
    """Times when |d + r t| <= half (the projections overlap), as (enter, exit); empty: enter > exit."""
    if abs(r) < 1e-12:
        return (-math.inf, math.inf) if abs(d) <= half else (math.inf, -math.inf)
    t1, t2 = (-half - d) / r, (half - d) / r
    return (min(t1, t2), max(t1, t2))


def box_ttc(a: Actor, b: Actor, i: int) -> float | None:
    """Seconds until the boxes of `a` and `b` touch if both keep their present velocity; 0 if they
    touch now; None if they never do (the slab method: both axes' overlap windows must meet)."""
    dx, dy = b.cx[i] - a.cx[i], b.cy[i] - a.cy[i]
    rx, ry = b.vx[i] - a.vx[i], b.vy[i] - a.vy[i]
    ex = _axis_window(dx, rx, (a.w + b.w) / 2)
    ey = _axis_window(dy, ry, (a.h + b.h) / 2)
    enter, leave = max(ex[0], ey[0]), min(ex[1], ey[1])
    if enter > leave or leave < 0:
        return None
    return max(0.0, enter)


def box_gap(a: Actor, b: Actor, i: int) -> float:
    """Edge gap between the two boxes now (0 when they overlap), px."""
    gx = abs(b.cx[i] - a.cx[i]) - (a.w + b.w) / 2
    gy = abs(b.cy[i] - a.cy[i]) - (a.h + b.h) / 2
    return math.hypot(max(0.0, gx), max(0.0, gy))


@dataclass(frozen=True)
class Conflict:
    """A labelled hazard between two actors: when the constant-velocity TTC first fell to the threshold
    (onset), when their gap was smallest afterwards (the conflict point), and where."""

    actors: tuple[int, int]
    kind: str
    onset_s: float
    conflict_s: float
    min_ttc_s: float
    min_gap_px: float
    point: tuple[float, float]


def pair_kind(a: Actor, b: Actor) -> str | None:
    """vehicle-pedestrian, vehicle-cyclist, vehicle-vehicle (vehicle first), or None for other pairs."""
    if a.cls in VEHICLES and b.cls in VEHICLES:
        return "vehicle-vehicle"
    va, vb = a.cls in VEHICLES, b.cls in VEHICLES
    if va == vb:
        return None
    other = b if va else a
    return "vehicle-pedestrian" if other.cls == "person" else "vehicle-cyclist"


#: a vehicle slower than this is stopped: a pedestrian walking into a parked car is no hazard
STOPPED_PX_S = 0.5 * PX_PER_M


def vehicle_moving(a: Actor, b: Actor, i: int) -> bool:
    """Some vehicle of the pair moves at sample i (only a moving vehicle makes a hazard)."""
    return any(x.cls in VEHICLES and math.hypot(x.vx[i], x.vy[i]) >= STOPPED_PX_S for x in (a, b))


def find_conflict(a: Actor, b: Actor, threshold_s: float = 1.5) -> Conflict | None:
    """The first stretch in which both are visible, a vehicle of the pair moves, and the true TTC ≤ threshold."""
    kind = pair_kind(a, b)
    if kind is None:
        return None
    both = a.visible & b.visible
    onset = None
    min_ttc = math.inf
    for i in np.flatnonzero(both):
        if not vehicle_moving(a, b, i):
            continue
        ttc = box_ttc(a, b, i)
        if ttc is not None and ttc <= threshold_s:
            onset = i if onset is None else onset
            min_ttc = min(min_ttc, ttc)
        elif onset is not None:
            break
    if onset is None:
        return None
    # the conflict point: the smallest gap from onset on (while both visible), the first such sample
    best, best_gap = onset, math.inf
    for i in range(onset, len(a.t)):
        if not both[i]:
            break
        g = box_gap(a, b, i)
        if g < best_gap - 1e-9:
            best, best_gap = i, g
        if g == 0.0:
            break
    point = ((a.cx[best] + b.cx[best]) / 2, (a.cy[best] + b.cy[best]) / 2)
    va = a.cls in VEHICLES
    ids = (a.actor_id, b.actor_id) if (va or kind == "vehicle-vehicle") else (b.actor_id, a.actor_id)
    return Conflict(ids, kind, round(float(a.t[onset]), 3), round(float(a.t[best]), 3), round(min_ttc, 3),
                     round(best_gap, 1), (round(point[0], 1), round(point[1], 1)))


def min_true_ttc(a: Actor, b: Actor) -> float | None:
    """The smallest constant-velocity TTC over the pair's shared visible time (None: never on course)."""
    if pair_kind(a, b) is None:
        return None
    best = None
    for i in np.flatnonzero(a.visible & b.visible):
        if not vehicle_moving(a, b, i):
            continue
        ttc = box_ttc(a, b, i)
        if ttc is not None and (best is None or ttc < best):
            best = ttc
    return best


@dataclass
class Scenario:
    """A scene: its actors, how long, and what it is (hazard, calm, or neither)."""

    name: str
    duration_s: float
    actors: list[Actor]
    kind: str
    """"hazard" (labelled near-misses), "calm" (no possible conflict), "busy" (conflict possible, no hazard)"""
    note: str = ""
    hazards: list[Conflict] = field(default_factory=list)

    def label(self, threshold_s: float = 1.5) -> None:
        """Find every pair's hazard (true TTC ≤ threshold) from the noise-free trajectories."""
        self.hazards = []
        for i, a in enumerate(self.actors):
            for b in self.actors[i + 1:]:
                c = find_conflict(a, b, threshold_s)
                if c is not None:
                    self.hazards.append(c)
