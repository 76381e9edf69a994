"""The outbox's tables in the incident store (hazardctl/store): what survives a restart of consume.

`sink_outbox` holds every event not yet delivered to a sink (and the dead ones, kept for operators
until pruned); a delivered row is deleted. `sink_routes` holds the router's memory per incident
(routed or held back, the last seq), so a restarted consume goes on numbering where it stopped and
never reuses an idempotency key. The dispatcher keeps the working set in memory and writes here as
a journal, in order, one transaction per batch; a failed write is kept and retried, and never
stops a delivery.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text

from hazardctl.sinks.outbox import Pending, Route
from hazardctl.store import Migration, Store, register

COMPONENT = "sinks"

register(Migration(COMPONENT, 1, (
    "CREATE TABLE sink_outbox (id {serial}, sink TEXT NOT NULL, incident_id TEXT NOT NULL, seq INTEGER NOT NULL, "
    "camera_id TEXT NOT NULL, payload {blob} NOT NULL, created_at {float} NOT NULL, "
    "attempts INTEGER NOT NULL DEFAULT 0, next_at {float} NOT NULL, last_error TEXT, "
    "state TEXT NOT NULL DEFAULT 'pending')",
    "CREATE UNIQUE INDEX sink_outbox_key ON sink_outbox (sink, incident_id, seq)",
    "CREATE INDEX sink_outbox_state ON sink_outbox (state, created_at)",
    "CREATE TABLE sink_routes (incident_id TEXT PRIMARY KEY, camera_id TEXT NOT NULL, routed INTEGER NOT NULL, "
    "seq INTEGER NOT NULL, ended INTEGER NOT NULL, updated_at {float} NOT NULL)",
    "CREATE INDEX sink_routes_updated ON sink_routes (ended, updated_at)",
), "alert sinks: the outbox of undelivered events and the routing memory per incident"))

_INSERT = text("INSERT INTO sink_outbox (sink, incident_id, seq, camera_id, payload, created_at, attempts, next_at) "
               "VALUES (:sink, :inc, :seq, :cam, :payload, :created, 0, :next) "
               "ON CONFLICT (sink, incident_id, seq) DO NOTHING")
_ROUTE = text("INSERT INTO sink_routes (incident_id, camera_id, routed, seq, ended, updated_at) "
              "VALUES (:inc, :cam, :routed, :seq, :ended, :at) ON CONFLICT (incident_id) DO UPDATE SET "
              "routed = excluded.routed, seq = excluded.seq, ended = excluded.ended, updated_at = excluded.updated_at")
_DELETE = text("DELETE FROM sink_outbox WHERE sink = :sink AND incident_id = :inc AND seq = :seq")
_RETRY = text("UPDATE sink_outbox SET attempts = :attempts, next_at = :next, last_error = :err "
              "WHERE sink = :sink AND incident_id = :inc AND seq = :seq")
_DEAD = text("UPDATE sink_outbox SET state = 'dead', attempts = :attempts, last_error = :err "
             "WHERE sink = :sink AND incident_id = :inc AND seq = :seq")


def _key(e: Pending) -> dict:
    return {"sink": e.sink, "inc": e.incident_id, "seq": e.seq}


@dataclass
class OutboxJournal:
    """Writes of the dispatcher, kept in order until the store has them."""

    store: Store
    ops: list[tuple] = field(default_factory=list)
    max_ops: int = 200_000
    dropped: int = 0
    """journal writes given up because the store was away too long (the deliveries still happen)"""

    # ---- what the dispatcher records ----
    def routed(self, incident_id: str, route: Route, at: float) -> None:
        self._add((_ROUTE, {"inc": incident_id, "cam": route.camera_id, "routed": int(route.routed),
                            "seq": route.seq, "ended": int(route.ended), "at": at}))

    def enqueued(self, e: Pending) -> None:
        self._add((_INSERT, {**_key(e), "cam": e.camera_id, "payload": e.payload, "created": e.created_at,
                             "next": e.next_at}))

    def delivered(self, e: Pending) -> None:
        self._add((_DELETE, _key(e)))

    def retry(self, e: Pending) -> None:
        self._add((_RETRY, {**_key(e), "attempts": e.attempts, "next": e.next_at, "err": e.last_error}))

    def dead(self, e: Pending) -> None:
        self._add((_DEAD, {**_key(e), "attempts": e.attempts, "err": e.last_error}))

    def _add(self, op: tuple) -> None:
        self.ops.append(op)
        if len(self.ops) > self.max_ops:
            del self.ops[0]
            self.dropped += 1

    def flush(self) -> int:
        """Write what is pending in one transaction; returns how many writes it made (raises on failure,
        keeping them for the next call)."""
        if not self.ops:
            return 0
        n = len(self.ops)
        with self.store.transaction() as conn:
            i = 0
            while i < n:  # consecutive writes of one kind go as one executemany, in order
                stmt, j = self.ops[i][0], i + 1
                while j < n and self.ops[j][0] is stmt:
                    j += 1
                conn.execute(stmt, [p for _s, p in self.ops[i:j]])
                i = j
        del self.ops[:n]
        return n

    # ---- a restart ----
    def load(self, recent_s: float, now: float) -> tuple[list[tuple[str, Route]], list[Pending]]:
        """Routes of open incidents (and of ended ones touched in the last `recent_s`), and every pending row."""
        with self.store.reading() as conn:
            routes = [(r.incident_id, Route(r.camera_id, bool(r.routed), int(r.seq), bool(r.ended)))
                      for r in conn.execute(text(
                          "SELECT incident_id, camera_id, routed, seq, ended FROM sink_routes "
                          "WHERE ended = 0 OR updated_at >= :since ORDER BY updated_at"), {"since": now - recent_s})]
            rows = [Pending(r.sink, r.incident_id, int(r.seq), r.camera_id, bytes(r.payload), float(r.created_at),
                            int(r.attempts), float(r.next_at), r.last_error)
                    for r in conn.execute(text(
                        "SELECT sink, incident_id, seq, camera_id, payload, created_at, attempts, next_at, last_error "
                        "FROM sink_outbox WHERE state = 'pending' ORDER BY id"))]
        return routes, rows

    def counts(self) -> dict[str, int]:
        with self.store.reading() as conn:
            return {state: int(n) for state, n in conn.execute(
                text("SELECT state, COUNT(*) FROM sink_outbox GROUP BY state"))}

    def prune(self, before: float) -> int:
        """Forget dead rows created before `before` and routes of incidents ended before it."""
        with self.store.transaction() as conn:
            n = conn.execute(text("DELETE FROM sink_outbox WHERE state = 'dead' AND created_at < :t"),
                             {"t": before}).rowcount
            n += conn.execute(text("DELETE FROM sink_routes WHERE ended = 1 AND updated_at < :t"),
                              {"t": before}).rowcount
        return n
