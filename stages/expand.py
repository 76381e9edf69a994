"""expand: one assessment task per group worth an LLM call (spec §5), local engine.

detection result → validate → for each group: gate (new / changed / refresh, else suppressed) →
assessment task with a deterministic id and a deadline → output keyed by camera id.
The gate is `hazardctl.gating`, the same code the Flink engine runs inside its process function.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pydantic import ValidationError

from hazardctl import metrics
from hazardctl.deadletter import BadInput
from hazardctl.gating import GateConfig, GroupGate, GroupView
from hazardctl.messages import AssessmentTask, DetectionResult, task_id_for
from hazardctl.runner import Outputs, StageLoop
from hazardctl.transports import Endpoints, Record

STAGE = "expand"


@dataclass(frozen=True)
class ExpandConfig:
    gate: GateConfig = GateConfig()
    deadline_s: float = 10.0
    """a task not assessed within this many seconds of capture is stale (spec §3)"""


def group_view(det: DetectionResult, group) -> GroupView:
    """Members by track id when the detector tracks (stable across frames), else by count."""
    by_id = {o.object_id: o for o in det.objects}
    tracks = [by_id[m].track_id if m in by_id else None for m in group.member_ids]
    members = tuple(sorted(tracks)) if all(t is not None for t in tracks) else (len(group.member_ids),)
    return GroupView(members=members, classes=tuple(sorted(group.classes)), bbox=group.bbox)


def expand(det: DetectionResult, gate: GroupGate, cfg: ExpandConfig, now: float) -> list[AssessmentTask]:
    """Tasks for the groups of one detection result that pass the gate."""
    tasks = []
    times = None
    by_id = None
    for group in det.groups:
        reason = gate.check(det.camera_id, group.group_id, group_view(det, group), det.frame_ts)
        if reason is None:
            continue
        if times is None:
            times = det.times.model_copy(update={"expand": now})
            by_id = {o.object_id: o for o in det.objects}
        capture = det.times.capture or det.frame_ts
        tasks.append(AssessmentTask.model_construct(
            schema_version=1,
            task_id=task_id_for(det.message_id, group.group_id),
            detection_id=det.message_id,
            camera_id=det.camera_id,
            frame_id=det.frame_id,
            frame_ts=det.frame_ts,
            frame_width=det.frame_width,
            frame_height=det.frame_height,
            group=group,
            objects=[by_id[m] for m in group.member_ids if m in by_id],
            reason=reason,
            deadline=capture + cfg.deadline_s,
            times=times,
        ))
    return tasks


class Expander:
    """The stage's per-record function: bytes in, (key, bytes) out; bad input raises BadInput."""

    def __init__(self, cfg: ExpandConfig = ExpandConfig()):
        self.cfg = cfg
        self.gate = GroupGate(cfg.gate)
        self._suppressed = metrics.SUPPRESSED_GROUPS.labels(STAGE)

    def __call__(self, record: Record) -> Outputs:
        if not record.value.strip():
            raise BadInput("empty line", "empty")
        try:
            det = DetectionResult.model_validate_json(record.value)
        except ValidationError as e:
            raise BadInput.from_validation(e, "detection result") from None
        before = self.gate.suppressed
        tasks = expand(det, self.gate, self.cfg, time.time())
        if self.gate.suppressed != before:
            self._suppressed.inc(self.gate.suppressed - before)
        key = det.camera_id.encode()
        return [(key, t.model_dump_json().encode()) for t in tasks]


def run(in_spec: str, out_spec: str, dlq_spec: str | None, *, cfg: ExpandConfig, endpoints: Endpoints,
        group_id: str = "hazardctl-expand", connect_timeout: float = 30.0) -> StageLoop:
    dlq_spec = dlq_spec or endpoints.default_dlq(in_spec)
    endpoints.wait_ready([in_spec, out_spec, dlq_spec], connect_timeout)
    loop = StageLoop(STAGE, endpoints.input(in_spec, group_id), endpoints.output(out_spec),
                     endpoints.output(dlq_spec), Expander(cfg))
    loop.run()
    return loop
