"""Every task of a run and what became of it, from the pipeline's own topics (or pipes).

`offered` is the set of distinct task ids expand produced. Each result (distinct task id) is ok,
failed, stale or shed (a `stale` result whose error class says it was shed early); a task whose
only trace is a dead letter counts as a dead letter; a task with none of these is in flight. So
offered = ok + failed + stale + shed + dead letters + in flight, where each term is counted from
its own topic, and results or dead letters of tasks never offered are counted as `unknown` (and
break the identity, as they should). Redeliveries (at-least-once) are counted as duplicates.
The identity is bookkeeping (each row lands in one outcome by construction); the check that can fail,
tasks produced against the gate's prediction, is `report.production`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import orjson

OUTCOMES = ("ok", "failed", "stale", "shed", "dead_letter")
#: camera ids of the readiness probe (tools.loadtest.cameras.probe_frame): not part of the run
WARMUP_PREFIX = "lt-warmup"


def is_shed(result: dict) -> bool:
    """A stale result the scheduler gave up on before the deadline (key pool saturated)."""
    return result.get("status") == "stale" and "shed" in f"{result.get('error_class') or ''}".lower()


@dataclass
class TaskRow:
    task_id: str
    camera_id: str = ""
    reason: str = ""
    capture: float | None = None
    offered_at: float | None = None
    outcome: str | None = None
    error_class: str | None = None
    key_name: str | None = None
    level: str | None = None
    """the assessed level of an ok result (consume opens incidents from `low` on in the loadtest)"""
    attempts: int = 0
    times: dict = field(default_factory=dict)
    on_topic: float | None = None
    """when the result landed on the results topic (broker's clock) or was read from the pipe"""

    def json(self) -> dict:
        return {"task_id": self.task_id, "camera_id": self.camera_id, "reason": self.reason,
                "outcome": self.outcome or "in_flight", "error_class": self.error_class, "key": self.key_name,
                "level": self.level,
                "attempts": self.attempts, "capture": self.capture, "offered_at": self.offered_at,
                "result_on_topic": self.on_topic, "times": self.times}


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tasks: dict[str, TaskRow] = {}
        self.orphans: dict[str, TaskRow] = {}  # results / dead letters whose task was never seen offered
        self.duplicate_tasks = 0
        self.duplicate_results = 0
        self.dead_letters = 0
        self.dead_letters_by_stage: dict[str, int] = {}
        self.unparsable = 0
        self.done_at: list[tuple[float, str]] = []  # (time landed, outcome), for rates over time
        self.warmup_results = 0

    # -- feeds (reader threads) ---------------------------------------------------------------------------
    def on_task(self, value: bytes, ts: float) -> None:
        t = orjson.loads(value)
        if t["camera_id"].startswith(WARMUP_PREFIX):
            return
        tid = t["task_id"]
        with self.lock:
            row = self.tasks.get(tid)
            if row is not None and row.offered_at is not None:
                self.duplicate_tasks += 1
                return
            if row is None:
                row = self.orphans.pop(tid, None) or TaskRow(tid)
                self.tasks[tid] = row
            row.camera_id, row.reason = t["camera_id"], t["reason"]
            row.capture = (t.get("times") or {}).get("capture") or t.get("frame_ts")
            row.offered_at = ts

    def on_result(self, value: bytes, ts: float) -> None:
        r = orjson.loads(value)
        if r["camera_id"].startswith(WARMUP_PREFIX):
            self.warmup_results += 1
            return
        outcome = "shed" if is_shed(r) else r["status"]
        with self.lock:
            row = self._row(r["task_id"])
            if row.outcome is not None and row.outcome != "dead_letter":
                self.duplicate_results += 1
                if row.outcome == "ok" or outcome != "ok":
                    return  # keep the first answer unless a redelivery turned a failure into an ok
            row.outcome, row.error_class = outcome, r.get("error_class")
            row.key_name, row.attempts, row.times, row.on_topic = r.get("key_name"), r.get("attempts", 0), r["times"], ts
            row.level = r.get("level")
            if row.camera_id == "":
                row.camera_id = r.get("camera_id", "")
            self.done_at.append((ts, outcome))

    def on_dead_letter(self, value: bytes, ts: float) -> None:
        d = orjson.loads(value)
        if WARMUP_PREFIX.encode() in d.get("payload", "").encode()[:400]:
            return
        with self.lock:
            self.dead_letters += 1
            stage = d.get("stage", "?")
            self.dead_letters_by_stage[stage] = self.dead_letters_by_stage.get(stage, 0) + 1
            try:
                tid = orjson.loads(d["payload"])["task_id"]
            except Exception:
                self.unparsable += 1
                return
            row = self._row(tid)
            if row.outcome is None:
                row.outcome, row.error_class, row.on_topic = "dead_letter", d.get("error_class"), ts
                self.done_at.append((ts, "dead_letter"))

    def _row(self, tid: str) -> TaskRow:
        row = self.tasks.get(tid) or self.orphans.get(tid)
        if row is None:
            row = self.orphans[tid] = TaskRow(tid)
        return row

    # -- reading -----------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self.lock:
            c = dict.fromkeys(OUTCOMES, 0)
            in_flight = 0
            for row in self.tasks.values():
                if row.outcome is None:
                    in_flight += 1
                else:
                    c[row.outcome] += 1
            c["in_flight"] = in_flight
            c["offered"] = len(self.tasks)
            c["unknown"] = len(self.orphans)
            c["duplicate_tasks"] = self.duplicate_tasks
            c["duplicate_results"] = self.duplicate_results
            c["dead_letter_messages"] = self.dead_letters
            return c

    def rows(self) -> list[TaskRow]:
        with self.lock:
            return list(self.tasks.values()) + list(self.orphans.values())

    def recent_ok(self, since: float) -> list[TaskRow]:
        with self.lock:
            return [r for r in self.tasks.values() if r.outcome == "ok" and r.on_topic and r.on_topic >= since]

    def settled(self) -> bool:
        with self.lock:
            return all(r.outcome is not None for r in self.tasks.values())
