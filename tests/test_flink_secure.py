"""The Flink job over Kafka's SASL_SSL + SCRAM-SHA-256, against a real secured broker
(`scripts/kafka-local.sh up --secure`, the fixture of tests/test_kafka_secure.py).

Shown here: `hazardctl expand --engine flink` (mini-cluster, thread mode) reads detections and writes tasks
over SASL_SSL with the settings of a kafka.yaml and the password only in the environment, and never prints
the password; a wrong password, and a broker that is not there, each stop the command before any JVM
starts, with exit 3 and one line (no Java stack trace on the terminal).
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid

import orjson
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from hazardctl.synthetic import detection
from tests.conftest import HAZARDCTL, ROOT, topic_maker
from tests.test_kafka_secure import secure_broker  # noqa: F401 - the module-scoped broker fixture

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


@pytest.fixture
def secure_topic(secure_broker):  # noqa: F811
    yield from topic_maker(AdminClient({**secure_broker.librdkafka(), "log_level": 0}), "test-flink-sec", partitions=2)


def expand_flink(env: dict, det: str, tasks: str, dlq: str, *extra: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([*HAZARDCTL, "expand", "--engine", "flink", "--in", f"kafka://{det}",
                             "--out", f"kafka://{tasks}", "--dlq", f"kafka://{dlq}", "--group", f"g-{det}",
                             "--deadline", "120", *extra], env=env, cwd=ROOT, **kw)


def test_flink_job_reads_and_writes_over_sasl_ssl(secure_broker, secure_topic, tmp_path):  # noqa: F811
    det, tasks, dlq = secure_topic("det"), secure_topic("tasks"), secure_topic("dlq", 1)
    items = [detection(f"cam-{c}", 1, time.time(), groups=2) for c in range(3)]  # 3 cameras x 2 groups
    p = Producer({**secure_broker.librdkafka(), "acks": "all", "enable.idempotence": True})
    for d in items:
        p.produce(det, d.model_dump_json().encode(), d.camera_id.encode())
    p.produce(det, b'{"truncated": ', b"cam-bad")  # and a dead letter, written over SASL_SSL too
    assert p.flush(30) == 0
    # the settings from client.yaml; the password only in the environment (the job reads it there)
    env = {k: v for k, v in secure_broker.stage_env().items() if not k.startswith("HAZARDCTL_KAFKA")}
    env["HAZARDCTL_KAFKA_SASL_PASSWORD"] = secure_broker.password
    log = tmp_path / "expand.log"
    proc = expand_flink(env, det, tasks, dlq, "--kafka-config", str(secure_broker.home / "client.yaml"),
                        stdout=log.open("wb"), stderr=subprocess.STDOUT)
    got, dead = [], []
    c = Consumer({**secure_broker.librdkafka(), "group.id": f"reader-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([tasks, dlq])
    try:
        deadline = time.monotonic() + 150
        while (len(got) < 6 or not dead) and time.monotonic() < deadline:
            for m in c.consume(100, 0.5):
                if m.error() is None:
                    (got if m.topic() == tasks else dead).append(orjson.loads(m.value()))
            assert proc.poll() is None, f"the Flink job stopped:\n{log.read_text()[-3000:]}"
    finally:
        c.close()
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    text = log.read_text()
    assert len(got) == 6, f"{len(got)} tasks of 6 over SASL_SSL\n{text[-3000:]}"
    assert {t["camera_id"] for t in got} == {"cam-0", "cam-1", "cam-2"}
    assert [d["key"] for d in dead] == ["cam-bad"]
    assert proc.returncode == 0, text[-2000:]
    assert secure_broker.password not in text
    logs = "".join(f.read_text(errors="replace") for f in (ROOT / ".cache/flink/log").glob("*") if f.is_file())
    assert secure_broker.password not in logs, "the SCRAM password reached a Flink log"


def _one_line_exit_3(proc: subprocess.Popen, password: str | None = None) -> str:
    out, err = proc.communicate(timeout=60)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 3, f"rc {proc.returncode}\n{err[-2000:]}"
    assert len(lines) == 1, f"one line, not:\n{err[-2000:]}"
    assert "Exception" not in err and "\tat " not in err
    if password:
        assert password not in out + err
    return lines[0]


def test_wrong_password_and_no_broker_fail_in_one_line(secure_broker, secure_topic):  # noqa: F811
    det, tasks, dlq = secure_topic("det"), secure_topic("tasks"), secure_topic("dlq", 1)
    wrong = "not-" + secure_broker.password
    t0 = time.monotonic()
    line = _one_line_exit_3(expand_flink(secure_broker.stage_env(HAZARDCTL_KAFKA_SASL_PASSWORD=wrong), det, tasks, dlq,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), wrong)
    assert "refused the login" in line and "sasl_password" in line, line
    assert time.monotonic() - t0 < 30
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{s.getsockname()[1]}"
    env = {**secure_broker.stage_env(), "HAZARDCTL_KAFKA_BOOTSTRAP": nobody}
    line = _one_line_exit_3(expand_flink(env, det, tasks, dlq, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True))
    assert nobody in line and "did not answer" in line, line
