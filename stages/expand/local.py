"""expand: one assessment task per group worth an LLM call (spec §5), local engine.

detection result → validate → for each group: gate (suspect / new / changed / refresh, else suppressed
and counted by why) → assessment task with a deterministic id and a deadline → output keyed by camera id.
The gate is `hazardctl.gating`, the same code the Flink engine runs inside its process function.
Over Kafka the gate is rebuilt from the tail of its own output before the first record is consumed,
and again for the cameras of partitions a rebalance hands over from another instance
(stages/expand/restore.py); over pipes it starts empty.
"""

from __future__ import annotations

import logging
import time

import orjson

from hazardctl import metrics
from hazardctl.gating import HELD, GroupGate
from hazardctl.runner import Outputs, StageLoop
from hazardctl.transports import Endpoints, Record, is_kafka, kafka_topic
from stages.expand import restore
from stages.expand.tasks import ExpandConfig, expand, group_view, parse  # noqa: F401  (shared with the Flink job)

STAGE = "expand"
log = logging.getLogger("hazardctl.expand")


class Expander:
    """The stage's per-record function: bytes in, (key, bytes) out; bad input raises BadInput."""

    def __init__(self, cfg: ExpandConfig = ExpandConfig()):
        self.cfg = cfg
        self.gate = GroupGate(cfg.gate)
        self._suppressed = {h: metrics.SUPPRESSED_GROUPS.labels(STAGE, h) for h in HELD}
        self._counted = dict.fromkeys(HELD, 0)
        self._hops = metrics.Hops(STAGE)

    def __call__(self, record: Record) -> Outputs:
        det, raw = parse(record.value)
        now = time.time()
        self._hops.hop("published", "expand", det.times.published, now)
        tasks = expand(det, raw, self.gate, self.cfg, now)
        held, counted = self.gate.held, self._counted
        for h in HELD:
            if held[h] != counted[h]:
                self._suppressed[h].inc(held[h] - counted[h])
                counted[h] = held[h]
        key = det.camera_id.encode()
        return [(key, orjson.dumps(t)) for t in tasks]


def run(in_spec: str, out_spec: str, dlq_spec: str | None, *, cfg: ExpandConfig, endpoints: Endpoints,
        group_id: str = "hazardctl-expand", connect_timeout: float = 30.0, restore_gate: bool = True) -> StageLoop:
    dlq_spec = dlq_spec or endpoints.default_dlq(in_spec)
    endpoints.wait_ready([in_spec, out_spec, dlq_spec], connect_timeout)
    expander = Expander(cfg)
    if not restore_gate:
        log.info("expand: --from-time: the gate starts empty; the replayed detections rebuild it")
    elif is_kafka(in_spec) and is_kafka(out_spec):
        restore.rebuild(expander.gate, endpoints.kafka, tasks_topic=kafka_topic(out_spec),
                        input_topic=kafka_topic(in_spec), group_id=group_id)
    else:
        log.info("expand: not Kafka in and out: the gate starts empty (over pipes there is nothing to re-read; "
                 "groups on screen are sent as new after a restart)")
    inp = endpoints.input(in_spec, group_id, STAGE)
    if restore_gate and is_kafka(in_spec) and is_kafka(out_spec):
        # a rebalance hands this instance another one's partitions: their cameras' gate entries here date
        # from this start; rebuild them from what the other instance sent, before their records are read
        def take_over(partitions: list[int]) -> None:
            try:
                restore.take_over(expander.gate, endpoints.kafka, tasks_topic=kafka_topic(out_spec),
                                  input_topic=kafka_topic(in_spec), group_id=group_id, partitions=partitions)
            except Exception as e:  # noqa: BLE001 -- a rebalance must not stop the stage
                log.warning("expand: gate not rebuilt for partitions %s (%s): their groups may be sent as new",
                            partitions, e)

        inp.on_taken_over = take_over
    loop = StageLoop(STAGE, inp, endpoints.output(out_spec), endpoints.output(dlq_spec), expander)
    loop.run()
    return loop
