"""kill-broker / restart-broker chaos (issue 20.4): which broker dies, and the refusal to touch any broker
that is not the local kafka-local.sh cluster. (The chaos itself runs in `make test-cluster`.)"""

from __future__ import annotations

import pytest

from hazardctl.errors import ConfigError
from tools.loadtest import chaos
from tools.loadtest.kafka_io import replication


def test_the_broker_leading_most_partitions_is_chosen():
    assert chaos.most_leading({0: 1, 1: 2, 2: 2, 3: 3, 4: 2, 5: 1}) == 2
    assert chaos.most_leading({0: 3, 1: 1, 2: 3, 3: 1}) == 1  # a tie: the lowest id, reproducibly
    assert chaos.most_leading({0: -1, 1: 3}) == 3  # a partition without a leader (-1) counts for nobody
    with pytest.raises(ValueError):
        chaos.most_leading({0: -1})


def write_cluster(home, ports=(19092, 19093, 19094)):
    for n, port in enumerate(ports, 1):
        (home / f"b{n}").mkdir(parents=True)
        (home / f"b{n}" / "server.properties").write_text(
            f"process.roles=broker,controller\nnode.id={n}\nlisteners=PLAINTEXT://127.0.0.1:{port},"
            f"CONTROLLER://127.0.0.1:{port + 100}\n")


def test_only_the_local_cluster_may_be_killed(tmp_path, monkeypatch):
    monkeypatch.setenv("KAFKA_CLUSTER_HOME", str(tmp_path))
    write_cluster(tmp_path)
    boot = "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    assert chaos.local_cluster_brokers(boot) == {1: 19092, 2: 19093, 3: 19094}
    assert chaos.local_cluster_brokers("localhost:19093") == {1: 19092, 2: 19093, 3: 19094}
    for other in ("127.0.0.1:9092", "kafka-1.prod:19092", "127.0.0.1:19092,10.0.0.5:19093", ""):
        with pytest.raises(ConfigError, match="not the local 3-broker cluster"):
            chaos.local_cluster_brokers(other)


def test_no_cluster_home_refuses(tmp_path, monkeypatch):
    monkeypatch.setenv("KAFKA_CLUSTER_HOME", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="kafka-local.sh cluster up"):
        chaos.local_cluster_brokers("127.0.0.1:19092")


def test_parse_knows_the_cluster_chaos_and_keeps_it_off_pipes():
    assert str(chaos.parse("kill-broker@20", "kafka", 60)) == "kill-broker@20"
    assert chaos.parse("restart-broker@40", "kafka", 60).name == "restart-broker"
    with pytest.raises(ConfigError, match="needs --transport kafka"):
        chaos.parse("kill-broker@20", "pipes", 60)


def test_a_runs_topics_are_replicated_on_a_cluster_only():
    assert replication(1) == (1, {})
    assert replication(3) == (3, {"min.insync.replicas": "2"})
    assert replication(5) == (3, {"min.insync.replicas": "2"})
