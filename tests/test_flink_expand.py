"""expand --engine flink on a local mini-cluster, against the real broker: parity with the local engine
(same task ids and reasons — suspect and calm groups included —, equal payloads, per-camera order), dead
letters, SIGTERM; and the preflight lines."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import orjson
import pytest

from hazardctl.messages import DeadLetter
from tests.conftest import HAZARDCTL, ROOT
from tests.flink_util import BAD, detections, expected_tasks, flink_yaml, has_all, ids_of, per_camera_order
from tests.kafka_util import consume_until, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


def expand_proc(env, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*HAZARDCTL, "expand", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT)


def test_parity_local_and_flink_minicluster(kafka_bootstrap, make_topic, hazardctl_env, tmp_path):
    src = make_topic("det", 4)
    dst_l, dst_f = make_topic("tasks-local", 4), make_topic("tasks-flink", 4)
    dlq_l, dlq_f = make_topic("dlq-local", 1), make_topic("dlq-flink", 1)
    # 720 detections, gated, with motion cues (suspect, calm, none); 3 broken records
    items = detections(cameras=6, frames=120, bad_every=200, cues=True)
    expected = expected_tasks(items)
    reasons = {t["reason"] for t in expected.values()}
    assert reasons == {"suspect", "new", "changed", "refresh"} and 80 < len(expected) < 720 * 3 / 2, \
        "gate must be exercised"
    produce(kafka_bootstrap, src, items)

    cfg = flink_yaml(tmp_path / "flink.yaml", tmp_path / "checkpoints")
    flink = expand_proc(hazardctl_env, "--engine", "flink", "--flink-config", str(cfg), "--in", f"kafka://{src}",
                        "--out", f"kafka://{dst_f}", "--dlq", f"kafka://{dlq_f}", "--group", f"flink-{src}")
    local = expand_proc(hazardctl_env, "--in", f"kafka://{src}", "--out", f"kafka://{dst_l}",
                        "--dlq", f"kafka://{dlq_l}", "--group", f"local-{src}")
    try:
        out_l = consume_until(kafka_bootstrap, dst_l, has_all(set(expected)), timeout=60)
        out_f = consume_until(kafka_bootstrap, dst_f, has_all(set(expected)), timeout=150)
        dead_f = consume_until(kafka_bootstrap, dlq_f, lambda m: len(m) >= len(BAD), timeout=30)
        dead_l = consume_until(kafka_bootstrap, dlq_l, lambda m: len(m) >= len(BAD), timeout=30)
        time.sleep(2)  # nothing more may come
        out_f = consume_until(kafka_bootstrap, dst_f, lambda m: False, timeout=3)
    finally:
        for p in (flink, local):
            p.send_signal(signal.SIGTERM)
        rc_f, rc_l = flink.wait(60), local.wait(30)
    assert rc_f == 0, flink.stderr.read().decode()[-2000:]
    assert rc_l == 0

    # the same tasks: ids, and payloads equal but for the expand time
    assert ids_of(out_l) == ids_of(out_f) == set(expected)
    assert len(out_f) == len(expected), "an uninterrupted run sends each task once"

    def payloads(msgs):
        out = {}
        for m in msgs:
            t = orjson.loads(m.value())
            assert m.key() == t["camera_id"].encode(), "keyed by camera id"
            t["times"].pop("expand")
            out[t["task_id"]] = t
        return out

    assert payloads(out_f) == payloads(out_l)
    assert per_camera_order(out_f) == per_camera_order(out_l)

    # each broken record is one dead letter, the same as the local engine's, with where it was
    assert len(dead_f) == len(BAD)
    letters_f = [DeadLetter.model_validate_json(m.value()) for m in dead_f]
    letters_l = [DeadLetter.model_validate_json(m.value()) for m in dead_l]
    key = lambda d: (d.payload, d.error_class, d.reason, d.key)  # noqa: E731
    assert sorted(map(key, letters_f)) == sorted(map(key, letters_l))
    for d in letters_f:
        assert d.stage == "expand" and d.source == f"kafka:{src}"
        assert d.partition is not None and d.offset is not None
    assert (ROOT / ".cache" / "flink" / "log").is_dir()


def test_flink_sigterm_while_busy_exits_cleanly(kafka_bootstrap, make_topic, hazardctl_env, tmp_path):
    src, dst, dlq = make_topic("det", 2), make_topic("tasks", 2), make_topic("dlq", 1)
    cfg = flink_yaml(tmp_path / "flink.yaml", tmp_path / "checkpoints", refresh_interval_s=0)
    proc = expand_proc(hazardctl_env, "--engine", "flink", "--flink-config", str(cfg), "--in", f"kafka://{src}",
                       "--out", f"kafka://{dst}", "--dlq", f"kafka://{dlq}", "--group", f"flink-{src}")
    items = detections(4, 150)
    produce(kafka_bootstrap, src, items[:40])
    feeder = threading.Thread(target=produce, args=(kafka_bootstrap, src, items[40:]), kwargs={"rate": 100})
    try:
        consume_until(kafka_bootstrap, dst, lambda m: len(m) >= 30, timeout=120)
        feeder.start()
        time.sleep(2)
        assert feeder.is_alive(), "SIGTERM must land while input is still arriving"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        assert rc == 0, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() - t0 < 30
        assert b"cancelled" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        if feeder.is_alive():
            feeder.join()


def run_cli(env, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*HAZARDCTL, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_preflight_one_line_naming_the_fix(hazardctl_env, tmp_path):
    kafka = ["--in", "kafka://a", "--out", "kafka://b"]
    # connector jar missing
    cfg = tmp_path / "flink.yaml"
    cfg.write_text(f"connector_jar: {tmp_path}/nope.jar\n")
    p = run_cli(hazardctl_env, "expand", "--engine", "flink", "--flink-config", str(cfg), *kafka)
    assert p.returncode == 2 and "nope.jar missing: run `make flink-env`" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    # no JobManager at the address: quick, names make flink-up
    t0 = time.monotonic()
    p = run_cli(hazardctl_env, "expand", "--engine", "flink", "--jobmanager", "127.0.0.1:1", *kafka)
    assert p.returncode == 2 and "no Flink JobManager at 127.0.0.1:1" in p.stderr and "make flink-up" in p.stderr
    assert time.monotonic() - t0 < 20
    p = run_cli(hazardctl_env, "flink-job", "list", "--jobmanager", "127.0.0.1:1")
    assert p.returncode == 2 and "make flink-up" in p.stderr
    # java missing
    env = {**hazardctl_env, "PATH": "/nonexistent"}
    p = run_cli(env, "expand", "--engine", "flink", *kafka)
    assert p.returncode == 2 and "java not found" in p.stderr
    # pipes are not for the Flink engine
    p = run_cli(hazardctl_env, "expand", "--engine", "flink")
    assert p.returncode == 2 and "kafka://" in p.stderr
    # a bad config file: the field, one line
    cfg.write_text("parallelism: {process: 0}\n")
    p = run_cli(hazardctl_env, "expand", "--engine", "flink", "--flink-config", str(cfg), *kafka)
    assert p.returncode == 2 and "parallelism.process" in p.stderr


def test_flink_venv_missing_names_make_flink_env(monkeypatch, tmp_path):
    from stages.expand import flink_cli, flink_conf

    monkeypatch.setattr(flink_cli, "VENV_PY", tmp_path / ".venv-flink" / "bin" / "python")
    with pytest.raises(flink_cli.FlinkError, match=r"\.venv-flink missing: run `make flink-env`"):
        flink_cli.preflight(flink_conf.FlinkSettings())
