"""Honest LLM windows (issue 17.3): `times.llm_start/llm_end` are the HTTP exchange itself, every
attempt's window is kept in `times.llm_attempts`, and a retry shows up as retry time of its own, against
the real simulated provider (tools.llm_sim) on loopback."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from hazardctl import llm_client
from hazardctl.keypool import Outcome
from tests.test_schedule_stage import keys_for, run_stage, sim_keys, tasks
from tools.llm_sim import SimConfig, SimServer


def test_the_window_is_the_http_exchange_not_the_prompt_building_or_the_answer_reading(monkeypatch):
    """Building the request and reading the answer are made slow on purpose (300 ms each, wrapped
    around the real functions): the window must hold neither."""
    slow = 0.3
    build, read = llm_client.chat_messages, llm_client.read_answer

    def slow_build(*a, **kw):
        time.sleep(slow)
        return build(*a, **kw)

    def slow_read(*a, **kw):
        time.sleep(slow)
        return read(*a, **kw)

    monkeypatch.setattr(llm_client, "chat_messages", slow_build)
    monkeypatch.setattr(llm_client, "read_answer", slow_read)
    with SimServer(SimConfig(keys=sim_keys(1), latency="fixed:0.1", port=0)) as sim:
        key = keys_for(sim, 1).keys[0]

        async def one():
            clients = llm_client.open_clients([key])
            try:
                before = time.time()
                call = await llm_client.call_llm(clients[key.name], key, tasks(1)[0], 5.0)
                return before, call, time.time()
            finally:
                await clients[key.name].close()

        before, call, after = asyncio.run(one())
        arrived = sim.requests()[-1]["ts"]
    assert call.outcome is Outcome.OK
    sent, answered = call.window
    assert sent >= before + slow  # the prompt was built before the exchange began
    assert answered <= after - slow  # the answer was read after it ended
    assert sent <= arrived <= answered  # the provider saw the request inside the window
    assert answered - sent >= 0.1 and answered - sent == pytest.approx(call.http_s, abs=1e-6)  # one clock


def hop_count(hop: str) -> float:
    return REGISTRY.get_sample_value("hazardctl_hop_latency_seconds_count", {"stage": "schedule", "hop": hop}) or 0.0


def test_every_attempt_keeps_its_window_and_a_retry_is_retry_time_not_overhead(tmp_path):
    retries_before, llm_before = hop_count("llm_first_start_to_llm_start"), hop_count("llm_start_to_llm_end")
    with SimServer(SimConfig(keys=sim_keys(2), latency="fixed:0.05", port=0)) as sim:
        sim.set_fault("k0", "server_error_burst", count=3)
        results, dead, _ = run_stage(tmp_path, keys_for(sim, 2), tasks(10))
        arrivals = sorted(r["ts"] for r in sim.requests())
    assert all(r["status"] == "ok" for r in results) and not dead
    windows = []
    for r in results:
        t = r["times"]
        attempts = t["llm_attempts"]
        assert len(attempts) == r["attempts"]
        assert attempts[-1] == [t["llm_start"], t["llm_end"]]  # the answering attempt last
        assert t["dequeue"] <= attempts[0][0]
        for (s0, e0), (s1, e1) in zip(attempts, attempts[1:]):
            assert s0 < e0 <= s1 < e1  # one after the other, never overlapping
        assert t["llm_end"] <= t["result"]
        windows += attempts
    retried = [r for r in results if r["attempts"] == 2]
    assert len(retried) == 3  # the three 5xx answers, each retried on k1
    # every request the provider received lies in one of the windows we reported, and no window is empty
    assert len(windows) == len(arrivals) == 13
    assert all(any(s <= a <= e for s, e in windows) for a in arrivals)
    assert all(any(s <= a <= e for a in arrivals) for s, e in windows)
    # the metrics: the retries as a hop of their own; the LLM hop is the answering attempts only
    assert hop_count("llm_first_start_to_llm_start") - retries_before == 3
    assert hop_count("llm_start_to_llm_end") - llm_before == 10
