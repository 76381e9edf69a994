"""The local expand stage with the danger gate: suppressed groups counted by why on
hazardctl_suppressed_groups_total{stage="expand", reason}, and `suspect` tasks from cue'd detections."""

from __future__ import annotations

from collections import Counter

import orjson
from prometheus_client import REGISTRY

from hazardctl.gating import HELD, GateConfig
from hazardctl.transports.base import Record
from stages.expand import ExpandConfig, Expander
from tests.flink_util import detections


def suppressed(reason: str) -> float:
    return REGISTRY.get_sample_value("hazardctl_suppressed_groups_total", {"stage": "expand", "reason": reason}) or 0.0


def test_suppressed_groups_are_counted_by_reason_on_the_metric():
    before = {h: suppressed(h) for h in HELD}
    expander = Expander(ExpandConfig())
    items = detections(cameras=3, frames=80, cues=True)
    reasons: Counter = Counter()
    for _key, value in items:
        reasons.update(orjson.loads(v)["reason"] for _k, v in expander(Record(value=value)))
    expander(Record(value=items[5][1]))  # a redelivered detection: every group already covered or held
    delta = {h: suppressed(h) - before[h] for h in HELD}
    assert delta == {h: float(expander.gate.held[h]) for h in HELD}
    assert all(delta[h] > 0 for h in ("calm", "unchanged", "cooldown", "stale-replay")), delta
    assert sum(delta.values()) + sum(reasons.values()) == 3 * (len(items) + 1), "every group: sent or counted"
    assert reasons["suspect"] > 0


def test_classic_counts_only_unchanged_and_stale_replay():
    expander = Expander(ExpandConfig(GateConfig(mode="classic")))
    for _key, value in detections(cameras=2, frames=40, cues=True):
        expander(Record(value=value))
    assert set(expander.gate.held) == {"unchanged"}
