"""The outbox rules, pure: what goes out, in which order, when it is due again, when it is dead.

No I/O and no clock: the dispatcher (hazardctl/sinks/dispatcher.py) passes the time in, persists
what these rules decide in the incident store, and talks to the receivers. Rules, and why:

- Routing (`Router`): only incident events go out (new/update/end and operators' actions). An
  incident is routed once its level reaches `min_level`; camera-health incidents always are. A
  per-camera cooldown holds back further incidents of a camera that just alerted. Once routed,
  every later event of that incident goes out too (its end included), so a receiver always sees a
  whole lifecycle; an incident held back stays held back.
- Every routed event gets the incident's next `seq`; `incident_id:seq` is the idempotency key, the
  same on every sink and on every retry.
- Order per incident per sink: only the oldest pending event of an (sink, incident) is ever in
  flight; the next one waits until it is delivered or dead. Different incidents never wait for
  each other.
- A failed attempt is retried after an exponential backoff (capped, with jitter); after
  `max_attempts` attempts, or at once when the receiver refused it for good (e.g. HTTP 400), it is a
  dead letter. A sink that failed twice in a row is *down*: it gets one probe at a time, its oldest
  event, at the backoff of its failures in a row — an outage costs one attempt per backoff step, not
  one per incident, and only the probe spends attempts. When a sink delivers again after failures in a row, everything it holds is due at
  once: a receiver back after an outage gets its backlog without waiting for each event's backoff
  (one event that keeps failing among deliveries does not wake the others: it keeps its backoff).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from hazardctl.incidents import LEVEL_RANK

CAMERA_INCIDENT = "camera"
"""`type` of an incident about a camera's health (hazardctl/camera_watch.py), not a scene"""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float = 1.0
    """first retry after this long"""
    factor: float = 2.0
    cap_s: float = 30.0
    """never wait longer than this between two attempts"""
    max_attempts: int = 12
    """attempts before an event is dead (12 with the defaults: about 4 minutes of retries; while its sink is down
    only the probe spends attempts, so the others wait for the receiver however long it is away)"""
    jitter: float = 0.2
    """± this fraction, so events that failed together do not all retry in the same instant"""

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.factor < 1 or self.cap_s < self.base_s or self.max_attempts < 1:
            raise ValueError("retry policy: base_s > 0, factor >= 1, cap_s >= base_s, max_attempts >= 1")

    def delay(self, attempts: int, rand: float = 0.5) -> float:
        """Wait before the next attempt after `attempts` failed ones (rand ∈ [0, 1) for the jitter)."""
        d = min(self.cap_s, self.base_s * self.factor ** max(0, min(attempts - 1, 60)))
        return max(0.0, min(self.cap_s, d * (1.0 + self.jitter * (2.0 * rand - 1.0))))


# ---- routing ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Route:
    """What the router remembers of one incident."""

    camera_id: str
    routed: bool
    seq: int = 0
    ended: bool = False


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event to deliver to every sink."""

    incident_id: str
    camera_id: str
    seq: int
    action: str
    body: dict

    @property
    def key(self) -> str:
        """The idempotency key: the same on every sink and every retry."""
        return f"{self.incident_id}:{self.seq}"


Decision = str  # "routed" | "below_level" | "cooldown" | "held_back" | "not_incident"


class Router:
    """Decides which incident events go to the sinks and numbers them (see the module docstring)."""

    def __init__(self, min_level: str = "medium", cooldown_s: float = 0.0, memory: int = 200_000):
        if min_level not in LEVEL_RANK:
            raise ValueError(f"sink min level must be one of {', '.join(LEVEL_RANK)}")
        if cooldown_s < 0:
            raise ValueError("sink cooldown must be >= 0")
        self.min_rank = LEVEL_RANK[min_level]
        self.cooldown_s = cooldown_s
        self.memory = memory
        self.routes: OrderedDict[str, Route] = OrderedDict()
        self.camera_alerted_at: dict[str, float] = {}

    def restore(self, incident_id: str, route: Route) -> None:
        """A route read back from the store after a restart."""
        self.routes[incident_id] = route
        self._bound()

    def offer(self, kind: str, action: str, body: dict, now: float) -> tuple[Decision, Outgoing | None]:
        if kind != "incident":
            return "not_incident", None
        inc_id = body.get("incident_id")
        if not inc_id:
            return "not_incident", None
        camera = str(body.get("camera_id", ""))
        route = self.routes.get(inc_id)
        if route is None:
            qualifies = body.get("type") == CAMERA_INCIDENT or LEVEL_RANK.get(
                body.get("peak_level") or body.get("level") or "none", 0) >= self.min_rank
            if not qualifies:
                return "below_level", None  # not remembered: a later, hotter event may still route it
            cooling = body.get("type") != CAMERA_INCIDENT and self.cooldown_s > 0 and \
                now - self.camera_alerted_at.get(camera, float("-inf")) < self.cooldown_s
            route = Route(camera, routed=not cooling)
            self.routes[inc_id] = route
            self._bound()
            if cooling:
                if action == "end":
                    self.routes.pop(inc_id, None)
                return "cooldown", None
            if body.get("type") != CAMERA_INCIDENT:
                self.camera_alerted_at[camera] = now
        else:
            self.routes.move_to_end(inc_id)
        if action == "end":
            route.ended = True
        if not route.routed:
            if route.ended:
                self.routes.pop(inc_id, None)
            return "held_back", None
        route.seq += 1
        return "routed", Outgoing(inc_id, camera, route.seq, action, body)

    def _bound(self) -> None:
        """Forget the least recently moved routes past `memory`, ended ones first (a route forgotten while its
        incident is still open would number it from 1 again; the store keeps them all for a restart)."""
        while len(self.routes) > self.memory:
            victim = next((k for k, r in self.routes.items() if r.ended), None)
            if victim is None:
                self.routes.popitem(last=False)
            else:
                del self.routes[victim]


# ---- the queue of pending deliveries ------------------------------------------------------------


@dataclass(slots=True)
class Pending:
    """One event waiting for one sink."""

    sink: str
    incident_id: str
    seq: int
    camera_id: str
    payload: bytes
    created_at: float
    attempts: int = 0
    next_at: float = 0.0
    last_error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.incident_id}:{self.seq}"


@dataclass(frozen=True, slots=True)
class Failure:
    """What happens after a failed attempt: retried at `retry_at`, or dead (`retry_at` None)."""

    entry: Pending
    retry_at: float | None

    @property
    def dead(self) -> bool:
        return self.retry_at is None


@dataclass
class OutboxQueue:
    """Pending deliveries of every sink, in order per (sink, incident); which ones are due now."""

    policy: RetryPolicy = field(default_factory=RetryPolicy)
    queues: dict[tuple[str, str], list[Pending]] = field(default_factory=dict)
    in_flight: set[tuple[str, str]] = field(default_factory=set)
    failing: dict[str, int] = field(default_factory=dict)
    """failed attempts in a row, per sink (reset by a delivery)"""
    counts: dict[str, int] = field(default_factory=dict)
    """pending entries per sink (read by the metrics thread: a plain int per sink, never an iteration)"""
    probe_at: dict[str, float] = field(default_factory=dict)
    """a sink that is down (DOWN_AFTER failures in a row) is tried again with one event at this time"""
    flying: dict[str, int] = field(default_factory=dict)
    """attempts in flight per sink"""

    DOWN_AFTER = 2

    def down(self, sink: str) -> bool:
        return self.failing.get(sink, 0) >= self.DOWN_AFTER

    def add(self, entry: Pending) -> None:
        self.counts[entry.sink] = self.counts.get(entry.sink, 0) + 1
        q = self.queues.setdefault((entry.sink, entry.incident_id), [])
        if q and q[-1].seq >= entry.seq:  # restored out of order: keep seq order
            q.append(entry)
            q.sort(key=lambda e: e.seq)
        else:
            q.append(entry)

    def pending(self, sink: str | None = None) -> int:
        return sum(self.counts.values()) if sink is None else self.counts.get(sink, 0)

    def due(self, now: float, limit: int | None = None, sink: str | None = None) -> list[Pending]:
        """The heads whose time has come and that are not in flight, oldest first; marks them in flight.

        A sink that is down gets one probe at a time, its oldest event, at `probe_at`: an outage costs
        one attempt per backoff step, not one per incident, and the other events keep their attempts."""
        heads = [q[0] for k, q in self.queues.items()
                 if k not in self.in_flight and (sink is None or k[0] == sink)
                 and (q[0].next_at <= now or self.down(k[0]))]
        out: list[Pending] = []
        probed: set[str] = set()
        heads.sort(key=lambda e: (e.created_at, e.seq) if self.down(e.sink) else (e.next_at, e.created_at, e.seq))
        for e in heads:
            if self.down(e.sink):
                if e.sink in probed or self.flying.get(e.sink, 0) or now < self.probe_at.get(e.sink, 0.0):
                    continue
                probed.add(e.sink)
            out.append(e)
            if limit is not None and len(out) >= limit:
                break
        for e in out:
            self.in_flight.add((e.sink, e.incident_id))
            self.flying[e.sink] = self.flying.get(e.sink, 0) + 1
        return out

    def next_due(self, skip: frozenset[str] = frozenset()) -> float | None:
        """When `due` will next have something (None: nothing waits, or only what an attempt in flight holds
        back): a down sink's probe time unless its probe is in flight; sinks in `skip` (no room) left out."""
        times = [self.probe_at.get(k[0], 0.0) if self.down(k[0]) else q[0].next_at
                 for k, q in self.queues.items()
                 if k not in self.in_flight and k[0] not in skip and not (self.down(k[0]) and self.flying.get(k[0]))]
        return min(times) if times else None

    def delivered(self, entry: Pending, now: float) -> list[Pending]:
        """`entry` reached its receiver; returns the entries brought forward because the sink is back."""
        self._pop(entry)
        woken: list[Pending] = []
        self.probe_at.pop(entry.sink, None)
        if self.failing.pop(entry.sink, 0) >= self.DOWN_AFTER:  # it was down and delivers again: it is back
            for k, q in self.queues.items():
                if k[0] == entry.sink and k not in self.in_flight and q[0].next_at > now:
                    q[0].next_at = now
                    woken.append(q[0])
        return woken

    def failed(self, entry: Pending, now: float, error: str, *, permanent: bool = False,
               rand: float = 0.5) -> Failure:
        """An attempt failed; `permanent` (the receiver refused it for good) makes it dead at once."""
        self._landed(entry)
        entry.attempts += 1
        entry.last_error = error
        if permanent:  # the receiver answered: it is up, this event is the problem
            self.failing.pop(entry.sink, None)
            self.probe_at.pop(entry.sink, None)
        else:
            self.failing[entry.sink] = self.failing.get(entry.sink, 0) + 1
        delay = self.policy.delay(max(entry.attempts, self.failing.get(entry.sink, 0)), rand)
        if self.down(entry.sink):
            self.probe_at[entry.sink] = now + delay
        if permanent or entry.attempts >= self.policy.max_attempts:
            self._pop(entry)
            return Failure(entry, None)
        entry.next_at = now + delay
        return Failure(entry, entry.next_at)

    def _landed(self, entry: Pending) -> None:
        """An attempt of `entry` is over (whatever its outcome)."""
        if (entry.sink, entry.incident_id) in self.in_flight:
            self.in_flight.discard((entry.sink, entry.incident_id))
            self.flying[entry.sink] -= 1

    def _pop(self, entry: Pending) -> None:
        k = (entry.sink, entry.incident_id)
        self._landed(entry)
        q = self.queues.get(k)
        if not q or q[0] is not entry:
            raise ValueError(f"{entry.key} on {entry.sink} is not the head of its queue")
        q.pop(0)
        self.counts[entry.sink] -= 1
        if not q:
            del self.queues[k]
