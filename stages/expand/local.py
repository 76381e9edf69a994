"""expand: one assessment task per group worth an LLM call (spec §5), local engine.

detection result → validate → for each group: gate (new / changed / refresh, else suppressed) →
assessment task with a deterministic id and a deadline → output keyed by camera id.
The gate is `hazardctl.gating`, the same code the Flink engine runs inside its process function.
"""

from __future__ import annotations

import time

import orjson

from hazardctl import metrics
from hazardctl.gating import GroupGate
from hazardctl.runner import Outputs, StageLoop
from hazardctl.transports import Endpoints, Record
from stages.expand.tasks import ExpandConfig, expand, group_view, parse  # noqa: F401  (shared with the Flink job)

STAGE = "expand"


class Expander:
    """The stage's per-record function: bytes in, (key, bytes) out; bad input raises BadInput."""

    def __init__(self, cfg: ExpandConfig = ExpandConfig()):
        self.cfg = cfg
        self.gate = GroupGate(cfg.gate)
        self._suppressed = metrics.SUPPRESSED_GROUPS.labels(STAGE)
        self._hops = metrics.Hops(STAGE)

    def __call__(self, record: Record) -> Outputs:
        det, raw = parse(record.value)
        before = self.gate.suppressed
        now = time.time()
        self._hops.hop("published", "expand", det.times.published, now)
        tasks = expand(det, raw, self.gate, self.cfg, now)
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
