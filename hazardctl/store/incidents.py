"""Incidents in the store: their tables, the writes consume's writer makes, and the history reads.

Tables (component "incidents"): `incidents` (one row per incident, its latest state and the operator's
disposition), `incident_results` (every result applied to an incident: level, risk types,
description, key name, model, prompt version, times, the crop's sha256), `incident_actions` (ack /
resolve / false-positive with a note), `evidence` (one row per crop file, for the size cap) and
`consume_offsets` (the next Kafka offset per partition whose result is stored: where a restart's
replay starts). Writes are idempotent (upserts, a result once per (incident, task)), so a batch
retried after the database came back, or a replay over stored results, changes nothing twice.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
from sqlalchemy import text

from hazardctl.messages import RISK_LEVELS
from hazardctl.store import Migration, Store, register
from hazardctl.store.evidence import EvidenceFiles

log = logging.getLogger("hazardctl.store")

register(Migration("incidents", 1, (
    "CREATE TABLE incidents (incident_id TEXT PRIMARY KEY, camera_id TEXT NOT NULL, group_id TEXT NOT NULL, "
    "state TEXT NOT NULL, disposition TEXT, level TEXT NOT NULL, peak_level TEXT NOT NULL, risk_types TEXT NOT NULL, "
    "description TEXT NOT NULL, confidence {float}, opened_at {float} NOT NULL, updated_at {float} NOT NULL, "
    "last_hot_at {float} NOT NULL, ended_at {float}, frame_id BIGINT NOT NULL, frame_ts {float} NOT NULL, "
    "task_id TEXT NOT NULL, results INTEGER NOT NULL, times TEXT NOT NULL, acked_at {float}, resolved_at {float})",
    "CREATE INDEX incidents_by_time ON incidents (opened_at, incident_id)",
    "CREATE INDEX incidents_by_camera ON incidents (camera_id, opened_at)",
    "CREATE INDEX incidents_by_state ON incidents (state)",
    "CREATE TABLE incident_results (id {serial}, incident_id TEXT NOT NULL REFERENCES incidents (incident_id) "
    "ON DELETE CASCADE, task_id TEXT NOT NULL, received_at {float} NOT NULL, frame_id BIGINT NOT NULL, "
    "frame_ts {float} NOT NULL, level TEXT NOT NULL, risk_types TEXT NOT NULL, description TEXT NOT NULL, "
    "confidence {float}, key_name TEXT, model TEXT, prompt_version TEXT, times TEXT NOT NULL, crop_sha256 TEXT, "
    "UNIQUE (incident_id, task_id))",
    "CREATE INDEX incident_results_by_incident ON incident_results (incident_id, id)",
    "CREATE TABLE incident_actions (id {serial}, incident_id TEXT NOT NULL REFERENCES incidents (incident_id) "
    "ON DELETE CASCADE, action TEXT NOT NULL, note TEXT, at {float} NOT NULL)",
    "CREATE INDEX incident_actions_by_incident ON incident_actions (incident_id, id)",
    "CREATE TABLE evidence (sha256 TEXT PRIMARY KEY, bytes INTEGER NOT NULL, created_at {float} NOT NULL)",
    "CREATE INDEX evidence_by_age ON evidence (created_at)",
    "CREATE TABLE consume_offsets (topic TEXT NOT NULL, kafka_partition INTEGER NOT NULL, next_offset BIGINT NOT NULL, "
    "record_ts {float}, updated_at {float} NOT NULL, PRIMARY KEY (topic, kafka_partition))",
), "incidents, their results and actions, evidence, consume offsets"),
         Migration("incidents", 2, (
             "ALTER TABLE incident_actions ADD COLUMN actor TEXT",
         ), "who took an action, as the operator gave it"),
         Migration("incidents", 3, (
             "ALTER TABLE incidents ADD COLUMN kind TEXT",
         ), "the incident's kind: NULL for a scene incident, 'camera' for a camera outage (issue 18.6)"),
         Migration("incidents", 4, (
             "CREATE TABLE result_frames (incident_id TEXT NOT NULL REFERENCES incidents (incident_id) ON DELETE "
             "CASCADE, task_id TEXT NOT NULL, n INTEGER NOT NULL, offset_s {float} NOT NULL, kind TEXT NOT NULL, "
             "sha256 TEXT NOT NULL, PRIMARY KEY (incident_id, task_id, n))",
             "CREATE INDEX result_frames_by_sha ON result_frames (sha256)",
         ), "the other images a result's model saw (earlier crops, a thumbnail), kept as evidence (issue 18.2)"))

ACTIONS = ("ack", "resolve", "false_positive")
DISPOSITIONS = {"ack": "acked", "resolve": "resolved", "false_positive": "false_positive"}
STATES = ("open", "ended", "acked", "resolved", "false_positive", "unacked")

_INCIDENT_COLS = ("incident_id", "camera_id", "group_id", "state", "disposition", "level", "peak_level", "risk_types",
                  "description", "confidence", "opened_at", "updated_at", "last_hot_at", "ended_at", "frame_id",
                  "frame_ts", "task_id", "results", "times", "acked_at", "resolved_at", "kind")
_RESULT_COLS = ("incident_id", "task_id", "received_at", "frame_id", "frame_ts", "level", "risk_types", "description",
                "confidence", "key_name", "model", "prompt_version", "times", "crop_sha256")
_KEPT = ("disposition", "acked_at", "resolved_at")
"""an operator's word is never taken back by a later upsert that lacks it (another instance's board)"""
_UPSERT_INCIDENT = text(
    f"INSERT INTO incidents ({', '.join(_INCIDENT_COLS)}) VALUES ({', '.join(':' + c for c in _INCIDENT_COLS)}) "
    "ON CONFLICT (incident_id) DO UPDATE SET "
    + ", ".join(f"{c} = COALESCE(excluded.{c}, incidents.{c})" if c in _KEPT else f"{c} = excluded.{c}"
                for c in _INCIDENT_COLS if c not in ("incident_id", "opened_at")))
_INSERT_RESULT = text(
    f"INSERT INTO incident_results ({', '.join(_RESULT_COLS)}) VALUES ({', '.join(':' + c for c in _RESULT_COLS)}) "
    "ON CONFLICT (incident_id, task_id) DO NOTHING")
_INSERT_FRAME = text("INSERT INTO result_frames (incident_id, task_id, n, offset_s, kind, sha256) VALUES "
                     "(:incident_id, :task_id, :n, :offset_s, :kind, :sha256) ON CONFLICT (incident_id, task_id, n) "
                     "DO NOTHING")
_INSERT_EVIDENCE = text("INSERT INTO evidence (sha256, bytes, created_at) VALUES (:sha256, :bytes, :at) "
                        "ON CONFLICT (sha256) DO NOTHING")
_INSERT_ACTION = text("INSERT INTO incident_actions (incident_id, action, note, at, actor) SELECT :incident_id, "
                      ":action, :note, :at, :actor WHERE NOT EXISTS (SELECT 1 FROM incident_actions WHERE "
                      "incident_id = :incident_id AND action = :action AND at = :at)")
"""idempotent: consume instances sharing actions (`--actions`) and one database record each action once"""
_UPSERT_OFFSET = text("INSERT INTO consume_offsets (topic, kafka_partition, next_offset, record_ts, updated_at) "
                      "VALUES (:topic, :partition, :next_offset, :record_ts, :at) ON CONFLICT (topic, kafka_partition) "
                      "DO UPDATE SET next_offset = excluded.next_offset, record_ts = excluded.record_ts, "
                      "updated_at = excluded.updated_at WHERE excluded.next_offset > consume_offsets.next_offset")


def incident_row(inc: dict) -> dict:
    """An incident as the board shows it (Incident.as_dict) → its row."""
    return {"incident_id": inc["incident_id"], "camera_id": inc["camera_id"], "group_id": inc["group_id"],
            "state": inc["state"], "disposition": inc.get("disposition"), "level": inc["level"],
            "peak_level": inc["peak_level"], "risk_types": orjson.dumps(inc["risk_types"]).decode(),
            "description": inc["description"], "confidence": inc["confidence"], "opened_at": inc["opened_at"],
            "updated_at": inc["updated_at"], "last_hot_at": inc["last_hot_at"], "ended_at": inc["ended_at"],
            "frame_id": inc["frame_id"], "frame_ts": inc["frame_ts"], "task_id": inc["task_id"] or "",
            "results": inc["results"], "times": orjson.dumps(inc.get("times") or {}).decode(),
            "acked_at": inc.get("acked_at"), "resolved_at": inc.get("resolved_at"), "kind": inc.get("type")}


def _incident_dict(row) -> dict:
    d = dict(row._mapping)
    d["risk_types"] = orjson.loads(d["risk_types"])
    d["times"] = orjson.loads(d["times"])
    kind = d.pop("kind", None)
    if kind is not None:  # a camera incident reads back as consume pushed it: `type`, no task
        d["type"] = kind
        d["task_id"] = d["task_id"] or None
    return d


# ---- writes: what the writer thread is given ----------------------------------------------------


@dataclass(slots=True)
class IncidentWrite:
    """An incident's current state (from the board), optionally with the result just applied to it."""

    incident: dict
    result: dict | None = None
    crop_b64: str | None = None
    frames: list[tuple[float, str, str]] = field(default_factory=list)
    """the result's other images, oldest first: (offset_s, kind, JPEG base64)"""

    def size(self) -> int:
        return 1024 + len(self.crop_b64 or "") + sum(len(f[2]) for f in self.frames)


@dataclass(slots=True)
class ActionWrite:
    """An operator's action, and the disposition it gives the incident (for incidents not on the board)."""

    incident_id: str
    action: str
    note: str | None
    at: float
    incident: dict | None = None
    """the incident's row after the action when the board holds it, else None (patch the stored row)"""
    actor: str | None = None
    """who, as the operator gave it (one shared token cannot tell operators apart)"""

    def size(self) -> int:
        return 512 + len(self.note or "")


@dataclass(slots=True)
class OffsetsWrite:
    offsets: dict = field(default_factory=dict)
    """{(topic, partition): (next_offset, record_ts)}"""

    def size(self) -> int:
        return 128 * max(1, len(self.offsets))


Write = IncidentWrite | ActionWrite | OffsetsWrite


class IncidentStore:
    """The incident tables of one Store, plus the evidence files beside it."""

    def __init__(self, store: Store, evidence: EvidenceFiles | None, evidence_max_bytes: int = 1 << 30):
        self.store = store
        self.evidence = evidence
        self.evidence_max_bytes = evidence_max_bytes
        self.evidence_pruned = 0
        self._evidence_bytes: int | None = None

    # ---- the writer's side ---------------------------------------------------------------------

    def write(self, writes: list[Write]) -> None:
        """One transaction for a batch: incidents (latest state each), their results, actions, offsets."""
        incidents: dict[str, dict] = {}
        results: list[dict] = []
        actions: list[ActionWrite] = []
        offsets: dict = {}
        crops: dict[str, bytes] = {}
        now = time.time()
        frames: list[dict] = []

        def keep(b64: str | None) -> str | None:
            """An image as an evidence file (before the row that points at it): its sha256, or None."""
            data = EvidenceFiles.decode(b64) if b64 and self.evidence is not None else None
            if not data:
                return None
            sha, _new = self.evidence.put(data)
            crops[sha] = data
            return sha

        for w in writes:
            if isinstance(w, IncidentWrite):
                incidents[w.incident["incident_id"]] = w.incident
                if w.result is not None:
                    row = dict(w.result)
                    row["crop_sha256"] = keep(w.crop_b64)
                    results.append(row)
                    for n, (offset_s, kind, b64) in enumerate(w.frames):
                        sha = keep(b64)
                        if sha is not None:
                            frames.append({"incident_id": row["incident_id"], "task_id": row["task_id"], "n": n,
                                           "offset_s": offset_s, "kind": kind, "sha256": sha})
            elif isinstance(w, ActionWrite):
                actions.append(w)
                if w.incident is not None:
                    incidents[w.incident_id] = w.incident
            else:
                for tp, (off, ts) in w.offsets.items():
                    if tp not in offsets or offsets[tp][0] < off:
                        offsets[tp] = (off, ts)
        with self.store.transaction() as conn:
            if incidents:
                conn.execute(_UPSERT_INCIDENT, [incident_row(i) for i in incidents.values()])
            if crops:
                conn.execute(_INSERT_EVIDENCE, [{"sha256": s, "bytes": len(b), "at": now} for s, b in crops.items()])
            if results:
                conn.execute(_INSERT_RESULT, results)
            if frames:
                conn.execute(_INSERT_FRAME, frames)
            for a in actions:
                conn.execute(_INSERT_ACTION, {"incident_id": a.incident_id, "action": a.action, "note": a.note,
                                              "at": a.at, "actor": a.actor})
                if a.incident is None:  # not on the board (ended long ago): set the disposition on the stored row
                    if a.action == "ack":
                        conn.execute(text("UPDATE incidents SET disposition = COALESCE(disposition, 'acked'), "
                                          "acked_at = COALESCE(acked_at, :at) WHERE incident_id = :i"),
                                     {"at": a.at, "i": a.incident_id})
                    else:
                        conn.execute(text("UPDATE incidents SET disposition = :d, resolved_at = :at, state = 'ended', "
                                          "ended_at = COALESCE(ended_at, :at) WHERE incident_id = :i"),
                                     {"d": DISPOSITIONS[a.action], "at": a.at, "i": a.incident_id})
            if offsets:
                conn.execute(_UPSERT_OFFSET, [{"topic": t, "partition": p, "next_offset": off, "record_ts": ts,
                                               "at": now} for (t, p), (off, ts) in offsets.items()])
        if crops:
            if self._evidence_bytes is None:
                self._evidence_bytes = self._sum_evidence()
            else:
                self._evidence_bytes += sum(len(b) for b in crops.values())
            if self._evidence_bytes > self.evidence_max_bytes:
                self._cap_evidence()

    def _sum_evidence(self) -> int:
        with self.store.reading() as conn:
            return int(conn.execute(text("SELECT COALESCE(SUM(bytes), 0) FROM evidence")).scalar_one())

    def _cap_evidence(self) -> None:
        """Delete the oldest evidence until 90 % of the cap is used (results keep the hash: 410 Gone)."""
        target = int(self.evidence_max_bytes * 0.9)
        total = self._sum_evidence()
        with self.store.transaction() as conn:
            rows = conn.execute(text("SELECT sha256, bytes FROM evidence ORDER BY created_at, sha256")).all()
            gone: list[str] = []
            for sha, size in rows:
                if total <= target:
                    break
                gone.append(sha)
                total -= int(size)
            if gone:
                conn.execute(text("DELETE FROM evidence WHERE sha256 = :s"), [{"s": s} for s in gone])
        for sha in gone:
            if self.evidence is not None:
                self.evidence.delete(sha)
        self.evidence_pruned += len(gone)
        self._evidence_bytes = total

    def prune(self, older_than: float) -> int:
        """Delete incidents that ended before `older_than` (with their results and actions) and the
        evidence no stored result points at any more; returns how many incidents went."""
        with self.store.transaction() as conn:
            ids = [r[0] for r in conn.execute(text("SELECT incident_id FROM incidents WHERE state = 'ended' AND "
                                                   "ended_at < :t"), {"t": older_than})]
            if ids:
                params = [{"i": i} for i in ids]
                conn.execute(text("DELETE FROM result_frames WHERE incident_id = :i"), params)
                conn.execute(text("DELETE FROM incident_results WHERE incident_id = :i"), params)
                conn.execute(text("DELETE FROM incident_actions WHERE incident_id = :i"), params)
                conn.execute(text("DELETE FROM incidents WHERE incident_id = :i"), params)
            orphans = [r[0] for r in conn.execute(text(
                "SELECT sha256 FROM evidence e WHERE NOT EXISTS (SELECT 1 FROM incident_results r "
                "WHERE r.crop_sha256 = e.sha256) AND NOT EXISTS (SELECT 1 FROM result_frames f "
                "WHERE f.sha256 = e.sha256)"))]
            if orphans:
                conn.execute(text("DELETE FROM evidence WHERE sha256 = :s"), [{"s": s} for s in orphans])
        for sha in orphans:
            if self.evidence is not None:
                self.evidence.delete(sha)
        self._evidence_bytes = None
        return len(ids)

    # ---- reads ---------------------------------------------------------------------------------

    def offsets(self) -> dict[tuple[str, int], tuple[int, float | None]]:
        with self.store.reading() as conn:
            rows = conn.execute(text("SELECT topic, kafka_partition, next_offset, record_ts FROM consume_offsets"))
            return {(t, int(p)): (int(o), ts) for t, p, o, ts in rows}

    def open_incidents(self, kind: str | None = None) -> list[dict]:
        """Open incidents of one kind: scene incidents (None, the board's) or 'camera' (the camera watch's)."""
        with self.store.reading() as conn:
            of_kind = "kind IS NULL" if kind is None else "kind = :kind"
            return [_incident_dict(r) for r in conn.execute(text(
                f"SELECT * FROM incidents WHERE state = 'open' AND {of_kind} ORDER BY opened_at, incident_id"),
                {"kind": kind})]

    def recent_ended(self, limit: int) -> list[dict]:
        """The last `limit` ended scene incidents, oldest first (the board's ended history)."""
        with self.store.reading() as conn:
            rows = conn.execute(text("SELECT * FROM incidents WHERE state = 'ended' AND kind IS NULL "
                                     "ORDER BY ended_at DESC, incident_id DESC LIMIT :n"), {"n": limit}).all()
        return [_incident_dict(r) for r in reversed(rows)]

    def latest_crop(self, incident_id: str) -> str | None:
        """The newest kept crop of an incident, base64 (the board shows it after a restart)."""
        if self.evidence is None:
            return None
        with self.store.reading() as conn:
            sha = conn.execute(text("SELECT crop_sha256 FROM incident_results WHERE incident_id = :i AND "
                                    "crop_sha256 IS NOT NULL ORDER BY id DESC LIMIT 1"), {"i": incident_id}).scalar()
        data = self.evidence.read(sha) if sha else None
        return base64.b64encode(data).decode() if data else None

    def search(self, q: "IncidentQuery") -> tuple[list[dict], str | None]:
        """One page of incidents, newest first, and the cursor of the next page (None: last page)."""
        where, params = q.where()
        if q.cursor is not None:
            where.append("(opened_at < :c_t OR (opened_at = :c_t AND incident_id < :c_i))")
            params["c_t"], params["c_i"] = q.cursor
        sql = "SELECT * FROM incidents" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY opened_at DESC, incident_id DESC LIMIT :limit"
        params["limit"] = q.limit + 1
        with self.store.reading() as conn:
            rows = [_incident_dict(r) for r in conn.execute(text(sql), params)]
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        return rows, (encode_cursor(rows[-1]["opened_at"], rows[-1]["incident_id"]) if more and rows else None)

    def detail(self, incident_id: str) -> dict | None:
        """The stored incident with its timeline: results (oldest first; `evidence` n of the crop and
        `frames` with theirs, when kept) and actions, merged by time; `evidence`: every n there is."""
        with self.store.reading() as conn:
            row = conn.execute(text("SELECT * FROM incidents WHERE incident_id = :i"), {"i": incident_id}).first()
            if row is None:
                return None
            inc = _incident_dict(row)
            results = [dict(r._mapping) for r in conn.execute(text(
                "SELECT * FROM incident_results WHERE incident_id = :i ORDER BY id"), {"i": incident_id})]
            frames = _frames_by_task(conn, incident_id)
            actions = [dict(r._mapping) for r in conn.execute(text(
                "SELECT action, note, at, actor FROM incident_actions WHERE incident_id = :i ORDER BY id"),
                {"i": incident_id})]
        inc["timeline"] = timeline(results, actions, frames)
        inc["evidence"] = list(range(1, len(evidence_order(results, frames)) + 1))
        return inc

    def evidence_hash(self, incident_id: str, n: int) -> str | None:
        """The sha256 of the n-th (1-based) distinct image of an incident: per result in order, its earlier
        frames (oldest first), then its crop."""
        with self.store.reading() as conn:
            results = [dict(r._mapping) for r in conn.execute(text(
                "SELECT task_id, crop_sha256 FROM incident_results WHERE incident_id = :i ORDER BY id"),
                {"i": incident_id})]
            frames = _frames_by_task(conn, incident_id)
        distinct = evidence_order(results, frames)
        return distinct[n - 1] if 1 <= n <= len(distinct) else None

    def export(self, q: "IncidentQuery", with_results: bool = True, batch: int = 500) -> Iterator[dict]:
        """Incidents of a time range, newest first, each with its results (prompt version, model…) and
        actions; read page by page so a long range never sits in memory at once."""
        q = IncidentQuery(**{**q.__dict__, "limit": batch})
        while True:
            rows, cursor = self.search(q)
            if with_results and rows:
                ids = [r["incident_id"] for r in rows]
                by_id: dict[str, dict] = {r["incident_id"]: r for r in rows}
                for r in rows:
                    r["results"], r["actions"] = [], []
                with self.store.reading() as conn:
                    for i in ids:  # one small indexed query per incident, bound parameters
                        by_id[i]["results"] = [dict(x._mapping) for x in conn.execute(text(
                            "SELECT task_id, received_at, frame_id, frame_ts, level, risk_types, description, "
                            "confidence, key_name, model, prompt_version, crop_sha256 FROM incident_results "
                            "WHERE incident_id = :i ORDER BY id"), {"i": i})]
                        for x in by_id[i]["results"]:
                            x["risk_types"] = orjson.loads(x["risk_types"])
                        by_id[i]["actions"] = [dict(x._mapping) for x in conn.execute(text(
                            "SELECT action, note, at, actor FROM incident_actions WHERE incident_id = :i ORDER BY id"),
                            {"i": i})]
            yield from rows
            if cursor is None:
                return
            q.cursor = decode_cursor(cursor)


def _frames_by_task(conn, incident_id: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in conn.execute(text("SELECT task_id, n, offset_s, kind, sha256 FROM result_frames WHERE incident_id = :i "
                               "ORDER BY task_id, n"), {"i": incident_id}):
        out.setdefault(r.task_id, []).append(dict(r._mapping))
    return out


def evidence_order(results: list[dict], frames: dict[str, list[dict]]) -> list[str]:
    """An incident's distinct images, numbered from 1 in this order (the API's /evidence/{n})."""
    shas: list[str] = []
    for r in results:
        shas += [f["sha256"] for f in frames.get(r["task_id"], ())]
        if r.get("crop_sha256"):
            shas.append(r["crop_sha256"])
    return list(dict.fromkeys(shas))


def timeline(results: list[dict], actions: list[dict], frames: dict[str, list[dict]] | None = None) -> list[dict]:
    number = {sha: n for n, sha in enumerate(evidence_order(results, frames or {}), 1)}
    out: list[dict] = []
    for r in results:
        e = {"type": "result", "at": r["received_at"], "frame_ts": r["frame_ts"], "task_id": r["task_id"],
             "level": r["level"], "risk_types": orjson.loads(r["risk_types"]), "description": r["description"],
             "confidence": r["confidence"], "key_name": r["key_name"], "model": r["model"],
             "prompt_version": r["prompt_version"], "times": orjson.loads(r["times"])}
        sha = r.get("crop_sha256")
        if sha:
            e["evidence"] = number[sha]
        kept = (frames or {}).get(r["task_id"])
        if kept:
            e["frames"] = [{"offset_s": f["offset_s"], "kind": f["kind"], "evidence": number[f["sha256"]]}
                           for f in kept]
        out.append(e)
    out += [{"type": "action", "action": a["action"], "note": a["note"], "at": a["at"], "by": a.get("actor")}
            for a in actions]
    out.sort(key=lambda e: e["at"])
    return out


# ---- queries ------------------------------------------------------------------------------------


def encode_cursor(opened_at: float, incident_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([opened_at, incident_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        t, i = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(t), str(i)
    except Exception:
        raise ValueError("cursor: not a cursor this API returned") from None


@dataclass
class IncidentQuery:
    """Filters of /incidents: camera, opened in [since, until), at least `level` (peak), a state."""

    camera: str | None = None
    since: float | None = None
    until: float | None = None
    level: str | None = None
    state: str | None = None
    limit: int = 50
    cursor: tuple[float, str] | None = None

    def where(self) -> tuple[list[str], dict]:
        where: list[str] = []
        params: dict = {}
        if self.camera is not None:
            where.append("camera_id = :camera")
            params["camera"] = self.camera
        if self.since is not None:
            where.append("opened_at >= :since")
            params["since"] = self.since
        if self.until is not None:
            where.append("opened_at < :until")
            params["until"] = self.until
        if self.level is not None:
            levels = RISK_LEVELS[RISK_LEVELS.index(self.level):]
            where.append("peak_level IN (" + ", ".join(f":lvl{i}" for i in range(len(levels))) + ")")
            params.update({f"lvl{i}": lvl for i, lvl in enumerate(levels)})
        if self.state in ("open", "ended"):
            where.append("state = :state")
            params["state"] = self.state
        elif self.state == "unacked":
            where.append("disposition IS NULL")
        elif self.state is not None:
            where.append("disposition = :disp")
            params["disp"] = self.state
        return where, params

    @classmethod
    def parse(cls, query: dict, *, default_limit: int = 50, max_limit: int = 500) -> "IncidentQuery":
        """From URL query values; ValueError with the reason (→ 400) for anything malformed."""
        def number(name: str) -> float | None:
            v = query.get(name)
            if v is None or v == "":
                return None
            try:
                return float(v)
            except ValueError:
                raise ValueError(f"{name}: expected Unix seconds, got {v[:40]!r}") from None

        level = query.get("level") or None
        if level is not None and level not in RISK_LEVELS:
            raise ValueError(f"level: one of {', '.join(RISK_LEVELS)}")
        state = query.get("state") or None
        if state is not None and state not in STATES:
            raise ValueError(f"state: one of {', '.join(STATES)}")
        limit = query.get("limit")
        try:
            n = default_limit if limit in (None, "") else int(limit)
        except ValueError:
            raise ValueError(f"limit: expected an integer, got {limit[:20]!r}") from None
        if not 1 <= n <= max_limit:
            raise ValueError(f"limit: 1 … {max_limit}")
        cursor = query.get("cursor")
        return cls(camera=query.get("camera") or None, since=number("since"), until=number("until"), level=level,
                   state=state, limit=n, cursor=decode_cursor(cursor) if cursor else None)
