"""Configuration: one-line errors naming file and field, `${ENV}` references, Kafka env overrides.

Client creation is real confluent-kafka (librdkafka validates property names when a client is
built, before any connection), so no broker is needed here.
"""

from __future__ import annotations

import subprocess

import pytest

from hazardctl.config import KAFKA_ENV, KafkaSettings, load_kafka_settings, load_model
from hazardctl.errors import ConfigError
from hazardctl.topics import TopicsFile
from tests.conftest import HAZARDCTL, ROOT


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in [*KAFKA_ENV, "HAZARDCTL_KAFKA_CONFIG"]:
        monkeypatch.delenv(name, raising=False)


def write(tmp_path, text: str, name: str = "kafka.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def config_error(fn, *args) -> str:
    with pytest.raises(ConfigError) as ei:
        fn(*args)
    msg = str(ei.value)
    assert "\n" not in msg, f"not one line: {msg!r}"
    assert ei.value.exit_code == 2
    return msg


def test_valid_file_loads(tmp_path):
    p = write(tmp_path, "bootstrap_servers: k1:9092,k2:9092\nclient_id: expand-7\nproducer: {linger.ms: 10}\n")
    s = load_kafka_settings(p)
    assert s.bootstrap_servers == "k1:9092,k2:9092"
    assert s.common()["client.id"] == "expand-7"
    assert s.producer == {"linger.ms": 10}


def test_empty_file_gives_the_defaults(tmp_path):
    assert load_kafka_settings(write(tmp_path, "# nothing\n")) == KafkaSettings()


def test_missing_file_names_the_file(tmp_path):
    msg = config_error(load_kafka_settings, tmp_path / "nope.yaml")
    assert "nope.yaml" in msg and "not found" in msg


def test_bad_yaml_names_file_and_line(tmp_path):
    p = write(tmp_path, "bootstrap_servers: a\nclient_id: [unclosed\nproducer: {}\n")
    msg = config_error(load_kafka_settings, p)
    assert str(p) in msg and "invalid YAML" in msg and "line " in msg


def test_binary_file_is_a_config_error_not_a_traceback(tmp_path):
    p = tmp_path / "kafka.yaml"
    p.write_bytes(b"\xff\xfe\x00\x01 not yaml")
    assert str(p) in config_error(load_kafka_settings, p)


def test_top_level_that_is_not_a_mapping(tmp_path):
    for text in ["just-a-string\n", "- a\n- b\n"]:
        msg = config_error(load_kafka_settings, write(tmp_path, text))
        assert "kafka.yaml" in msg and "top level" in msg


@pytest.mark.parametrize(
    "text, field",
    [
        ("bootstrap_servers: [a, b]\n", "bootstrap_servers"),
        ("security_protocol: TLS\n", "security_protocol"),
        ("sasl_mechanism: SCRAM-SHA-1\n", "sasl_mechanism"),
        ("producer: 5\n", "producer"),
        ("bootstrap_server: typo:9092\n", "bootstrap_server"),  # unknown field: a typo is not ignored
    ],
)
def test_wrong_type_or_unknown_field_names_file_and_field(tmp_path, text, field):
    msg = config_error(load_kafka_settings, write(tmp_path, text))
    assert msg.startswith(f"{tmp_path / 'kafka.yaml'}: {field}: "), msg


def test_secret_value_never_appears_in_a_config_error(tmp_path):
    msg = config_error(load_kafka_settings, write(tmp_path, "sasl_password: {value: s3cr3t-pw}\n"))
    assert "sasl_password" in msg and "s3cr3t" not in msg


def test_env_reference_is_expanded_with_default(tmp_path, monkeypatch):
    monkeypatch.setenv("HZ_TEST_PW", "pw-from-env")
    monkeypatch.delenv("HZ_TEST_UNSET", raising=False)
    p = write(tmp_path, "sasl_password: ${HZ_TEST_PW}\nclient_id: ${HZ_TEST_UNSET:-fallback}\n")
    s = load_kafka_settings(p)
    assert s.sasl_password.get_secret_value() == "pw-from-env"
    assert s.client_id == "fallback"
    assert "pw-from-env" not in repr(s) and "pw-from-env" not in str(s)


def test_unknown_env_var_names_file_field_and_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("HZ_TEST_UNSET", raising=False)
    p = write(tmp_path, "client_id: ok\nproducer:\n  sasl.password: ${HZ_TEST_UNSET}\n")
    msg = config_error(load_kafka_settings, p)
    assert msg == f"{p}: producer.sasl.password: environment variable HZ_TEST_UNSET is not set"


def test_env_overrides_win_over_the_file(tmp_path, monkeypatch):
    p = write(tmp_path, "bootstrap_servers: file:9092\nclient_id: from-file\n")
    monkeypatch.setenv("HAZARDCTL_KAFKA_BOOTSTRAP", "env:9093")
    monkeypatch.setenv("HAZARDCTL_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("HAZARDCTL_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("HAZARDCTL_KAFKA_SASL_USERNAME", "hazard")
    monkeypatch.setenv("HAZARDCTL_KAFKA_SASL_PASSWORD", "env-secret")
    monkeypatch.setenv("HAZARDCTL_KAFKA_SSL_CA", "/etc/ca.pem")
    s = load_kafka_settings(p)
    assert s.client_id == "from-file"
    assert s.common() == {
        "bootstrap.servers": "env:9093",
        "client.id": "from-file",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "hazard",
        "sasl.password": "env-secret",
        "ssl.ca.location": "/etc/ca.pem",
    }


def test_env_config_path_and_bad_env_override_value(tmp_path, monkeypatch):
    p = write(tmp_path, "client_id: via-env-path\n")
    monkeypatch.setenv("HAZARDCTL_KAFKA_CONFIG", str(p))
    assert load_kafka_settings().client_id == "via-env-path"
    monkeypatch.setenv("HAZARDCTL_KAFKA_SECURITY_PROTOCOL", "plaintext-please")
    assert "security_protocol" in config_error(load_kafka_settings)


@pytest.mark.parametrize(
    "section, prop",
    [("producer", "buffer.memory"), ("producer", "key.serializer"),
     ("consumer", "fetch.max.wait.ms"), ("consumer", "key.deserializer")],
)
def test_java_client_property_name_is_a_clear_error_when_the_client_is_created(tmp_path, section, prop):
    """(librdkafka 2.16 happens to accept `max.poll.records`; these Java names it rejects.)"""
    from hazardctl.transports.kafka import KafkaClients

    settings = load_kafka_settings(write(tmp_path, f"{section}:\n  {prop}: 1000\n"))
    clients = KafkaClients(settings)
    create = clients.producer if section == "producer" else (lambda: clients.input(["t"], "g"))
    msg = config_error(create)
    assert prop in msg and section in msg, msg


def test_librdkafka_property_names_are_accepted(tmp_path):
    from hazardctl.transports.kafka import KafkaClients

    settings = load_kafka_settings(write(tmp_path, "producer:\n  linger.ms: 20\n  compression.type: zstd\n"))
    assert KafkaClients(settings).producer() is not None


def test_topics_file_errors_name_the_field(tmp_path):
    p = write(tmp_path, "topics:\n  - name: ok\n    partitions: 0\n", "topics.yaml")
    assert f"{p}: topics.0.partitions: " in config_error(load_model, TopicsFile, p)
    p = write(tmp_path, "topics:\n  - name: 'bad name!'\n    partitions: 1\n", "topics.yaml")
    assert f"{p}: topics.0.name: " in config_error(load_model, TopicsFile, p)


def test_cli_prints_config_errors_as_one_line_with_exit_code_2(tmp_path):
    bad = write(tmp_path, "topics: {oops\n", "topics.yaml")
    runs = [
        [*HAZARDCTL, "setup-topics", "--kafka-config", str(tmp_path / "missing.yaml")],
        [*HAZARDCTL, "setup-topics", "--topics", str(bad)],
    ]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for cmd in runs]
    for p, needle in zip(procs, ["missing.yaml", "topics.yaml"]):
        out, err = p.communicate(timeout=60)
        text = err.decode().strip()
        assert p.returncode == 2, text
        assert needle in text and "Traceback" not in text
        assert len(text.splitlines()) == 1, text
