"""A restarted local expand gets its gate's memory back from Kafka before it consumes (issue 16).

The tasks topic is the gate's changelog: every task carries the group view it was sent for (group
JSON with cues, members' track ids, box), its reason and frame time. Folding the tail of that topic
into an empty gate gives each group's last send (`gating.entry_from_task`), its last `suspect` and
the refresh grid it is on, so nothing is re-sent as `new` and refreshes keep their phases; the tasks'
objects (track ids) give back the camera's memory of which road users were assessed when.

Sends alone do not say when a group was last *seen*: a calm group sent 50 s ago and shown on every
frame since would look expired (TTL 30 s, which is about sightings) and come back as `new`. So the
detections the previous run had already processed — the input topic's last `ttl_s` (+ slack) below
expand's committed offsets — are read too, each frame raising `seen_ts` of the groups it shows.
Frames after the committed offsets are redelivered to the live consumer and go through the gate as
usual: a group the previous run already sent for them is `stale-replay`, not a duplicate.

Over pipes there is nothing to re-read: the gate starts empty, and the stage says so.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import orjson

from hazardctl.gating import GateConfig, GroupGate, entry_from_task, seen, view_of_json

log = logging.getLogger("hazardctl.expand")

#: slack on top of the windows below (Kafka timestamps vs capture times, a frame interval)
SLACK_S = 5.0


def tasks_window_s(cfg: GateConfig) -> float:
    """How far back the tasks topic must be read: the longest a live group can go between two sends
    (the first refresh after a send comes within 1½ intervals on the phase grid), or the TTL."""
    longest = max(cfg.refresh_interval_s, cfg.calm_refresh_s if cfg.mode == "danger" else 0.0)
    return max(cfg.ttl_s, (1.5 if cfg.mode == "danger" else 1.0) * longest, cfg.suspect_cooldown_s) + SLACK_S


def sightings_window_s(cfg: GateConfig) -> float:
    return cfg.ttl_s + SLACK_S


@dataclass
class Rebuilt:
    tasks: int = 0
    sightings: int = 0
    skipped: int = 0
    """records that were not a task / detection (they became dead letters when first read)"""


def apply_task(gate: GroupGate, value: bytes, out: Rebuilt) -> None:
    """One record of the tasks topic, in topic order."""
    try:
        t = orjson.loads(value)
        cam, gid = t["camera_id"], t["group"]["group_id"]
        entry = entry_from_task(t, gate.entry(cam, gid))
        gate.restore(cam, gid, entry)
        gate.assessed(cam).sent(view_of_json(t["group"], {o["object_id"]: o.get("track_id") for o in t["objects"]}),
                                float(t["frame_ts"]))  # the road users it showed the LLM (calm regrouping)
        out.tasks += 1
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        out.skipped += 1


def apply_sighting(gate: GroupGate, value: bytes, out: Rebuilt) -> None:
    """One detection the previous run processed: its groups were seen at its frame time."""
    try:
        d = orjson.loads(value)
        cam, ts = d["camera_id"], float(d["frame_ts"])
        for g in d.get("groups") or ():
            e = gate.entry(cam, g["group_id"])
            if e is not None:  # a group with no send in the window: nothing to keep alive
                gate.restore(cam, g["group_id"], seen(e, ts))
        out.sightings += 1
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        out.skipped += 1


def rebuild(gate: GroupGate, kafka, *, tasks_topic: str, input_topic: str, group_id: str,
            now: float | None = None) -> Rebuilt:
    """Fold the tail of the tasks topic, then the processed tail of the input, into `gate`.

    `kafka` is the transport's `KafkaClients` (`Endpoints.kafka`)."""
    t0, now = time.monotonic(), time.time() if now is None else now
    out = Rebuilt()
    window = tasks_window_s(gate.cfg)
    replay = kafka.replay(tasks_topic, now - window)
    try:
        for records in replay.batches():
            for r in records:
                apply_task(gate, r.value, out)
    finally:
        replay.close()
    committed = kafka.committed(input_topic, group_id)
    if len(gate) and committed:
        replay = kafka.replay(input_topic, now - sightings_window_s(gate.cfg))
        try:
            for records in replay.batches():
                for r in records:
                    if r.offset is not None and r.offset < committed.get(r.partition, -1):
                        apply_sighting(gate, r.value, out)
        finally:
            replay.close()
    log.info("expand: gate rebuilt from %d tasks of the last %.0fs of %s and %d processed detections of %s "
             "(%d groups, %d unreadable records) in %.2fs", out.tasks, window, tasks_topic, out.sightings,
             input_topic, len(gate), out.skipped, time.monotonic() - t0)
    return out


def _camera_of(r) -> str | None:
    """A record's camera: its key (every stage keys by camera id), else read from its JSON."""
    if r.key:
        return r.key.decode(errors="replace")
    try:
        return orjson.loads(r.value).get("camera_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None


def take_over(gate: GroupGate, kafka, *, tasks_topic: str, input_topic: str, group_id: str, partitions: list[int],
              now: float | None = None) -> Rebuilt:
    """Partitions of the input another expand instance served until a rebalance handed them here: the
    gate entries of their cameras are rebuilt as `rebuild` does at start (this instance's own, from its
    start, are older than what the other instance sent since). Which cameras: those the partitions'
    recent detections show (so the tasks topic may have any partition count); the others are untouched."""
    t0, now = time.monotonic(), time.time() if now is None else now
    out = Rebuilt()
    parts = set(partitions)
    committed = kafka.committed(input_topic, group_id)
    recent: list[bytes] = []
    cameras: set[str] = set()
    replay = kafka.replay(input_topic, now - max(sightings_window_s(gate.cfg), tasks_window_s(gate.cfg)), parts)
    try:
        for records in replay.batches():
            for r in records:
                cam = _camera_of(r)
                if cam is None:
                    continue
                cameras.add(cam)
                if r.offset is not None and r.offset < committed.get(r.partition, -1):
                    recent.append(r.value)
    finally:
        replay.close()
    replay = kafka.replay(tasks_topic, now - tasks_window_s(gate.cfg))
    try:
        for records in replay.batches():
            for r in records:
                if _camera_of(r) in cameras:
                    apply_task(gate, r.value, out)
    finally:
        replay.close()
    for value in recent:
        apply_sighting(gate, value, out)
    log.info("expand: took over partitions %s of %s (%d cameras): gate rebuilt from %d tasks and %d processed "
             "detections in %.2fs", sorted(parts), input_topic, len(cameras), out.tasks, out.sightings,
             time.monotonic() - t0)
    return out

