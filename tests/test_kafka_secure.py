"""The stages over Kafka's SASL_SSL + SCRAM-SHA-256, against a real secured broker.

`scripts/kafka-local.sh up --secure` starts a second broker (its own home under tmp, its own ports,
the jars of the plaintext broker) with a CA and a server certificate made now by openssl and SCRAM
users created at format time. Its only client listener is SASL_SSL; the shared plaintext broker on
9092 is never touched (checked after `down --secure`).

Shown here: detections go through expand and schedule (simulated LLM) to results on the secured
broker; detect (the real detector on a test image) writes its detection there and consume (results in,
a dead letter out) serves what it read; a wrong password and an untrusted certificate each end every
stage (detect, expand, schedule, consume) within 30 s with exit code 3 and one line that says what to
fix, and no secret is ever printed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from hazardctl.synthetic import detection
from tools.llm_sim import SimConfig, SimKey, SimServer
from tests.conftest import HAZARDCTL, ROOT, topic_maker

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(150)]

JARS = ROOT / ".cache/kafka/libs"
SCRIPT = ROOT / "scripts/kafka-local.sh"


def _unavailable(why: str):
    if os.environ.get("HAZARDCTL_REQUIRE_KAFKA") == "1":
        pytest.fail(f"{why} (make test fetches the jars with `scripts/kafka-local.sh up`)")
    pytest.skip(why)


def _free_port_pair() -> int:
    """A port P with P+1 free too (the broker's controller listens on P+1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket() as t:
            try:
                t.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port pair")


def _script(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=150)


class SecureBroker:
    def __init__(self, home: Path, port: int):
        self.home, self.port = home, port
        # KAFKA_LOCAL_READY=log: ready when the broker logs that it started (no JVM client round trip:
        # the tests' own SASL_SSL clients are the round trip)
        self.script_env = {**os.environ, "KAFKA_LOCAL_HOME": str(home), "KAFKA_LOCAL_PORT": str(port),
                           "KAFKA_LOCAL_TIMEOUT": "90", "KAFKA_LOCAL_SECURE": "1", "KAFKA_LOCAL_READY": "log"}
        self.client: dict[str, str] = {}

    def up(self) -> str:
        p = _script(self.script_env, "up")
        assert p.returncode == 0, f"kafka-local.sh up --secure failed:\n{p.stdout}{p.stderr}"
        for line in (self.home / "client.env").read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                self.client[k] = v
        return p.stdout + p.stderr

    @property
    def password(self) -> str:
        return self.client["HAZARDCTL_KAFKA_SASL_PASSWORD"]

    @property
    def ca(self) -> str:
        return self.client["HAZARDCTL_KAFKA_SSL_CA"]

    def librdkafka(self) -> dict:
        return {"bootstrap.servers": self.client["HAZARDCTL_KAFKA_BOOTSTRAP"], "security.protocol": "sasl_ssl",
                "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": self.client["HAZARDCTL_KAFKA_SASL_USERNAME"],
                "sasl.password": self.password, "ssl.ca.location": self.ca}

    def stage_env(self, **override: str) -> dict:
        """The environment of a stage: no plaintext settings inherited, the secured broker's from client.env."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HAZARDCTL_KAFKA")}
        env.update(self.client)
        env.update(override)
        env["PYTHONPATH"] = str(ROOT)
        return env


def _plaintext_status() -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_LOCAL")}
    return _script(env, "status").returncode


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    if shutil.which("java") is None:
        _unavailable("java is not installed")
    if not any(JARS.glob(".fetched-*")):
        _unavailable("the Kafka jars are not fetched")
    if shutil.which("openssl") is None:
        _unavailable("openssl is not installed")
    plain_before = _plaintext_status()
    broker = SecureBroker(tmp_path_factory.mktemp("kafka-secure"), _free_port_pair())
    out = broker.up()
    assert broker.password not in out, "kafka-local.sh printed the SCRAM password"
    assert "SASL_SSL" in out
    yield broker
    p = _script(broker.script_env, "down")
    assert p.returncode == 0, p.stdout + p.stderr
    assert _plaintext_status() == plain_before, "`down --secure` changed the plaintext broker"


@pytest.fixture
def secure_topic(secure_broker):
    yield from topic_maker(AdminClient({**secure_broker.librdkafka(), "log_level": 0}), "test-sec", partitions=2)


def test_secured_broker_refuses_plaintext_and_anonymous_clients(secure_broker):
    """The listener really is SASL_SSL: a plaintext client and a TLS client without SASL get nothing."""
    for conf in ({"security.protocol": "plaintext"}, {"security.protocol": "ssl", "ssl.ca.location": secure_broker.ca}):
        admin = AdminClient({"bootstrap.servers": secure_broker.client["HAZARDCTL_KAFKA_BOOTSTRAP"], "log_level": 0,
                             **conf})
        with pytest.raises(Exception):
            admin.list_topics(timeout=1.5)
    assert AdminClient({**secure_broker.librdkafka(), "log_level": 0}).list_topics(timeout=10).brokers


def test_expand_and_schedule_over_sasl_ssl_scram(secure_broker, secure_topic, tmp_path):
    det, tasks, results, dlq = secure_topic("det"), secure_topic("tasks"), secure_topic("results"), secure_topic("dlq", 1)
    now = time.time()
    items = [detection(f"cam-{c}", 1, now, groups=2) for c in range(3)]  # 3 cameras x 2 groups = 6 tasks
    p = Producer({**secure_broker.librdkafka(), "acks": "all", "enable.idempotence": True})
    for d in items:
        p.produce(det, d.model_dump_json().encode(), d.camera_id.encode())
    assert p.flush(30) == 0

    # expand: the settings from a kafka.yaml (client.yaml) with the password only in the environment;
    # schedule: everything from HAZARDCTL_KAFKA_* variables.
    yaml_env = {k: v for k, v in secure_broker.stage_env().items() if not k.startswith("HAZARDCTL_KAFKA")}
    yaml_env["HAZARDCTL_KAFKA_SASL_PASSWORD"] = secure_broker.password
    expand_err, schedule_err = tmp_path / "expand.err", tmp_path / "schedule.err"
    sim = SimServer(SimConfig(keys=[SimKey(name="k1", api_key="sim-secret-k1", qps=20)], latency="fixed:0.05", port=0))
    sim.__enter__()
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(json.dumps({"keys": [{"name": "k1", "api_key": "sim-secret-k1", "qps_limit": 20,
                                               "base_url": sim.base_url}]}))
    procs = [
        subprocess.Popen([*HAZARDCTL, "expand", "--in", f"kafka://{det}", "--out", f"kafka://{tasks}",
                          "--dlq", f"kafka://{dlq}", "--group", f"g-{det}", "--deadline", "120",
                          "--kafka-config", str(secure_broker.home / "client.yaml")],
                         env=yaml_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=expand_err.open("wb")),
        subprocess.Popen([*HAZARDCTL, "schedule", "--keys", str(keys_file), "--in", f"kafka://{tasks}",
                          "--out", f"kafka://{results}", "--dlq", f"kafka://{dlq}", "--group", f"g-{tasks}"],
                         env=secure_broker.stage_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=schedule_err.open("wb")),
    ]
    got: list[dict] = []
    c = Consumer({**secure_broker.librdkafka(), "group.id": f"reader-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([results])
    try:
        deadline = time.monotonic() + 60
        while len(got) < 6 and time.monotonic() < deadline:
            for m in c.consume(100, 0.5):
                if m.error() is None:
                    got.append(orjson.loads(m.value()))
            for proc in procs:
                assert proc.poll() is None, f"a stage stopped:\n{expand_err.read_text()}\n{schedule_err.read_text()}"
    finally:
        c.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        sim.__exit__(None, None, None)
    logs = expand_err.read_text() + schedule_err.read_text()
    assert len(got) == 6, f"{len(got)} results of 6 over SASL_SSL\n{logs[-3000:]}"
    assert {r["camera_id"] for r in got} == {"cam-0", "cam-1", "cam-2"}
    assert all(r["status"] == "ok" for r in got), [r["status"] for r in got]
    assert secure_broker.password not in logs


def _read_all(broker: SecureBroker, topic: str, n: int, timeout: float) -> list:
    """The first `n` messages of `topic` (fewer if the time runs out), read over SASL_SSL."""
    c = Consumer({**broker.librdkafka(), "group.id": f"reader-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    got: list = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            got += [m for m in c.consume(100, 0.5) if m.error() is None]
    finally:
        c.close()
    return got


def test_detect_and_consume_over_sasl_ssl_scram(secure_broker, secure_topic, tmp_path):
    """detect: the real detector on tests/data/bus.jpg, its detection produced to the secured broker.
    consume: two results and one undecodable record read from it; the cameras served on its HTTP API
    and the bad record a dead letter produced back to it. Everything from HAZARDCTL_KAFKA_* variables."""
    from hazardctl.synthetic import risk_result
    from tests.consume_proc import ConsumeProcess

    det, results, dlq = secure_topic("det"), secure_topic("results"), secure_topic("dlq", 1)
    model = ROOT / ".cache/models/centernet-coco.onnx"
    if not model.exists():
        pytest.fail("the detector model is missing: run `make models`")
    err = tmp_path / "detect.err"
    with err.open("wb") as f:
        rc = subprocess.run([*HAZARDCTL, "detect", "--source", "tests/data/bus.jpg", "--camera-id", "sec-cam",
                             "--model", str(model), "--out", f"kafka://{det}", "--as-fast-as-possible"],
                            env=secure_broker.stage_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=f,
                            timeout=120).returncode
    logs = err.read_text()
    assert rc == 0, logs[-3000:]
    got = _read_all(secure_broker, det, 1, 30)
    assert len(got) == 1, logs[-3000:]
    detection_msg = orjson.loads(got[0].value())
    assert got[0].key() == b"sec-cam" and detection_msg["camera_id"] == "sec-cam" and detection_msg["objects"]

    p = Producer({**secure_broker.librdkafka(), "acks": "all", "enable.idempotence": True})
    for cam in ("sec-cam-1", "sec-cam-2"):
        p.produce(results, risk_result(cam, "g1", 1, time.time(), level="high").model_dump_json().encode(), cam.encode())
    p.produce(results, b'{"not a result', b"sec-cam-1")
    assert p.flush(30) == 0
    with ConsumeProcess("--in", f"kafka://{results}", "--dlq", f"kafka://{dlq}", "--replay", "0",
                        "--group", f"g-{results}", "--http", "127.0.0.1:0", env=secure_broker.stage_env(),
                        stdin=False, timeout=60) as c:
        cams = c.wait_for(lambda: {x["camera_id"] for x in c.get("/cameras")[1]["cameras"]} >= {"sec-cam-1", "sec-cam-2"},
                          30, "both cameras served by consume")
        assert cams
        dead = _read_all(secure_broker, dlq, 1, 30)
        assert len(dead) == 1 and b"not a result" in dead[0].value(), "".join(c.stderr[-20:])
    logs += "".join(c.stderr)
    assert secure_broker.password not in logs


def _other_ca(tmp_path: Path) -> str:
    """A CA the broker's certificate was not signed by (a man in the middle, or the wrong bundle)."""
    key, pem = tmp_path / "other-ca.key", tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(pem),
                    "-days", "1", "-subj", "/CN=some other CA"], check=True, capture_output=True)
    return str(pem)


def test_wrong_password_and_untrusted_certificate_fail_fast_with_one_line(secure_broker, secure_topic, tmp_path):
    det, tasks = secure_topic("det"), secure_topic("tasks")
    wrong = "wrong-" + uuid.uuid4().hex
    cases = {
        "wrong password": ({"HAZARDCTL_KAFKA_SASL_PASSWORD": wrong}, "refused the login of user 'hazardctl'"),
        "untrusted certificate": ({"HAZARDCTL_KAFKA_SSL_CA": _other_ca(tmp_path)}, "certificate verify failed"),
    }
    # schedule with keys that need no simulator process: the Kafka check comes before any LLM call
    stages = {"expand": ["--in", f"kafka://{det}", "--out", f"kafka://{tasks}"],
              "schedule": ["--in", f"kafka://{tasks}", "--out", "-", "--keys", "config/api_keys.sim.yaml"],
              "detect": ["--source", "tests/data/bus.jpg", "--model", str(ROOT / ".cache/models/centernet-coco.onnx"),
                         "--out", f"kafka://{det}", "--as-fast-as-possible"],
              "consume": ["--in", f"kafka://{tasks}", "--ws", "127.0.0.1:0", "--replay", "0"]}
    # wrong password: every stage; untrusted certificate: schedule, detect, consume. In two waves of at
    # most four processes at once (seven Python start-ups at once on two busy cores took most of the
    # budget by themselves): each must end on its own within 30 s of its wave's start, Python's own
    # start-up included
    waves = [(("wrong password", "expand"), ("wrong password", "schedule"), ("untrusted certificate", "schedule")),
             (("wrong password", "detect"), ("untrusted certificate", "detect"), ("wrong password", "consume"),
              ("untrusted certificate", "consume"))]
    outputs = {}
    for wave in waves:
        runs = {}
        t0 = time.monotonic()
        for case, stage in wave:
            runs[(case, stage)] = subprocess.Popen([*HAZARDCTL, stage, *stages[stage]],
                                                   env=secure_broker.stage_env(**cases[case][0]),
                                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for key, proc in runs.items():
            try:
                out, err = proc.communicate(timeout=max(1.0, 30 - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                for p in runs.values():
                    p.kill()
                pytest.fail(f"{key}: still running after 30 s (it must stop, not retry forever)")
            outputs[key] = (proc.returncode, (out + err).decode(), time.monotonic() - t0)
    assert len(outputs) == 7
    for (case, stage), (rc, text, elapsed) in outputs.items():
        expected = cases[case][1]
        assert rc == 3, f"{case}/{stage}: exit {rc}\n{text}"
        errors = [line for line in text.splitlines() if f"hazardctl {stage}: error:" in line]
        assert len(errors) == 1 and expected in errors[0], f"{case}/{stage}:\n{text}"
        assert "Traceback" not in text, text
        assert wrong not in text and secure_broker.password not in text, f"{case}/{stage} printed a secret"
        assert elapsed < 30


def test_running_clients_stop_on_a_refused_login_instead_of_retrying(secure_broker):
    """Past the start-up check (credentials rotated under a running stage, a reconnect): the clients'
    error callback turns the refusal into ServiceUnavailable out of poll(), the stage's one line."""
    from hazardctl.config import KafkaSettings
    from hazardctl.errors import ServiceUnavailable
    from hazardctl.transports.kafka import KafkaClients

    wrong = "rotated-" + uuid.uuid4().hex
    settings = KafkaSettings(bootstrap_servers=secure_broker.client["HAZARDCTL_KAFKA_BOOTSTRAP"],
                             security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
                             sasl_username="hazardctl", sasl_password=wrong, ssl_ca_location=secure_broker.ca)
    clients = KafkaClients(settings)
    for poll in (lambda: clients.input(["any-topic"], f"g-{wrong}").poll(0.5),
                 lambda: clients.output("any-topic").poll(0.5)):
        t0 = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="refused the login of user 'hazardctl'") as exc:
            while time.monotonic() - t0 < 20:
                poll()
        assert wrong not in str(exc.value) and time.monotonic() - t0 < 20
