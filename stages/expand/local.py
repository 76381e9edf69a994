"""expand: one assessment task per group worth an LLM call (spec §5), local engine.

detection result → validate → for each group: gate (new / changed / refresh, else suppressed) →
assessment task with a deterministic id and a deadline → output keyed by camera id.
The gate is `hazardctl.gating`, the same code the Flink engine runs inside its process function.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
from pydantic import ValidationError

from hazardctl import metrics
from hazardctl.deadletter import BadInput
from hazardctl.gating import GateConfig, GroupGate, GroupView
from hazardctl.messages import SCHEMA_VERSION, DetectionResult, Group, task_id_for
from hazardctl.runner import Outputs, StageLoop
from hazardctl.transports import Endpoints, Record

STAGE = "expand"


@dataclass(frozen=True)
class ExpandConfig:
    gate: GateConfig = GateConfig()
    deadline_s: float = 10.0
    """a task not assessed within this many seconds of capture is stale (spec §3)"""


def group_view(group: Group, tracks: dict[int, int | None]) -> GroupView:
    """Members as their known track ids plus a count of untracked ones (see gating.same_members);
    without tracking that is just the member count."""
    ids = [tracks.get(m) for m in group.member_ids]
    known = tuple(sorted(t for t in ids if t is not None))
    return GroupView(members=known, untracked=len(ids) - len(known), classes=tuple(sorted(group.classes)),
                     bbox=group.bbox)


def expand(det: DetectionResult, raw: dict, gate: GroupGate, cfg: ExpandConfig, now: float) -> list[dict]:
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
            "group": raw_group,
            "objects": [raw_objects[m] for m in group.member_ids if m in raw_objects],
            "reason": reason,
            "deadline": capture + cfg.deadline_s,
            "times": times,
        })
    return tasks


class Expander:
    """The stage's per-record function: bytes in, (key, bytes) out; bad input raises BadInput."""

    def __init__(self, cfg: ExpandConfig = ExpandConfig()):
        self.cfg = cfg
        self.gate = GroupGate(cfg.gate)
        self._suppressed = metrics.SUPPRESSED_GROUPS.labels(STAGE)

    def __call__(self, record: Record) -> Outputs:
        value = record.value
        if not value.strip():
            raise BadInput("empty line", "empty")
        try:
            det = DetectionResult.model_validate_json(value)
        except ValidationError as e:
            raise BadInput.from_validation(e, "detection result") from None
        before = self.gate.suppressed
        tasks = expand(det, orjson.loads(value), self.gate, self.cfg, time.time())
        if self.gate.suppressed != before:
            self._suppressed.inc(self.gate.suppressed - before)
        key = det.camera_id.encode()
        return [(key, orjson.dumps(t)) for t in tasks]


def run(in_spec: str, out_spec: str, dlq_spec: str | None, *, cfg: ExpandConfig, endpoints: Endpoints,
        group_id: str = "hazardctl-expand", connect_timeout: float = 30.0) -> StageLoop:
    dlq_spec = dlq_spec or endpoints.default_dlq(in_spec)
    endpoints.wait_ready([in_spec, out_spec, dlq_spec], connect_timeout)
    loop = StageLoop(STAGE, endpoints.input(in_spec, group_id, STAGE), endpoints.output(out_spec),
                     endpoints.output(dlq_spec), Expander(cfg))
    loop.run()
    return loop
