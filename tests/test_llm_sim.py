"""The simulated vision LLM: limiter rules with a fake clock, then the real server over loopback HTTP.

HTTP tests talk to a real aiohttp server on 127.0.0.1 with the real `openai` AsyncOpenAI client
(max_retries=0, as the scheduler uses it) or httpx where headers and raw bodies are checked.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from pydantic import ValidationError

from hazardctl.errors import ConfigError
from tools.llm_sim import SimConfig, SimServer, UnknownKey, build_config, generated_keys, start_sim_process
from tools.llm_sim.answers import (
    Fault, Latency, answer_content, assessment, decide, parse_fault_flag, request_digest,
)
from tools.llm_sim.limits import Limits, RateWindow, ScopeLimit, SlidingWindow, TokenBucket, admit, retry_after_headers
from hazardctl.messages import RiskAssessment

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "data:image/jpeg;base64," + base64.b64encode((ROOT / "tests/data/bus.jpg").read_bytes()).decode()
PROMPT = "Assess this group: object_id 0 person, object_id 3 car, object_id 4 bus. Answer one JSON object."


def body(text: str = PROMPT, image: str | None = IMAGE) -> dict:
    parts: list[dict] = [{"type": "text", "text": text}]
    if image:
        parts.append({"type": "image_url", "image_url": {"url": image}})
    return {"model": "qwen-vl-plus", "messages": [{"role": "user", "content": parts}]}


def sim_config(n: int = 3, qps: float = 50, rpm: int | None = None, latency: str = "fixed:0.01", **kw) -> SimConfig:
    return SimConfig(keys=generated_keys(n, qps, rpm), latency=latency, port=0, **kw)


_http = httpx.Client()  # one connection pool for the synchronous requests of all tests


def post(sim, key: str | None, json: object = None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return _http.post(f"{sim.base_url}/chat/completions", json=body() if json is None else json,
                      headers=headers, timeout=kw.pop("timeout", 10), **kw)


def admin(sim, path: str, json: dict | None = None) -> httpx.Response:
    url = sim.base_url.removesuffix("/v1") + path
    return httpx.post(url, json=json, timeout=10) if json is not None else httpx.get(url, timeout=10)


def ai(sim, key: str, timeout: float = 10) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.base_url, api_key=key, max_retries=0, timeout=timeout)


async def ask(client: openai.AsyncOpenAI, text: str = PROMPT):
    return await client.chat.completions.create(model="qwen-vl-plus", messages=body(text)["messages"])


# ------------------------------------------------------------------------- limiter, fake clock


class KeyLimit:
    """One key's qps (and rpm) under one limiter model: admit() → 0.0 (admitted) or the wait."""

    def __init__(self, qps: float, rpm: int | None, now: float, model: str = "token-bucket"):
        self.scope = ScopeLimit("key", "k", Limits(qps=qps, rpm=rpm), model, now)  # type: ignore[arg-type]

    def admit(self, now: float) -> float:
        refusal = admit([self.scope], now, tokens=1)
        return 0.0 if refusal is None else refusal.wait_s


def test_token_bucket_allows_a_burst_of_qps_then_refills_at_qps():
    b = TokenBucket(5, now=0.0)
    for _ in range(5):
        assert b.wait(0.0) == 0.0
        b.take(0.0)
    assert b.wait(0.0) == pytest.approx(0.2)
    assert b.wait(0.1) == pytest.approx(0.1)
    assert b.wait(0.2) == 0.0


def test_a_rejected_request_consumes_nothing():
    lim = KeyLimit(qps=2, rpm=None, now=0.0)
    assert [lim.admit(0.0) for _ in range(2)] == [0.0, 0.0]
    for _ in range(50):  # hammering while empty does not push the next token further away
        assert lim.admit(0.25) == pytest.approx(0.25)
    assert lim.admit(0.5) == 0.0


@pytest.mark.parametrize("qps", [5, 3, 7.5, 1])
def test_client_spaced_exactly_at_one_over_qps_is_never_rejected_even_after_a_burst(qps):
    lim = KeyLimit(qps=qps, rpm=None, now=0.0)
    t = 0.0
    while lim.admit(t) == 0.0:  # drain the bucket: from now on every token is earned just in time
        pass
    for _ in range(2000):
        t += 1.0 / qps  # accumulates float error on purpose
        assert lim.admit(t) == 0.0


def test_client_slightly_faster_than_qps_is_rejected():
    lim = KeyLimit(qps=5, rpm=None, now=0.0)
    waits = [lim.admit(i * 0.19) for i in range(200)]
    assert any(w > 0 for w in waits)


def test_rpm_window_counts_accepted_requests_in_any_sliding_minute():
    lim = KeyLimit(qps=100, rpm=3, now=0.0, model="sliding-window")
    assert [lim.admit(t) for t in (0.0, 1.0, 2.0)] == [0.0, 0.0, 0.0]
    assert lim.admit(3.0) == pytest.approx(57.0)
    assert lim.admit(59.9) == pytest.approx(0.1)
    assert lim.admit(60.0) == 0.0  # the request of t=0 left the window
    assert lim.admit(60.5) == pytest.approx(0.5)  # t=1 leaves at 61
    w = SlidingWindow(2, window_s=60.0)
    w.take(0.0)
    assert w.wait(10.0) == 0.0


def test_key_limit_waits_for_the_stricter_of_qps_and_rpm():
    lim = KeyLimit(qps=1, rpm=2, now=0.0, model="sliding-window")
    assert lim.admit(0.0) == 0.0
    assert lim.admit(0.5) == pytest.approx(0.5)  # qps
    assert lim.admit(1.0) == 0.0
    assert lim.admit(2.0) == pytest.approx(58.0)  # rpm, although a qps token is there


def test_tolerance_accepts_slightly_early_requests_only():
    def bucket() -> TokenBucket:
        b = TokenBucket(5, now=0.0, capacity=1, tolerance_s=0.01)
        b.take(0.0)
        return b

    assert bucket().wait(0.195) == 0.0  # 5 ms early: accepted
    assert bucket().wait(0.185) == pytest.approx(0.005)  # 15 ms early: rejected
    assert TokenBucket(5, now=0.0, capacity=1).wait(0.0) == 0.0


def test_retry_after_headers_round_up_to_whole_seconds_and_keep_exact_ms():
    assert retry_after_headers(0.2) == {"Retry-After": "1", "retry-after-ms": "200"}
    assert retry_after_headers(57.0) == {"Retry-After": "57", "retry-after-ms": "57000"}
    assert retry_after_headers(2.0004)["Retry-After"] == "3"


def test_requests_after_first_401_is_per_key_not_per_account():
    from tools.llm_sim.stats import ScopeStats

    key, account = ScopeStats(), ScopeStats(watch_401=False)
    for st in (key, account):  # a revoked key's 401, then requests of the account's other keys
        st.arrive(0.0), st.count("unauthorized_401"), st.arrive(1.0), st.arrive(2.0)
    assert key.counts["requests_after_first_401"] == 2 and account.counts["requests_after_first_401"] == 0
    assert account.counts["unauthorized_401"] == 1


def test_rate_window_reports_the_busiest_second():
    w = RateWindow(1.0)
    for t in (0.0, 0.1, 0.2, 1.25, 1.26, 1.27, 1.28, 5.0):  # (0.28, 1.28] holds 4
        w.add(t)
    assert w.max_seen == 4


# ------------------------------------------------------------------------ latency, answers, faults


def test_latency_specs_and_their_distributions():
    rng = random.Random(7)
    assert Latency.parse("fixed:0.5").sample(rng) == 0.5
    u = [Latency.parse("uniform:1:2").sample(rng) for _ in range(2000)]
    assert 1.0 <= min(u) and max(u) <= 2.0
    ln = Latency.parse("lognormal:1.0:2.0")
    xs = sorted(ln.sample(rng) for _ in range(20000))
    assert xs[len(xs) // 2] == pytest.approx(1.0, rel=0.04)
    assert xs[int(len(xs) * 0.95)] == pytest.approx(2.0, rel=0.06)
    for bad in ("fixed", "uniform:2:1", "lognormal:0:1", "gamma:1:2", "fixed:x", "lognormal:2:1"):
        with pytest.raises(ConfigError):
            Latency.parse(bad)


def test_answers_are_deterministic_valid_and_mostly_calm():
    ids = {0, 3, 4}
    levels: dict[str, int] = {}
    for i in range(4000):
        d = request_digest([f"data:image/jpeg;base64,{i}"], PROMPT, seed=1)
        content = answer_content(d, PROMPT)
        assert content == answer_content(d, PROMPT)
        a = RiskAssessment.model_validate_json(content)
        assert 1 <= len(a.risk_types) <= 3 and a.description and 0.5 <= a.confidence <= 1.0
        assert set(a.danger_object_ids) <= ids
        assert bool(a.danger_object_ids) == (a.level in ("medium", "high"))
        levels[a.level] = levels.get(a.level, 0) + 1
    calm = (levels["none"] + levels["low"]) / 4000
    assert 0.65 < calm < 0.85 and levels["high"] > 100, levels
    other_seed = request_digest(["data:image/jpeg;base64,0"], PROMPT, seed=2)
    assert other_seed != request_digest(["data:image/jpeg;base64,0"], PROMPT, seed=1)


def test_pedestrian_risks_only_when_the_group_has_a_person_or_bicycle():
    rule = "Judge vehicle-pedestrian conflicts and cyclists too.\n"
    seen = {"cars": set(), "people": set()}
    for i in range(500):
        for name, objects in (("cars", "- id 1: car\n- id 2: truck"), ("people", "- id 1: car\n- id 2: person")):
            a = assessment(request_digest([str(i)], rule + objects, 1), rule + objects)
            seen[name].update(a["risk_types"])
    assert "vehicle-pedestrian conflict" not in seen["cars"] and "vehicle-pedestrian conflict" in seen["people"]


def test_malformed_answers_fail_validation_both_ways():
    kinds = set()
    for i in range(50):
        content = answer_content(request_digest([str(i)], PROMPT, 1), PROMPT, malformed=True)
        with pytest.raises(ValidationError):
            RiskAssessment.model_validate_json(content)
        kinds.add(content.startswith("{"))
    assert kinds == {True, False}  # both "not JSON" and "JSON without level"


def test_server_error_burst_with_count_fails_exactly_count_requests():
    rng = random.Random(1)
    f = Fault(kind="server_error_burst", count=2)
    first, second = decide(f, "answer", rng), decide(f, "answer", rng)
    assert first.status in (500, 502, 503) and not first.clear
    assert second.status in (500, 502, 503) and second.clear
    assert decide(f, "auth", rng) is None and decide(f, "limit", rng) is None


def test_fault_flag_parsing():
    name, f = parse_fault_flag("sim-key-02=latency_spike,extra_s=3,probability=0.25")
    assert (name, f.kind, f.extra_s, f.probability) == ("sim-key-02", "latency_spike", 3.0, 0.25)
    for bad in ("sim-key-02", "sim-key-02=explode", "sim-key-02=timeout,secs=3", "k=timeout,seconds"):
        with pytest.raises(ConfigError):
            parse_fault_flag(bad)


# ------------------------------------------------------------------------------------ config


def test_example_config_loads_and_flags_override_it(monkeypatch):
    monkeypatch.delenv("SIM_KEY_10_SECRET", raising=False)
    cfg = build_config(ROOT / "config/llm_sim.yaml")
    assert len(cfg.keys) == 10 and cfg.keys[9].api_key == "sim-secret-10" and cfg.keys[2].rpm == 200
    cfg = build_config(ROOT / "config/llm_sim.yaml", qps=2, latency="fixed:0.1", port=0,
                       faults=["sim-key-03=unauthorized"])
    assert {k.qps for k in cfg.keys} == {2} and cfg.latency == "fixed:0.1" and cfg.port == 0
    assert cfg.key("sim-key-03").fault.kind == "unauthorized"
    assert "sim-secret" not in repr(cfg)


def test_flags_alone_generate_fake_keys():
    cfg = build_config(keys=3, qps=4, rpm=100, faults=["sim-key-02=rate_limit_storm,retry_after=9"])
    assert [(k.name, k.api_key, k.qps, k.rpm) for k in cfg.keys] == [
        (f"sim-key-0{i}", f"sim-secret-0{i}", 4, 100) for i in (1, 2, 3)]
    assert cfg.keys[1].fault.retry_after == 9 and cfg.host == "127.0.0.1" and cfg.port == 8000
    with pytest.raises(ConfigError, match="sim-key-09"):
        build_config(keys=3, faults=["sim-key-09=timeout"])


def test_bad_config_is_one_line_naming_the_field(tmp_path):
    p = tmp_path / "sim.yaml"
    p.write_text("keys:\n  - {name: a, api_key: x}\n  - {name: a, api_key: y}\n")
    with pytest.raises(ConfigError, match="unique"):
        build_config(p)
    p.write_text("keys:\n  - {name: a, api_key: x, qps: 0}\n")
    with pytest.raises(ConfigError, match=r"keys\.0\.qps"):
        build_config(p)
    p.write_text("keys:\n  - {name: a, api_key: x, fault: melt}\n")
    with pytest.raises(ConfigError, match=r"keys\.0\.fault"):
        build_config(p)
    with pytest.raises(ConfigError, match="seed"):  # the answer hash takes 8 bytes of it: not a 500 per request
        build_config(seed=2**64)


# ---------------------------------------------------------------------------- real HTTP server


@pytest.mark.timeout(30)
def test_valid_answer_through_the_openai_client_is_a_risk_assessment_and_reproducible():
    with SimServer(sim_config()) as sim:
        async def go():
            client = ai(sim, "sim-secret-01")
            first, again = await ask(client), await ask(client)
            other = await ask(client, PROMPT + " frame 2")
            await client.close()
            return first, again, other

        first, again, other = asyncio.run(go())
    assert first.object == "chat.completion" and first.model == "qwen-vl-plus"
    assert first.choices[0].finish_reason == "stop" and first.choices[0].message.role == "assistant"
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens > 0
    RiskAssessment.model_validate_json(first.choices[0].message.content)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.id != again.id
    assert RiskAssessment.model_validate_json(other.choices[0].message.content)


@pytest.mark.timeout(30)
def test_burst_over_qps_gets_429_with_retry_after_and_stats_count_it():
    with SimServer(sim_config(n=1, qps=2)) as sim:
        async def go():
            async with httpx.AsyncClient(timeout=10) as c:
                return await asyncio.gather(*[
                    c.post(f"{sim.base_url}/chat/completions", json=body(),
                           headers={"Authorization": "Bearer sim-secret-01"}) for _ in range(8)])

        rs = asyncio.run(go())
        limited = [r for r in rs if r.status_code == 429]
        assert len(limited) >= 5 and all(r.status_code in (200, 429) for r in rs)
        for r in limited:
            assert int(r.headers["Retry-After"]) == 1
            assert 1 <= int(r.headers["retry-after-ms"]) <= 500
            assert r.json()["error"]["code"] == "Throttling.RateQuota"  # the default DashScope style
        with pytest.raises(openai.RateLimitError):  # what the scheduler sees
            asyncio.run(ask(ai(sim, "sim-secret-01")))
        s = sim.stats()["keys"]["sim-key-01"]
        assert s["rate_limited_429"] == len(limited) + 1 and s["ok"] == 8 - len(limited)
        assert s["requests"] == 9 and s["max_in_any_1s_window"] == 9


@pytest.mark.timeout(30)
def test_rpm_limit_gets_429_with_retry_after_near_a_minute():
    with SimServer(sim_config(n=1, qps=100, rpm=3, limiter="sliding-window")) as sim:
        assert [post(sim, "sim-secret-01").status_code for _ in range(3)] == [200] * 3
        r = post(sim, "sim-secret-01")
        assert r.status_code == 429 and 58 <= int(r.headers["Retry-After"]) <= 60
        assert r.headers["x-llm-sim-reason"] == "rate key sim-key-01 rpm 3"


@pytest.mark.timeout(30)
def test_client_spaced_at_one_over_qps_gets_no_429_but_twice_as_fast_does():
    qps, n = 4.0, 12

    async def paced(sim, key: str, interval: float) -> list[int]:
        async with httpx.AsyncClient(timeout=10) as c:
            loop = asyncio.get_running_loop()
            t0 = loop.time()

            async def one(i: int) -> int:
                await asyncio.sleep(max(0.0, t0 + i * interval - loop.time()))
                r = await c.post(f"{sim.base_url}/chat/completions", json=body(f"{PROMPT} {i}"),
                                 headers={"Authorization": f"Bearer {key}"})
                return r.status_code

            return await asyncio.gather(*[one(i) for i in range(n)])

    with SimServer(sim_config(n=2, qps=qps)) as sim:
        assert asyncio.run(paced(sim, "sim-secret-01", 1 / qps)) == [200] * n
        assert 429 in asyncio.run(paced(sim, "sim-secret-02", 0.5 / qps))
        assert sim.stats()["keys"]["sim-key-01"]["rate_limited_429"] == 0


@pytest.mark.timeout(30)
def test_unknown_key_gets_401_and_the_key_is_never_echoed():
    with SimServer(sim_config()) as sim:
        secret = "sk-not-a-real-key-1234567890"
        r = post(sim, secret)
        assert r.status_code == 401 and secret not in r.text and "1234567890" not in r.text
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert post(sim, None).status_code == 401
        with pytest.raises(openai.AuthenticationError) as e:
            asyncio.run(ask(ai(sim, secret)))
        assert secret not in str(e.value)
        totals = sim.stats()["totals"]
        assert totals["unknown_key_requests"] == 3 and totals["unauthorized_401"] == 3


@pytest.fixture(scope="module")
def faulty():
    """One simulator for the fault tests; each test uses its own key and sets its fault over HTTP."""
    with SimServer(sim_config(n=8, qps=50)) as sim:
        yield sim


def set_fault(sim, key: str, fault: str | None, **params) -> httpx.Response:
    r = admin(sim, "/faults", {"key": key, "fault": fault, **params})
    assert r.status_code == 200, r.text
    return r


@pytest.mark.timeout(30)
def test_fault_unauthorized_and_requests_after_first_401(faulty):
    set_fault(faulty, "sim-key-01", "unauthorized")
    rs = [post(faulty, "sim-secret-01") for _ in range(3)]
    assert [r.status_code for r in rs] == [401] * 3 and all("sim-secret-01" not in r.text for r in rs)
    s = faulty.stats()["keys"]["sim-key-01"]
    assert s["unauthorized_401"] == 3 and s["requests_after_first_401"] == 2
    set_fault(faulty, "sim-key-01", None)
    assert post(faulty, "sim-secret-01").status_code == 200  # switched back at run time


@pytest.mark.timeout(30)
def test_fault_rate_limit_storm_announces_retry_after_and_spends_no_tokens(faulty):
    set_fault(faulty, "sim-key-02", "rate_limit_storm", retry_after=7)
    for _ in range(100):  # twice what the bucket holds
        r = post(faulty, "sim-secret-02")
        assert r.status_code == 429 and r.headers["Retry-After"] == "7" and r.headers["retry-after-ms"] == "7000"
    with pytest.raises(openai.RateLimitError):
        asyncio.run(ask(ai(faulty, "sim-secret-02")))
    set_fault(faulty, "sim-key-02", None)

    async def burst() -> list[int]:  # had the storm spent tokens, the bucket (50) would be nearly empty
        async with httpx.AsyncClient(timeout=10) as c:
            rs = await asyncio.gather(*[c.post(f"{faulty.base_url}/chat/completions", json=body(),
                                               headers={"Authorization": "Bearer sim-secret-02"}) for _ in range(45)])
            return [r.status_code for r in rs]

    assert burst_codes(asyncio.run(burst())) == {200: 45}


def burst_codes(codes: list[int]) -> dict[int, int]:
    return {c: codes.count(c) for c in set(codes)}


@pytest.mark.timeout(30)
def test_fault_server_error_burst_by_count_then_by_probability(faulty):
    set_fault(faulty, "sim-key-03", "server_error_burst", count=2)
    codes = [post(faulty, "sim-secret-03").status_code for _ in range(3)]
    assert codes[0] in (500, 502, 503) and codes[1] in (500, 502, 503) and codes[2] == 200
    set_fault(faulty, "sim-key-03", "server_error_burst", probability=1.0)
    with pytest.raises(openai.InternalServerError):
        asyncio.run(ask(ai(faulty, "sim-secret-03")))
    assert faulty.stats()["keys"]["sim-key-03"]["server_errors_5xx"] == 3
    set_fault(faulty, "sim-key-03", None)


@pytest.mark.timeout(30)
def test_fault_timeout_makes_the_client_time_out(faulty):
    set_fault(faulty, "sim-key-04", "timeout", seconds=5)
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        asyncio.run(ask(ai(faulty, "sim-secret-04", timeout=0.5)))
    assert time.monotonic() - t0 < 3
    assert faulty.stats()["keys"]["sim-key-04"]["timeouts"] == 1
    set_fault(faulty, "sim-key-04", None)


@pytest.mark.timeout(30)
def test_fault_malformed_content_fails_validation(faulty):
    set_fault(faulty, "sim-key-05", "malformed")
    for i in range(4):
        r = asyncio.run(ask(ai(faulty, "sim-secret-05"), f"{PROMPT} {i}"))
        with pytest.raises(ValidationError):
            RiskAssessment.model_validate_json(r.choices[0].message.content)
    s = faulty.stats()["keys"]["sim-key-05"]
    assert s["malformed"] == 4 and s["ok"] == 0
    set_fault(faulty, "sim-key-05", "malformed", probability=0.0)
    r = asyncio.run(ask(ai(faulty, "sim-secret-05")))
    RiskAssessment.model_validate_json(r.choices[0].message.content)


@pytest.mark.timeout(30)
def test_fault_latency_spike_adds_latency(faulty):
    t0 = time.monotonic()
    assert post(faulty, "sim-secret-06").status_code == 200
    base = time.monotonic() - t0
    set_fault(faulty, "sim-key-06", "latency_spike", extra_s=0.6)
    t0 = time.monotonic()
    assert post(faulty, "sim-secret-06").status_code == 200
    assert time.monotonic() - t0 >= 0.6 > base
    assert faulty.stats()["keys"]["sim-key-06"]["latency_spikes"] == 1


@pytest.mark.timeout(30)
def test_faults_endpoint_rejects_unknown_keys_faults_and_params(faulty):
    assert admin(faulty, "/faults", {"key": "nope", "fault": "timeout"}).status_code == 404
    assert admin(faulty, "/faults", {"key": "sim-key-07", "fault": "explode"}).status_code == 400
    assert admin(faulty, "/faults", {"key": "sim-key-07", "fault": "timeout", "secs": 1}).status_code == 400
    assert admin(faulty, "/faults", {"fault": "timeout"}).status_code == 400
    r = set_fault(faulty, "*", "unauthorized")
    assert r.json()["fault"]["kind"] == "unauthorized"
    assert post(faulty, "sim-secret-07").status_code == 401 and post(faulty, "sim-secret-08").status_code == 401
    set_fault(faulty, "*", None)
    assert post(faulty, "sim-secret-08").status_code == 200
    assert admin(faulty, "/healthz").json()["status"] == "ok"


@pytest.mark.timeout(30)
def test_bad_requests_get_400_and_large_bodies_413():
    with SimServer(sim_config(max_body_bytes=4096)) as sim:
        key = "sim-secret-01"
        no_messages = {"model": "m"}
        no_image = body(image=None)
        for bad in (no_messages, no_image, {"model": "m", "messages": []}, [1, 2], {**body(image="data:,x"), "stream": True}):
            r = post(sim, key, json=bad)
            assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", bad
        r = httpx.post(f"{sim.base_url}/chat/completions", content=b"{not json",
                       headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 400
        with pytest.raises(openai.BadRequestError):
            asyncio.run(ai(sim, key).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]))
        big = body(image="data:image/jpeg;base64," + "A" * 8000)
        r = post(sim, key, json=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

        def chunks():  # no Content-Length: caught while reading
            yield b'{"messages": "' + b"A" * 8000 + b'"}'

        r = httpx.post(f"{sim.base_url}/chat/completions", content=chunks(),
                       headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 413
        s = sim.stats()["keys"]["sim-key-01"]
        assert s["bad_requests_400"] == 7 and s["too_large_413"] == 2 and s["ok"] == 0


@pytest.mark.timeout(30)
def test_stats_count_per_key_and_totals_and_reset():
    with SimServer(sim_config(n=2, qps=2)) as sim:
        sim.set_fault("sim-key-02", "unauthorized")
        for _ in range(3):
            post(sim, "sim-secret-01")
        post(sim, "sim-secret-02")
        post(sim, "sim-secret-01", json={"model": "m"})
        post(sim, "wrong")
        st = admin(sim, "/stats").json()
        k1, k2, tot = st["keys"]["sim-key-01"], st["keys"]["sim-key-02"], st["totals"]
        assert (k1["requests"], k1["ok"], k1["rate_limited_429"], k1["bad_requests_400"]) == (4, 2, 1, 1)
        assert (k2["requests"], k2["unauthorized_401"]) == (1, 1)
        # the busiest second counts requests that reached the limiter (not the 401s and the 400)
        assert tot["requests"] == 6 and tot["unauthorized_401"] == 2 and tot["max_in_any_1s_window"] == 3
        assert k1["first_request_ts"] <= k1["last_request_ts"] <= time.time()
        assert st["faults"] == {"sim-key-02": {"kind": "unauthorized", "retry_after": 5.0, "seconds": 60.0,
                                               "extra_s": 5.0}}
        assert admin(sim, "/reset-stats", {}).json() == {"reset": True}
        st = sim.stats()
        assert st["totals"]["requests"] == 0 and st["keys"]["sim-key-01"]["first_request_ts"] is None
        with pytest.raises(UnknownKey):
            sim.set_fault("nope", "timeout")


# ------------------------------------------------------------------------------ as a process


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_base_url_serves_and_exits_0_on_signal(sig):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hazardctl.cli", "llm-sim", "--port", "0", "--keys", "2", "--latency", "fixed:0.01",
         "--fault", "sim-key-02=unauthorized"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")

        class At:
            base_url = url

        assert post(At, "sim-secret-01").status_code == 200
        assert post(At, "sim-secret-02").status_code == 401
        proc.send_signal(sig)
        assert proc.wait(15) == 0
        err = proc.stderr.read()
        assert "Traceback" not in err and "sim-secret" not in err
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.timeout(60)
def test_sim_process_has_the_same_controls_over_http():
    with start_sim_process(sim_config(n=2, qps=50)) as sim:
        assert post(sim, "sim-secret-01").status_code == 200
        sim.set_fault("sim-key-01", "server_error_burst", count=1)
        assert post(sim, "sim-secret-01").status_code in (500, 502, 503)
        assert sim.stats()["keys"]["sim-key-01"]["server_errors_5xx"] == 1
        with pytest.raises(UnknownKey):
            sim.set_fault("nope", "timeout")
        with pytest.raises(ConfigError, match="explode"):
            sim.set_fault("sim-key-01", "explode")
        sim.reset_stats()
        assert sim.stats()["totals"]["requests"] == 0
        assert sim.stop() == 0


@pytest.mark.timeout(60)
def test_sim_process_exits_when_its_parent_goes_away():
    sim = start_sim_process(sim_config(n=1))
    sim.proc.stdin.close()  # what the OS does when the parent dies
    assert sim.proc.wait(15) == 0
    sim.stop()


def test_answers_to_the_schedulers_real_prompt_name_only_members_of_the_group():
    """The project's own prompt (hazardctl.prompt) for synthetic tasks, parsed as the server parses it."""
    from hazardctl import prompt, synthetic
    from tools.llm_sim.app import parse_chat
    from hazardctl.messages import AssessmentTask, task_id_for

    levels = set()
    for f in range(60):
        det = synthetic.detection("cam-01", f, 1000.0 + f, groups=3, crop_bytes=500)
        by_id = {o.object_id: o for o in det.objects}
        for g in det.groups:
            task = AssessmentTask(
                task_id=task_id_for(det.message_id, g.group_id), detection_id=det.message_id, camera_id="cam-01",
                frame_id=f, frame_ts=det.frame_ts, frame_width=det.frame_width, frame_height=det.frame_height,
                group=g, objects=[by_id[m] for m in g.member_ids], reason="new", deadline=det.frame_ts + 10)
            chat = parse_chat({"messages": prompt.chat_messages(task)})
            images, text = chat.images, chat.prompt
            a = RiskAssessment.model_validate_json(answer_content(request_digest(images, text, 1), text))
            assert set(a.danger_object_ids) <= set(g.member_ids)
            levels.add(a.level)
    assert levels == {"none", "low", "medium", "high"}
