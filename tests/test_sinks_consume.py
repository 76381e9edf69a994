"""Must show (issue 18): a webhook receiver down and an MQTT broker restarted during a 50-results/s run
through a real `hazardctl consume` (SQLite outbox): afterwards each has every event exactly once per
idempotency key, in order per incident, every signature valid, the same lifecycle the WebSocket
clients saw — and the push went on during the outage. A short outage here; `make bench-sinks` runs
the issue's 60 s one (scripts/bench_sinks.py, the same code)."""

from __future__ import annotations

import pytest

from scripts.bench_sinks import outage_run


@pytest.mark.timeout(180)
def test_webhook_down_and_broker_restart_during_a_run_lose_nothing(tmp_path):
    rep = outage_run(tmp_path, duration=10.0, rate=50.0, outage_at=2.0, outage=5.0, broker_outage_at=3.0,
                     broker_outage=3.0, log=lambda *_: None)
    assert rep["results_sent"] >= 495
    assert rep["incidents"] >= 20 and rep["webhook"]["keys"] == rep["ws_incident_events"]
    assert rep["mqtt"]["keys"] == rep["ws_incident_events"]
    assert rep["ws_events_during_outage"] > 0  # the push did not wait for the dead receiver
    assert rep["sink_attempts"]["failed"] > 0 and rep["sink_attempts"]["dead"] == 0


def test_undeliverable_events_become_dead_letters_on_consumes_dlq_without_the_secret(tmp_path):
    import json
    import time

    from hazardctl.synthetic import risk_result
    from tests.consume_proc import ConsumeProcess
    from tests.sink_receivers import free_port, wait_until

    secret = "dead-letter-test-secret-xyz"
    (tmp_path / "secret").write_text(secret)
    dlq = tmp_path / "dlq.jsonl"
    c = ConsumeProcess("--sink", f"webhook:http://127.0.0.1:{free_port()}/nobody", "--sink-secret-file",
                       str(tmp_path / "secret"), "--sink-max-attempts", "2", "--sink-retry-base", "0.1",
                       "--dlq", str(dlq), "--data-dir", str(tmp_path / "data"))
    try:
        c.send(risk_result("cam-1", "g1", 1, time.time(), level="high"))
        wait_until(lambda: dlq.exists() and dlq.read_text().strip(), 15, "the dead letter")
        assert c.metric("hazardctl_sink_attempts_total", outcome="dead") == 1
        assert c.metric("hazardctl_sink_attempts_total", outcome="failed") == 1
        assert c.metric("hazardctl_dead_letters_total", stage="consume", reason="sink_undeliverable") == 1
    finally:
        c.stop()
        c.kill()
    (dl,) = [json.loads(line) for line in dlq.read_text().splitlines()]
    assert dl["stage"] == "consume" and dl["error_class"] == "sink_undeliverable" and dl["attempts"] == 2
    assert dl["source"].startswith("sink:webhook:127.0.0.1:") and "cannot connect" in dl["last_error"]
    event = json.loads(dl["payload"])
    assert event["event"] == "new" and event["idempotency_key"].endswith(":1") and event["camera_id"] == "cam-1"
    assert secret not in dlq.read_text() and secret not in "".join(c.stderr)


def test_bad_sink_flags_are_one_line_and_exit_2(tmp_path):
    import subprocess

    from tests.conftest import HAZARDCTL, ROOT

    for args, needle in ((["--sink", "webhook:https://u:pw@h/x"], "credentials"),
                         (["--sink", "kafka://x", "--sink-secret-file", str(tmp_path / "none")], "--sink-secret-file")):
        r = subprocess.run([*HAZARDCTL, "consume", "--ws", "127.0.0.1:0", *args], cwd=ROOT, capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
        err = r.stderr.strip()
        assert r.returncode == 2 and needle in err and len(err.splitlines()) == 1, (args, r.returncode, err)
        assert "pw" not in err and "Traceback" not in err


def test_sink_flags_checked_before_anything_starts(tmp_path):
    import pytest

    from hazardctl.errors import ConfigError
    from stages.consume_sinks import sink_options

    kw = dict(min_level="medium", cooldown_s=0.0, secret_file=None, timeout_s=5.0, ca_file=None, max_attempts=12,
              retry_base_s=1.0, retry_cap_s=30.0)
    assert sink_options([], **kw) is None
    assert sink_options(["kafka://incidents"], **kw).policy.max_attempts == 12
    for bad in ({"min_level": "extreme"}, {"cooldown_s": -1.0}, {"timeout_s": 0.0}, {"retry_cap_s": 0.5},
                {"ca_file": str(tmp_path / "none.pem")}):
        with pytest.raises(ConfigError):
            sink_options(["mqtt://h:1883/p"], **{**kw, **bad})
    with pytest.raises(ConfigError):
        sink_options(["smtp://mail"], **kw)
