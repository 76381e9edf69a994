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
    rep = outage_run(tmp_path, duration=14.0, rate=50.0, outage_at=3.0, outage=6.0, broker_outage_at=5.0,
                     broker_outage=3.0, log=lambda *_: None)
    assert rep["results_sent"] >= 690
    assert rep["incidents"] >= 20 and rep["webhook"]["keys"] == rep["ws_incident_events"]
    assert rep["mqtt"]["keys"] == rep["ws_incident_events"]
    assert rep["ws_events_during_outage"] > 0  # the push did not wait for the dead receiver
    assert rep["sink_attempts"]["failed"] > 0 and rep["sink_attempts"]["dead"] == 0
