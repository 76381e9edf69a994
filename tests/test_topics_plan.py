"""setup-topics' pure planner: desired topics + what the cluster has → create / ok / drift.

The shell around it (talking to a broker) is covered by the Kafka integration tests.
"""

from __future__ import annotations

from hazardctl.config import load_model
from hazardctl.topics import Existing, TopicsFile, plan
from tests.conftest import ROOT

DESIRED = TopicsFile.model_validate({
    "replication_factor": 3,
    "topics": [
        {"name": "detection-results", "partitions": 16,
         "config": {"retention.ms": "3600000", "compression.type": "lz4"}},
        {"name": "dead-letters", "partitions": 4, "config": {"retention.ms": "604800000"}},
    ],
})


def matching(rf: int = 1, **extra_config: str) -> dict[str, Existing]:
    return {
        "detection-results": Existing(16, rf, {"retention.ms": "3600000", "compression.type": "lz4",
                                               "cleanup.policy": "delete", **extra_config}),
        "dead-letters": Existing(4, rf, {"retention.ms": "604800000"}),
    }


def kinds(actions) -> dict[str, str]:
    return {a.topic: a.kind for a in actions}


def test_missing_topics_are_created_with_the_given_replication():
    actions = plan(DESIRED, {}, replication_factor=1)
    assert kinds(actions) == {"detection-results": "create", "dead-letters": "create"}
    assert actions[0].details == ["16 partitions, replication 1"]


def test_only_the_missing_topic_is_created():
    have = matching()
    del have["dead-letters"]
    assert kinds(plan(DESIRED, have, 1)) == {"detection-results": "ok", "dead-letters": "create"}


def test_matching_topics_are_ok_and_extra_broker_config_is_not_drift():
    actions = plan(DESIRED, matching(), 1)
    assert kinds(actions) == {"detection-results": "ok", "dead-letters": "ok"}
    assert all(a.details == [] for a in actions)


def test_wrong_partition_count_is_drift_in_both_directions():
    for n in (8, 32):
        have = matching()
        have["detection-results"] = Existing(n, 1, have["detection-results"].config)
        a = {x.topic: x for x in plan(DESIRED, have, 1)}["detection-results"]
        assert a.kind == "drift"
        assert a.details == [f"partitions {n} (config: 16)"]


def test_config_value_drift_and_missing_key_are_reported():
    have = matching(**{"retention.ms": "60000"})
    del have["dead-letters"].config["retention.ms"]
    actions = {a.topic: a for a in plan(DESIRED, have, 1)}
    assert actions["detection-results"].kind == "drift"
    assert actions["detection-results"].details == ["retention.ms=60000 (config: 3600000)"]
    assert actions["dead-letters"].kind == "drift"
    assert actions["dead-letters"].details == ["retention.ms=None (config: 604800000)"]


def test_replication_below_the_clamped_factor_is_drift_but_above_is_fine():
    assert kinds(plan(DESIRED, matching(rf=1), replication_factor=3))["detection-results"] == "drift"
    assert kinds(plan(DESIRED, matching(rf=3), replication_factor=3))["detection-results"] == "ok"
    assert kinds(plan(DESIRED, matching(rf=3), replication_factor=1))["detection-results"] == "ok"


def test_several_differences_are_all_listed():
    have = matching(**{"compression.type": "gzip"})
    have["detection-results"] = Existing(4, 1, have["detection-results"].config)
    a = plan(DESIRED, have, 3)[0]
    assert a.kind == "drift"
    assert len(a.details) == 3, a.details


def test_plan_is_pure_and_idempotent():
    have = matching()
    before = {k: (v.partitions, v.replication_factor, dict(v.config)) for k, v in have.items()}
    first, second = plan(DESIRED, have, 1), plan(DESIRED, have, 1)
    assert first == second
    assert {k: (v.partitions, v.replication_factor, dict(v.config)) for k, v in have.items()} == before


def test_the_shipped_topics_file_matches_the_spec():
    """config/kafka_topics.yaml: 16/16/16/4 partitions, retention 1 h / 2 h / 24 h / 7 d (spec, issue 2), and
    the small camera-status and incidents topics (issue 18)."""
    f = load_model(TopicsFile, ROOT / "config" / "kafka_topics.yaml")
    got = {t.name: (t.partitions, t.config.get("retention.ms")) for t in f.topics}
    assert got == {
        "detection-results": (16, str(3600 * 1000)),
        "assessment-tasks": (16, str(2 * 3600 * 1000)),
        "risk-assessment-results": (16, str(24 * 3600 * 1000)),
        "dead-letters": (4, str(7 * 24 * 3600 * 1000)),
        "camera-status": (4, str(24 * 3600 * 1000)),  # issue 18: detect's camera health
        "incidents": (4, str(7 * 24 * 3600 * 1000)),  # issue 18: the Kafka alert sink
        "incident-actions": (4, str(7 * 24 * 3600 * 1000)),  # operators' actions shared by consume instances
    }
    pipeline = [t for t in f.topics if t.name not in ("camera-status", "incidents", "incident-actions")]
    assert all("max.message.bytes" in t.config and "compression.type" in t.config for t in pipeline)
    assert kinds(plan(f, {}, 1)) == dict.fromkeys(got, "create")
