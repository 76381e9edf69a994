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
