"""config/flink.yaml's latency settings and the Kafka security properties handed to the Flink job (no Flink)."""

from __future__ import annotations

from hazardctl.config import KafkaSettings
from stages.expand import flink_cli, flink_conf


def test_latency_defaults_are_flink_options():
    s = flink_conf.load()
    assert s.latency.flink_options() == {"execution.buffer-timeout.interval": "5 ms",
                                         "python.fn-execution.bundle.time": "5",
                                         "python.fn-execution.bundle.size": "1000"}
    assert s.latency.sink_linger_ms == 1


def test_sasl_scram_over_tls_becomes_java_client_properties():
    k = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="hazardctl",
                      sasl_password='s3"cr\\t', ssl_ca_location="/etc/ssl/kafka-ca.pem")
    p = flink_conf.java_kafka_props(k)
    assert p["security.protocol"] == "SASL_SSL" and p["sasl.mechanism"] == "SCRAM-SHA-512"
    assert p["sasl.jaas.config"] == ("org.apache.flink.kafka.shaded.org.apache.kafka.common.security.scram."
                                     'ScramLoginModule required username="hazardctl" password="s3\\"cr\\\\t";')
    assert p["ssl.truststore.type"] == "PEM" and p["ssl.truststore.location"] == "/etc/ssl/kafka-ca.pem"
    assert "s3" not in str(flink_conf.redacted(p))
    assert flink_conf.java_kafka_props(KafkaSettings()) == {}


def test_the_secret_is_not_on_the_job_command_line(tmp_path):
    cfg = tmp_path / "kafka.yaml"
    cfg.write_text("security_protocol: SASL_SSL\nsasl_mechanism: SCRAM-SHA-256\nsasl_username: u\n"
                   "sasl_password: topsecret\n")
    args = flink_cli.job_args("b:9093", "in", "out", "dlq", "g", None, [], {}, str(cfg))
    assert "topsecret" not in " ".join(args) and args[-2:] == ["--kafka-config", str(cfg.resolve())]


def test_every_gate_setting_has_an_expand_flag_and_both_engines_read_it_the_same():
    """`hazardctl expand`'s gate flags reach the local engine and the Flink job through one mapping
    (flink_cli.GATE_FLAGS → config/flink.yaml's `gate:`): no setting without a flag, no flag lost."""
    import inspect
    from dataclasses import fields

    from hazardctl.gating import GateConfig
    from stages.expand_cli import expand_cmd

    params = set(inspect.signature(expand_cmd).parameters)
    assert set(flink_cli.GATE_FLAGS) <= params, set(flink_cli.GATE_FLAGS) - params
    mapped = {v.split(".", 1)[1] for v in flink_cli.GATE_FLAGS.values()}
    assert {f.name for f in fields(GateConfig)} | {"deadline_s"} == mapped, "a gate setting without a flag"
    assert set(flink_conf.Gate.model_fields) - mapped == {"state_ttl_s"}, "Flink-only: the keyed state's TTL"

    flags = {"gate": "classic", "refresh": 7.0, "ttl": 20.0, "min_iou": 0.4, "calm_refresh": 90.0, "calm_regroup": False,
             "calm_regroup_share": 0.75,
             "suspect_ttc": 2.0,
             "suspect_gap": 0.3, "suspect_cooldown": 3.0, "suspect_worse": 0.5, "suspect_flags": "wrong-way, red-light",
             "deadline": 8.0}
    local = flink_cli.expand_config(flags)
    want = GateConfig(refresh_interval_s=7.0, ttl_s=20.0, min_iou=0.4, mode="classic", calm_refresh_s=90.0, calm_regroup=False,
                      calm_regroup_share=0.75,
                      suspect_ttc_s=2.0, suspect_gap_ratio=0.3, suspect_cooldown_s=3.0, suspect_worse=0.5,
                      suspect_flags=("wrong-way", "red-light"))
    assert (local.gate, local.deadline_s) == (want, 8.0)
    # the Flink job gets the flags as --set overrides and applies them to its config file the same way
    args = flink_cli.job_args("b:9092", "in", "out", "dlq", "g", None,
                              [f"{flink_cli.GATE_FLAGS[k]}={v}" for k, v in flags.items()], {})
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    job = flink_conf.with_overrides(flink_conf.load(), sets).gate
    assert job.gate_config() == want and job.deadline_s == 8.0
    assert flink_cli.expand_config({"suspect_flags": ""}).gate.suspect_flags == ()
    assert flink_conf.load().gate.gate_config() == GateConfig(), "config/flink.yaml's defaults are the gate's"


def test_a_bad_gate_flag_is_one_line_naming_the_setting():
    import pytest

    from hazardctl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"gate\.mode: Input should be 'danger' or 'classic'"):
        flink_cli.expand_config({"gate": "loose"})
    with pytest.raises(ConfigError, match=r"gate\.suspect_worse"):
        flink_cli.expand_config({"suspect_worse": "2"})
