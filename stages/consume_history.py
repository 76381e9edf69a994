"""consume's incident history and operators' actions: HTTP routes over the store, and the WebSocket's
`action` message (the page sends its actions that way: the WebSocket port cannot take a POST).

    GET  /incidents?camera=&since=&until=&level=&state=&limit=&cursor=   history, newest first, + next_cursor
    GET  /incidents/{id}                  the incident with its timeline (results and actions) and evidence
    GET  /incidents/{id}/evidence/{n}     the n-th distinct crop (image/jpeg)
    GET  /incidents.csv | /incidents.jsonl  export of a range (same filters): a row per result / a line per incident
    POST /incidents/{id}/ack | /resolve | /false-positive   body {"note": "…", "by": "…"} (optional), application/json

`since`/`until` are Unix seconds on the opening time; `level` is the lowest peak level; `state` is open,
ended, acked, resolved, false_positive or unacked. `/incidents?open=true` (and everything without a store)
is the board's own view, as before. Store reads run in a worker thread, never on the event loop; an
action is applied to the board at once (pushed as an `incident` event `ack` / `resolve` /
`false_positive`) and recorded by the store's writer.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
from typing import Any

import orjson

from hazardctl.incidents import OPERATOR_ACTIONS, Event
from hazardctl.store import is_transient
from hazardctl.store.incidents import DISPOSITIONS, IncidentQuery
from stages.consume_http import HttpResponse

log = logging.getLogger("hazardctl.consume")

MAX_NOTE = 2000
MAX_BY = 64
MAX_EXPORT = 20_000
"""most incidents one export returns (built in memory; narrow the time range for more: the answer
then carries `X-Hazardctl-Truncated: true`)"""
_PATH_ACTIONS = {"ack": "ack", "resolve": "resolve", "false-positive": "false_positive",
                 "false_positive": "false_positive"}
_HISTORY_KEYS = ("camera", "since", "until", "level", "state", "cursor")
CSV_COLUMNS = ("incident_id", "camera_id", "group_id", "state", "disposition", "opened_at", "ended_at", "peak_level",
               "task_id", "received_at", "frame_ts", "level", "risk_types", "description", "confidence", "key_name",
               "model", "prompt_version", "notes")


def _json(status: int, obj: Any) -> HttpResponse:
    return HttpResponse(status, orjson.dumps(obj))


def _bad(reason: str) -> HttpResponse:
    return _json(400, {"error": reason})


def _cell(v: Any) -> Any:
    """A CSV cell that a spreadsheet will not run: LLM and operator text starting with = + - @ (a
    formula) gets a leading apostrophe (OWASP's CSV injection advice)."""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def _text(doc: dict, key: str, most: int) -> str | None:
    v = doc.get(key)
    if v is not None and (not isinstance(v, str) or len(v) > most):
        raise ValueError(f"{key}: a string of at most {most} characters")
    return v or None


def parse_action(action: str, body: bytes, content_type: str | None) -> tuple[str, str | None, str | None]:
    """(action, note, by) of an action request; ValueError with the reason (→ 400)."""
    name = _PATH_ACTIONS.get(action)
    if name is None:
        raise ValueError("action: one of ack, resolve, false-positive")
    note = by = None
    if body.strip():
        if (content_type or "").split(";")[0].strip().lower() != "application/json":
            raise ValueError("Content-Type must be application/json")  # a form post from another site is refused
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ValueError("body: not JSON (expected {\"note\": \"…\"})") from None
        if not isinstance(doc, dict) or set(doc) - {"note", "by"}:
            raise ValueError("body: a JSON object with at most a \"note\" and \"by\" (who)")
        note, by = _text(doc, "note", MAX_NOTE), _text(doc, "by", MAX_BY)
    return name, note, by


class IncidentApi:
    """The routes above for a running ConsumeService (`service.board`, `.recorder`, `.act`, `.publish`)."""

    def __init__(self, service: Any):
        self.service = service
        self._tasks: set[asyncio.Task] = set()

    @property
    def store(self):
        rec = self.service.recorder
        return rec.incidents if rec is not None else None

    def wants(self, method: str, parts: list[str], query: dict) -> bool:
        """Whether a request is one of ours (else the board's API answers it)."""
        if not parts:
            return False
        head = parts[0]
        if method == "POST":
            return head == "incidents"
        if head in ("incidents.csv", "incidents.jsonl") and len(parts) == 1:
            return True
        if head != "incidents" or self.store is None:
            return False
        if len(parts) == 1:
            return "open" not in query
        return len(parts) in (2, 4) and (len(parts) == 2 or parts[2] == "evidence")

    async def handle(self, method: str, parts: list[str], query: dict, body: bytes = b"",
                     content_type: str | None = None) -> HttpResponse:
        try:
            if method == "POST":
                if len(parts) != 3:
                    return _json(404, {"error": "POST /incidents/{id}/ack, /resolve or /false-positive"})
                action, note, by = parse_action(parts[2], body, content_type)
                return await self.act(parts[1], action, note, by)
            if self.store is not None:
                await self._read_your_writes()
            if parts[0] in ("incidents.csv", "incidents.jsonl"):
                return await self._export(parts[0].rsplit(".", 1)[1], query)
            if len(parts) == 1:
                q = IncidentQuery.parse(query)
                rows, cursor = await asyncio.to_thread(self.store.search, q)
                return _json(200, {"incidents": rows, "next_cursor": cursor})
            if len(parts) == 2:
                return await self._detail(parts[1])
            return await self._evidence(parts[1], parts[3])
        except ValueError as e:
            return _bad(str(e))
        except Exception as e:
            if is_transient(e):  # the database is away: the live board still answers /incidents?open=true
                return _json(503, {"error": "the incident store is unreachable; try again"})
            raise

    async def _detail(self, incident_id: str) -> HttpResponse:
        stored = await asyncio.to_thread(self.store.detail, incident_id)
        live = self.service.board.find_incident(incident_id)
        if stored is None and live is None:
            return _json(404, {"error": f"unknown incident {incident_id!r}"})
        out = stored or {"timeline": [], "evidence": []}
        if live is not None:  # the board is ahead of the writer: its state, the store's history
            out = {**out, **live.as_dict(crop=False)}
        return _json(200, out)

    async def _read_your_writes(self, timeout: float = 2.0) -> None:
        """What this consume queued before the request (an action just taken, a result just applied) is
        in the store before we read it, unless the store is away (then: what it has, at once)."""
        writer = self.service.recorder.writer
        if writer.up and writer.pending:
            await asyncio.to_thread(writer.wait_for, writer.enqueued, timeout)

    async def _evidence(self, incident_id: str, n: str) -> HttpResponse:
        try:
            k = int(n)
        except ValueError:
            return _bad("evidence: n is a number from 1")
        sha = await asyncio.to_thread(self.store.evidence_hash, incident_id, k)
        if sha is None:
            return _json(404, {"error": f"incident {incident_id!r} has no evidence {n}"})
        files = self.store.evidence
        data = await asyncio.to_thread(files.read, sha) if files is not None else None
        if data is None:
            return _json(410, {"error": "this evidence was removed (size cap or retention)"})
        return HttpResponse(200, data, "image/jpeg", (("Cache-Control", "private, max-age=86400, immutable"),))

    async def _export(self, fmt: str, query: dict) -> HttpResponse:
        if self.store is None:
            return _json(404, {"error": "no incident store: start consume with --store or --data-dir"})
        q = IncidentQuery.parse({**query, "limit": "500"}, max_limit=500)
        body, truncated = await asyncio.to_thread(self._export_body, fmt, q)
        headers = (("Content-Disposition", f'attachment; filename="incidents.{fmt}"'),
                   *((("X-Hazardctl-Truncated", "true"),) if truncated else ()))
        return HttpResponse(200, body, "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson", headers)

    def _export_body(self, fmt: str, q: IncidentQuery) -> tuple[bytes, bool]:
        out = io.StringIO() if fmt == "csv" else io.BytesIO()
        writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore") if fmt == "csv" else None
        if writer is not None:
            writer.writeheader()
        truncated = False
        for n, inc in enumerate(self.store.export(q)):
            if n >= MAX_EXPORT:
                truncated = True
                break
            if writer is None:
                out.write(orjson.dumps(inc) + b"\n")
                continue
            notes = " | ".join(f"{a['action']}{' by ' + a['actor'] if a.get('actor') else ''}: {a['note']}"
                               for a in inc["actions"] if a.get("note"))
            for r in inc["results"] or [{}]:  # a row per result: each with its model and prompt version
                writer.writerow({k: _cell(v) for k, v in {
                    **inc, **r, "risk_types": ";".join(r.get("risk_types") or inc["risk_types"]),
                    "level": r.get("level", inc["level"]), "notes": notes}.items()})
        value = out.getvalue()
        return (value.encode() if isinstance(value, str) else value), truncated

    # ---- actions -------------------------------------------------------------------------------

    async def act(self, incident_id: str, action: str, note: str | None, by: str | None = None) -> HttpResponse:
        """Apply (board), push and record one action; incidents only the store holds get it there."""
        if not incident_id or len(incident_id) > 128:
            return _bad("incident id: 1 to 128 characters")
        service = self.service
        shown = service.act(incident_id, action, note, by)
        if shown is not None:
            return _json(200, shown)
        if self.store is None:
            return _json(404, {"error": f"unknown incident {incident_id!r}"})
        stored = await asyncio.to_thread(self.store.detail, incident_id)
        if stored is None:
            return _json(404, {"error": f"unknown incident {incident_id!r}"})
        now = time.time()
        if not service.recorder.action(incident_id, action, note, now, None, by):
            return _json(503, {"error": "the store is unreachable and its queue is full; try again"})
        stored.pop("timeline", None)
        stored.pop("evidence", None)
        if action == "ack":
            stored["disposition"] = stored.get("disposition") or "acked"
            stored["acked_at"] = stored.get("acked_at") or now
        else:
            stored.update(disposition=DISPOSITIONS[action], resolved_at=now, state="ended",
                          ended_at=stored.get("ended_at") or now)
        service.publish(Event("incident", action, stored["camera_id"], stored))
        service.share(incident_id, stored["camera_id"], action, note, by, now)
        return _json(200, stored)

    def on_ws_message(self, hub: Any, client: Any, msg: dict) -> bytes | None:
        """`{"type": "action", "incident_id": …, "action": "ack", "note": …, "by": …}` from a WebSocket client (it
        passed the token at its handshake): the reply `action_result` goes to that client, the event to all."""
        action = _PATH_ACTIONS.get(str(msg.get("action")))
        if action not in OPERATOR_ACTIONS:
            return orjson.dumps({"type": "error", "error": "action: one of ack, resolve, false-positive"})
        try:
            note, by = _text(msg, "note", MAX_NOTE), _text(msg, "by", MAX_BY)
        except ValueError as e:
            return orjson.dumps({"type": "error", "error": str(e)})
        incident_id = msg.get("incident_id")
        if not isinstance(incident_id, str):
            return orjson.dumps({"type": "error", "error": "incident_id: a string"})

        async def run() -> None:
            try:
                r = await self.act(incident_id, action, note, by)
            except Exception as e:  # the store went away during the lookup: the client hears why
                if not is_transient(e):
                    log.exception("consume: action %s on %s failed", action, incident_id)
                r = _json(503 if is_transient(e) else 500, {"error": "the incident store is unreachable; try again"
                                                            if is_transient(e) else "internal error"})
            hub.send_to(client, orjson.dumps({"type": "action_result", "id": msg.get("id"), "status": r.status,
                                              "action": action, "incident_id": incident_id,
                                              "body": orjson.loads(r.body)}))

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None
