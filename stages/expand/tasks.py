"""The expand stage's per-detection logic, shared by both engines (local.py and flink_job.py).

bytes → `parse` (validate at the edge, or BadInput) → `expand` (gate every group, build the tasks).
The gate is passed in: anything with `check(camera_id, group_id, view, ts) -> reason | None`, i.e.
`hazardctl.gating.GroupGate` in the local engine and a keyed-ValueState adapter in the Flink job; both
run `hazardctl.gating.decide`. Imports only what the Flink workers need (no Kafka client, no metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import orjson
from pydantic import ValidationError

from hazardctl.deadletter import BadInput
from hazardctl.gating import GateConfig, GroupView, Reason, view_of
from hazardctl.messages import SCHEMA_VERSION, DetectionResult, Group, task_id_for


class Gate(Protocol):
    def check(self, camera_id: str, group_id: str, view: GroupView, ts: float) -> Reason | None: ...


def parse(value: bytes) -> tuple[DetectionResult, dict]:
    """(validated model, the same message as plain JSON) or BadInput."""
    if not value.strip():
        raise BadInput("empty line", "empty")
    try:
        det = DetectionResult.model_validate_json(value)
    except ValidationError as e:
        raise BadInput.from_validation(e, "detection result") from None
    return det, orjson.loads(value)


@dataclass(frozen=True)
class ExpandConfig:
    gate: GateConfig = GateConfig()
    deadline_s: float = 10.0
    """a task not assessed within this many seconds of capture is stale (spec §3)"""


def group_view(group: Group, tracks: dict[int, int | None]) -> GroupView:
    """The view the gate compares (`hazardctl.gating.view_of`: members, classes, box, motion cues, phase)."""
    return view_of(group.group_id, group.member_ids, group.classes, group.bbox, tracks, group.cues)


#: tasks that keep the group's earlier frames (issue 19.4): more context where danger is new or suspected,
#: never on changed/refresh tasks (detect attaches frames to groups it sees first or finds suspect; a
#: group the gate sends as changed or refresh is one the model has already seen)
FRAMES_FOR = frozenset({"suspect", "new"})


def _without_frames(raw_group: dict) -> dict:
    return {k: v for k, v in raw_group.items() if k != "frames"}


def expand(det: DetectionResult, raw: dict, gate: Gate, cfg: ExpandConfig, now: float) -> list[dict]:
    """Tasks (as JSON-ready dicts) for the groups of one detection that pass the gate.

    `det` is the validated model (for decisions); `raw` is the same message as parsed JSON, from
    which the tasks are assembled without a second validation: the crop and objects are copied
    by reference, never re-encoded (FACTS: validate at the edges, keep the hot path cheap).
    """
    tracks = {o.object_id: o.track_id for o in det.objects}
    tasks: list[dict] = []
    raw_objects = None
    for group, raw_group in zip(det.groups, raw.get("groups", ())):  # "groups" may be omitted (default [])
        reason = gate.check(det.camera_id, group.group_id, group_view(group, tracks), det.frame_ts)
        if reason is None:
            continue
        if raw_objects is None:
            # keyed by the validated ids: lax validation may have turned "3" into 3
            raw_objects = {o.object_id: r for o, r in zip(det.objects, raw.get("objects", ()))}
            times = {**raw.get("times", {}), "expand": now}
            capture = det.times.capture or det.frame_ts
        tasks.append({
            "schema_version": SCHEMA_VERSION,
            "task_id": task_id_for(det.message_id, group.group_id),
            "detection_id": det.message_id,
            "camera_id": det.camera_id,
            "frame_id": det.frame_id,
            "frame_ts": det.frame_ts,
            "frame_width": det.frame_width,
            "frame_height": det.frame_height,
            "group": raw_group if reason in FRAMES_FOR or not raw_group.get("frames") else _without_frames(raw_group),
            "objects": [raw_objects[m] for m in group.member_ids if m in raw_objects],
            "reason": reason,
            "deadline": capture + cfg.deadline_s,
            "times": times,
        })
    return tasks
