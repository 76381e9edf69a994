"""consume's incident store: what the board decides is recorded, and a restart starts from it.

`IncidentRecorder` turns the board's decisions into store writes handed to a writer thread
(hazardctl.store.writer), so the event loop never waits on the database: every result applied to
an incident (with its crop as evidence), every incident's end, every operator action, and after each
batch the next Kafka offset per partition.

On start (`restore`): the board gets the store's open incidents (their ids kept however long they
have been open) and its recent ended ones; with a Kafka input the replay then reads only the gap
since the store's offsets (`replay_plan`), and what it applies is recorded too. Without stored
offsets (a new store) the replay falls back to the time window (--replay).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from hazardctl.camera_watch import CameraWatch
from hazardctl.incidents import Applied, Event, Incident, IncidentBoard
from hazardctl.messages import RiskAssessmentResult
from hazardctl.store import Store, open_store
from hazardctl.store.evidence import EvidenceFiles
from hazardctl.store.incidents import ActionWrite, IncidentStore, IncidentWrite, OffsetsWrite
from hazardctl.store.writer import StoreWriter

log = logging.getLogger("hazardctl.consume")

DEFAULT_DB = "incidents.db"
PRUNE_EVERY_S = 3600.0
REPLAY_MARGIN_S = 60.0
"""the replay after a restart starts this long before the last stored result (clocks, ordering);
records below the stored offsets are skipped, so the margin costs reading, never a duplicate"""


@dataclass(frozen=True)
class StoreOptions:
    url: str
    """sqlite:///PATH or postgresql://…"""
    data_dir: Path | None = None
    """evidence files go to DATA_DIR/evidence (None: no evidence kept)"""
    retention_days: float | None = None
    """ended incidents older than this are deleted (None: kept)"""
    max_pending: int = 20_000
    """writes queued in memory while the store is away; more are dropped (counted)"""
    evidence_max_mb: float = 1024.0
    restore_ended: int = 200


def store_options(store: str | None, data_dir: str | None, **kw) -> StoreOptions | None:
    """--store / --data-dir → options: --data-dir alone means sqlite:///DATA_DIR/incidents.db."""
    if store is None and data_dir is None:
        return None
    d = Path(data_dir) if data_dir else None
    url = store or f"sqlite:///{d / DEFAULT_DB}"
    if d is None and url.startswith("sqlite:///"):
        d = Path(url[len("sqlite:///"):].split("?", 1)[0]).parent  # evidence beside the database file
    return StoreOptions(url=url, data_dir=d, **kw)


def result_row(inc: Incident, r: RiskAssessmentResult, received_at: float) -> dict:
    return {"incident_id": inc.incident_id, "task_id": r.task_id, "received_at": received_at, "frame_id": r.frame_id,
            "frame_ts": r.frame_ts, "level": r.level, "risk_types": orjson.dumps(r.risk_types).decode(),
            "description": r.description, "confidence": r.confidence, "key_name": r.key_name, "model": r.model,
            "prompt_version": r.prompt_version, "times": r.times.model_dump_json(exclude_none=True)}


class IncidentRecorder:
    """The store as consume uses it: restore on start, record what the board decides."""

    def __init__(self, opts: StoreOptions, store: Store | None = None, stage: str = "consume"):
        self.opts = opts
        self.store = store or open_store(opts.url)  # exit 3 with one line when unreachable
        evidence = EvidenceFiles(opts.data_dir / "evidence") if opts.data_dir else None
        if evidence is None:
            log.warning("consume: no --data-dir: the crops of incidents are not kept as evidence")
        self.incidents = IncidentStore(self.store, evidence, int(opts.evidence_max_mb * 1024 * 1024))
        self.writer = StoreWriter(self.incidents.write, stage=stage, max_pending=opts.max_pending)
        self._next_prune = 0.0

    def start(self) -> None:
        self.writer.start()

    def stop(self, timeout: float = 10.0) -> int:
        left = self.writer.stop(timeout)
        self.store.close()
        return left

    # ---- start-up ------------------------------------------------------------------------------

    def restore(self, board: IncidentBoard) -> int:
        """Open incidents (with their newest crop) and recent ended ones back on the board."""
        inc = self.incidents
        open_ = [Incident.from_dict(d, inc.latest_crop(d["incident_id"])) for d in inc.open_incidents()]
        ended = [Incident.from_dict(d) for d in inc.recent_ended(min(self.opts.restore_ended, board.cfg.ended_history))]
        board.restore(open_, ended)
        log.info("consume: restored %d open and %d ended incidents from store %s", len(open_), len(ended),
                 self.store.safe_url)
        return len(open_)

    def replay_plan(self, topic: str, window_s: float, now: float) -> tuple[float, dict[int, int]]:
        """(replay from this time, {partition: first offset not stored}) for the start-up replay."""
        stored = {p: (off, ts) for (t, p), (off, ts) in self.incidents.offsets().items() if t == topic}
        since = now - window_s
        for _off, ts in stored.values():
            if ts is not None:
                since = min(since, ts - REPLAY_MARGIN_S)  # ≈ the last stored record's Kafka timestamp
        return since, {p: off for p, (off, _ts) in stored.items()}

    # ---- recording (event loop thread; never waits) -------------------------------------------

    def applied(self, r: RiskAssessmentResult, applied: Applied, received_at: float, block: bool = False) -> None:
        put = self.writer.put
        for ev in applied.events:
            if ev.kind == "incident" and ev.action == "end":
                put(IncidentWrite(ev.body), block)
        inc = applied.incident
        if inc is not None:
            put(IncidentWrite(inc.as_dict(crop=False), result_row(inc, r, received_at), r.crop_jpeg_b64,
                              [(f.offset_s, f.kind, f.jpeg_b64) for f in r.frames or ()]), block)

    def events(self, events: list[Event], block: bool = False) -> None:
        """Incidents the tick ended."""
        for ev in events:
            if ev.kind == "incident" and ev.action == "end":
                self.writer.put(IncidentWrite(ev.body), block)

    def camera_events(self, events: list[Event], block: bool = False) -> None:
        """Camera incidents (hazardctl.camera_watch) as they open, change and end: an outage is history too."""
        for ev in events:
            if ev.kind == "incident":
                self.writer.put(IncidentWrite(ev.body), block)

    def restore_cameras(self, watch: CameraWatch, now: float) -> int:
        """Open camera incidents back in the watch: a live status ends them, silence keeps them open."""
        open_ = self.incidents.open_incidents(kind="camera")
        watch.restore(open_, now)
        return len(open_)

    def offsets(self, batch, block: bool = False) -> None:
        """The next offset per partition of a batch of (record, result, …) from Kafka (pipes: nothing).
        With it goes the result's own `result` stamp, ≈ the record's Kafka timestamp (schedule stamps it
        just before producing): where a restart's replay starts looking, with a margin."""
        offs: dict = {}
        for rec, result, *_ in batch:
            if rec.offset is None or rec.topic is None:
                continue
            key = (rec.topic, rec.partition)
            if key not in offs or offs[key][0] <= rec.offset:
                offs[key] = (rec.offset + 1, result.times.result or result.frame_ts)
        if offs:
            self.writer.put(OffsetsWrite(offs), block)

    def action(self, incident_id: str, action: str, note: str | None, at: float, shown: dict | None,
               actor: str | None = None) -> bool:
        """`shown`: the incident as it is after the action (its row), or None when only the store holds it."""
        return self.writer.put(ActionWrite(incident_id, action, note, at, shown, actor))

    def maybe_prune(self, now: float) -> None:
        """Retention: at most hourly, on the writer thread after the writes queued before."""
        if self.opts.retention_days is None or now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY_S
        cutoff = now - self.opts.retention_days * 86400

        def prune() -> None:
            n = self.incidents.prune(cutoff)
            if n:
                log.info("consume: retention removed %d incidents ended more than %g days ago", n,
                         self.opts.retention_days)

        self.writer.call(prune)

    def health(self) -> dict:
        w = self.writer
        return {"store": "up" if w.up else "unreachable", "store_pending": w.pending, "store_dropped": w.dropped}
