"""The scenario library: street scenes built from simple physics, each a `Scenario` (pure, seeded).

Hazards (labelled near-misses, ground-truth TTC ≤ 1.5 s; a few seconds long, replayed in real time):
  crossing-KMH-DIR   a pedestrian crosses; a car at 20–60 km/h brakes hard (7 m/s²) and stops
                     0.3–1 m short of them
  cyclist-KMH-DIR    the same with a cyclist (vehicle-cyclist)
  rear-end-A-B       a car at A km/h closes on a car at B km/h in its lane and brakes late (6 m/s²)
                     to B km/h with under a metre to spare (vehicle-vehicle)
Busy (conflict possible, no hazard):
  brakes-in-time     a car at 40 km/h sees a crossing pedestrian and brakes gently (3 m/s²) to stop
                     8 m short: closing motion, true TTC never ≤ 1.5 s
Calm (no possible conflict; long, replayed as fast as possible, to count calls and false alarms):
  crowd-plaza        14 pedestrians walking about a plaza, no vehicle
  parked-row         six parked cars along the kerb, pedestrians walking the pavement past them
  parallel-traffic   two lanes, pairs of cars side by side at the same 40 km/h, a pair every 15 s
  waiting-crossing   three cars queued (stopped) at a red light while pedestrians cross in front

Roads run left-right: the eastbound lane at y = 560, the westbound at y = 640 (1920x1080, physics.py).
"""

from __future__ import annotations

import numpy as np

from tools.scenarios.physics import (SIZES, WIDTH, Actor, Scenario, kmh, moving, mps, parked, walker)

EAST_Y, WEST_Y = 560.0, 640.0
KERB_N, KERB_S = 500.0, 700.0
"""the road's edges: north pavement above KERB_N, south pavement below KERB_S"""


def _lane(direction: str) -> tuple[float, float, float]:
    """(lane y, heading degrees, entry x) for "E" (left to right) or "W"."""
    return (EAST_Y, 0.0, -50.0) if direction == "E" else (WEST_Y, 180.0, WIDTH + 50.0)


def crossing(speed_kmh: float, direction: str, rng: np.random.Generator, *, crosser: str = "person",
             decel_mps2: float = 7.0, stop_gap_m: float | None = None, name: str | None = None) -> Scenario:
    """A pedestrian (or cyclist) crosses the road from the north pavement; a car brakes hard for them."""
    lane_y, heading, entry_x = _lane(direction)
    sign = 1.0 if direction == "E" else -1.0
    v = kmh(speed_kmh)
    cw, _ = SIZES["car"]
    pw, ph = SIZES["person" if crosser == "person" else "bicycle"]
    x_c = (rng.uniform(1350, 1550) if direction == "E" else rng.uniform(370, 570))
    vp = mps(rng.uniform(1.2, 1.6) if crosser == "person" else rng.uniform(3.5, 5.0))
    t_meet = rng.uniform(5.0, 6.0)
    """when the crosser reaches the lane's centre line, and when the car would reach them unbraked"""
    y0 = lane_y - vp * t_meet
    if crosser != "person":
        y0 = max(y0, 120.0)
        t_meet = (lane_y - y0) / vp
    role = "pedestrian" if crosser == "person" else "cyclist"
    # the car: unbraked, its centre would be at x_c at t_meet; it enters at entry_x
    x0 = x_c - sign * v * t_meet
    enter_at = max(0.0, (entry_x - x0) * sign / v)
    start_x = x0 + sign * v * enter_at
    gap_m = stop_gap_m if stop_gap_m is not None else rng.uniform(0.3, 1.0)
    stop_x = x_c - sign * ((cw + pw) / 2 + mps(gap_m))
    a = mps(decel_mps2)
    brake_dist = v * v / (2 * a)
    brake_at = enter_at + (abs(stop_x - start_x) - brake_dist) / v
    duration = max(t_meet, brake_at + v / a) + 3.0
    person = moving(1, crosser, duration, (x_c, y0), 90.0, vp, role=role)
    car = moving(2, "car", duration, (start_x, lane_y), heading, v, brake_at=brake_at, decel=a, enter_at=enter_at,
                 role="car")
    return Scenario(name or f"{'crossing' if crosser == 'person' else 'cyclist'}-{speed_kmh:g}-{direction}",
                    round(duration, 2), [person, car], "hazard",
                    f"a {role} crosses; a car at {speed_kmh:g} km/h brakes at {decel_mps2:g} m/s², stops {gap_m:.1f} m short")


def rear_end(fast_kmh: float, slow_kmh: float, rng: np.random.Generator, *, decel_mps2: float = 6.0) -> Scenario:
    """A car closes on a slower one in its lane and brakes late to the leader's speed."""
    vf, vs = kmh(fast_kmh), kmh(slow_kmh)
    cw, _ = SIZES["car"]
    lead_x = rng.uniform(950, 1100)
    a = mps(decel_mps2)
    spare = mps(rng.uniform(0.3, 0.8))
    dv = vf - vs
    closing_dist = dv * dv / (2 * a)  # how much the gap shrinks while braking from vf to vs
    gap0 = lead_x - (-50.0) - cw
    brake_at = (gap0 - closing_dist - spare) / dv
    duration = brake_at + dv / a + 2.5
    leader = moving(1, "car", duration, (lead_x, EAST_Y), 0.0, vs, role="leader")
    follower = moving(2, "car", duration, (-50.0, EAST_Y), 0.0, vf, brake_at=brake_at, decel=a, min_speed=vs,
                      role="follower")
    return Scenario(f"rear-end-{fast_kmh:g}-{slow_kmh:g}", round(duration, 2), [leader, follower], "hazard",
                    f"a car at {fast_kmh:g} km/h closes on one at {slow_kmh:g} km/h, brakes at {decel_mps2:g} m/s² "
                    f"to its speed with {spare / mps(1):.1f} m to spare")


def brakes_in_time(rng: np.random.Generator) -> Scenario:
    s = crossing(40, "E", rng, decel_mps2=3.0, stop_gap_m=8.0, name="brakes-in-time")
    s.kind, s.note = "busy", "a car at 40 km/h brakes at 3 m/s² for a crossing pedestrian, stops 8 m short"
    return s


# -- calm scenes -----------------------------------------------------------------------------------------

def crowd_plaza(duration: float, rng: np.random.Generator, people: int = 14) -> Scenario:
    area = (80.0, 120.0, 1840.0, 1000.0)
    actors = []
    for i in range(people):
        start = (rng.uniform(area[0], area[2]), rng.uniform(area[1], area[3]))
        actors.append(walker(i + 1, duration, start, rng.uniform(-180, 180), mps(rng.uniform(0.9, 1.5)), area, rng))
    return Scenario("crowd-plaza", duration, actors, "calm", f"{people} pedestrians walking about a plaza, no vehicle")


def parked_row(duration: float, rng: np.random.Generator, people: int = 4) -> Scenario:
    actors: list[Actor] = []
    for i in range(6):
        actors.append(parked(i + 1, "car", duration, (260.0 + i * 240.0 + rng.uniform(-20, 20), 760.0)))
    pavement = (60.0, 830.0, 1860.0, 1000.0)
    for j in range(people):
        start = (rng.uniform(pavement[0], pavement[2]), rng.uniform(pavement[1], pavement[3]))
        heading = 0.0 if j % 2 else 180.0
        actors.append(walker(10 + j, duration, start, heading, mps(rng.uniform(1.0, 1.5)), pavement, rng,
                             turn_sd_deg=8.0, turn_every_s=6.0))
    return Scenario("parked-row", duration, actors, "calm",
                    f"six parked cars along the kerb, {people} pedestrians walking the pavement past them")


def parallel_traffic(duration: float, rng: np.random.Generator, every_s: float = 15.0, speed_kmh: float = 40.0) -> Scenario:
    v = kmh(speed_kmh)
    actors: list[Actor] = []
    t, aid = 0.0, 1
    lanes = (EAST_Y - 35.0, EAST_Y + 35.0)
    # the first pair is already in view at the start
    first = True
    while t < duration:
        offset = rng.uniform(-40, 40)
        for k, y in enumerate(lanes):
            x = 300.0 + (offset if k else 0.0) if first else -50.0 + (offset if k else 0.0)
            actors.append(moving(aid, "car", duration, (x, y), 0.0, v, enter_at=0.0 if first else t, role="car"))
            aid += 1
        first = False
        t += every_s * rng.uniform(0.8, 1.2)
    return Scenario("parallel-traffic", duration, actors, "calm",
                    f"two lanes, pairs of cars side by side at {speed_kmh:g} km/h, a pair every ~{every_s:g} s")


def waiting_crossing(duration: float, rng: np.random.Generator, people: int = 5) -> Scenario:
    actors: list[Actor] = []
    cw, _ = SIZES["car"]
    line_x = 1200.0
    for i in range(3):
        actors.append(parked(i + 1, "car", duration, (line_x - cw / 2 - 20.0 - i * (cw + 30.0), EAST_Y), role="waiting"))
    crosswalk = (line_x + 40.0, 380.0, line_x + 160.0, 820.0)
    for j in range(people):
        start = (rng.uniform(crosswalk[0], crosswalk[2]), rng.uniform(crosswalk[1], crosswalk[3]))
        actors.append(walker(10 + j, duration, start, 90.0 if j % 2 else -90.0, mps(rng.uniform(1.1, 1.5)),
                             crosswalk, rng, turn_sd_deg=5.0, turn_every_s=10.0))
    return Scenario("waiting-crossing", duration, actors, "calm",
                    f"three cars stopped at a red light, {people} pedestrians crossing in front of them")


# -- the library ---------------------------------------------------------------------------------------------

def hazards(seed: int = 7, quick: bool = False, variants: int = 3) -> list[Scenario]:
    """Labelled near-misses, each in `variants` draws (positions, walking speeds, stopping gaps; names
    end in -v2, -v3…), and the car braking in time; `quick`: a few, once (the test in make test)."""
    rng = np.random.default_rng(seed)
    out: list[Scenario] = []
    for n in range(1 if quick else variants):
        batch: list[Scenario] = []
        for v in ((30, 50) if quick else (20, 30, 40, 50, 60)):
            for d in (("E",) if quick else ("E", "W")):
                batch.append(crossing(v, d, rng))
        for v in ((40,) if quick else (30, 50)):
            batch.append(crossing(v, "W", rng, crosser="bicycle"))
        for fast, slow in (((50, 20),) if quick else ((50, 20), (60, 30), (40, 10))):
            batch.append(rear_end(fast, slow, rng))
        for s in batch:
            s.name += f"-v{n + 1}" if n else ""
        out += batch
    out.append(brakes_in_time(rng))
    for s in out:
        s.label()
    return out


def calm(duration: float = 900.0, seed: int = 11) -> list[Scenario]:
    """Scenes with no possible conflict, `duration` seconds each (default 15 min: 4 make a camera-hour)."""
    rng = np.random.default_rng(seed)
    out = [crowd_plaza(duration, rng), parked_row(duration, rng), parallel_traffic(duration, rng),
           waiting_crossing(duration, rng)]
    for s in out:
        s.label()
    return out


def describe(s: Scenario) -> str:
    hz = "; ".join(f"{h.kind} onset {h.onset_s:.2f} s, conflict {h.conflict_s:.2f} s, min TTC {h.min_ttc_s:.2f} s"
                   for h in s.hazards)
    return f"{s.name} ({s.kind}, {s.duration_s:g} s): {s.note}" + (f" — {hz}" if hz else "")
