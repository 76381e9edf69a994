"""The simulator as a strict provider, over real loopback HTTP: limiter models, accounts, tokens and usage,
surge, jitter, DashScope/OpenAI refusals with and without Retry-After, billing, GET /requests, and the
`hazardctl llm-sim` command with its Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import base64
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tools.llm_sim import SimConfig, SimKey, SimServer, build_config
from tools.llm_sim.config import SimAccount

ROOT = Path(__file__).resolve().parent.parent
JPEG = (ROOT / "tests/data/bus.jpg").read_bytes()  # 810 × 1080
IMAGE = "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()
BUS_PATCHES = math.ceil(810 / 28) * math.ceil(1080 / 28)  # 29 × 39
PROMPT = "Assess this group: object_id 3 car, object_id 4 bus. Answer one JSON object."


def body(text: str = PROMPT, **extra) -> dict:
    return {"model": "qwen-vl-plus", **extra, "messages": [
        {"role": "system", "content": "You are a traffic safety assessor."},
        {"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": IMAGE}}]}]}


def keys(n: int, **kw) -> list[SimKey]:
    return [SimKey(name=f"k{i}", api_key=f"secret-{i}", **kw) for i in range(1, n + 1)]


def cfg(sim_keys: list[SimKey], **kw) -> SimConfig:
    return SimConfig(keys=sim_keys, latency="fixed:0.01", port=0, **kw)


async def burst(sim, secrets: list[str], **json) -> list[httpx.Response]:
    """All at once, one request per secret."""
    async with httpx.AsyncClient(timeout=10) as c:
        return await asyncio.gather(*[c.post(f"{sim.base_url}/chat/completions", json=body(**json),
                                             headers={"Authorization": f"Bearer {s}"}) for s in secrets])


def post(sim, secret: str, **json) -> httpx.Response:
    return httpx.post(f"{sim.base_url}/chat/completions", json=body(**json),
                      headers={"Authorization": f"Bearer {secret}"}, timeout=10)


def codes(rs: list[httpx.Response]) -> list[int]:
    return sorted(r.status_code for r in rs)


# ------------------------------------------------------------------------------- limiter models


def test_sliding_window_over_http_admits_the_limit_then_exactly_when_the_first_leaves():
    with SimServer(cfg(keys(1, qps=3), limiter="sliding-window")) as sim:
        first = asyncio.run(burst(sim, ["secret-1"] * 3))
        assert codes(first) == [200] * 3
        r = post(sim, "secret-1")
        assert r.status_code == 429 and r.json()["error"]["code"] == "Throttling.RateQuota"
        assert r.headers["x-llm-sim-reason"] == "rate key k1 qps 3"
        wait_ms = int(r.headers["retry-after-ms"])
        assert 0 < wait_ms <= 1000 and r.headers["Retry-After"] == "1"
        time.sleep(wait_ms / 1000 + 0.02)
        assert post(sim, "secret-1").status_code == 200
        k = sim.stats()["keys"]["k1"]
        assert (k["admitted"], k["refused_rate"], k["rate_limited_429"]) == (4, 1, 1)
        assert k["max_admitted_in_any_1s_window"] == 3 and k["max_in_any_1s_window"] == 4


def test_fixed_window_over_http_refuses_until_the_next_wall_clock_second():
    """Two admitted, the third of the same wall-clock second refused until the next one starts.

    On a starved machine the three may straddle a second: then (seen in GET /requests) try again.
    """
    with SimServer(cfg(keys(1, qps=2), limiter="fixed-window")) as sim:
        for _ in range(3):
            sim.reset_stats()
            time.sleep(1.0 - time.time() % 1.0 + 0.01)  # just after a second starts
            rs = asyncio.run(burst(sim, ["secret-1"] * 2)) + [post(sim, "secret-1")]
            seconds = {math.floor(r["ts_limiter"]) for r in sim.requests()}
            if len(seconds) == 1:
                break
        assert len(seconds) == 1, "three requests never fell in one second"
        assert [r.status_code for r in rs] == [200, 200, 429]
        to_boundary = math.floor(seconds.pop()) + 1 - time.time()
        assert abs(int(rs[2].headers["retry-after-ms"]) / 1000 - to_boundary) < 0.15
        time.sleep(max(0.0, to_boundary) + 0.01)
        assert post(sim, "secret-1").status_code == 200


def test_token_bucket_is_still_the_default_and_refills_at_qps():
    with SimServer(cfg(keys(1, qps=2))) as sim:
        assert sim.stats()["limiter"] == "token-bucket"
        assert codes(asyncio.run(burst(sim, ["secret-1"] * 3))) == [200, 200, 429]
        time.sleep(0.51)  # one token back
        assert post(sim, "secret-1").status_code == 200


def test_an_account_limit_is_shared_by_its_keys_over_http():
    sim_keys = keys(3, qps=5, account="acct-a")
    with SimServer(cfg(sim_keys, accounts={"acct-a": SimAccount(qps=4)}, limiter="sliding-window")) as sim:
        rs = asyncio.run(burst(sim, ["secret-1", "secret-2", "secret-3"] * 2))
        assert codes(rs) == [200] * 4 + [429] * 2
        assert all(r.headers["x-llm-sim-reason"] == "rate account acct-a qps 4" for r in rs if r.status_code == 429)
        st = sim.stats()
        a = st["accounts"]["acct-a"]
        assert (a["requests"], a["admitted"], a["refused_rate"], a["max_admitted_in_any_1s_window"]) == (6, 4, 2, 4)
        assert sorted(a["keys"]) == ["k1", "k2", "k3"]
        assert sum(k["refused_at_account"] for k in st["keys"].values()) == 2
        assert all(k["account"] == "acct-a" for k in st["keys"].values())


# ------------------------------------------------------------------------------ tokens, usage


def test_usage_counts_image_patches_text_and_completion_and_tpm_refuses_with_allocation_quota():
    system = "You are a traffic safety assessor."
    prompt_tokens = BUS_PATCHES + math.ceil(len(system + "\n" + PROMPT) / 4)
    with SimServer(cfg(keys(1, qps=50, tpm=3 * prompt_tokens), limiter="sliding-window")) as sim:
        async def ask():
            client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="secret-1", max_retries=0, timeout=10)
            return await client.chat.completions.create(model="qwen-vl-plus", messages=body()["messages"])

        answer = asyncio.run(ask())
        u = answer.usage
        assert u.prompt_tokens == prompt_tokens
        assert u.completion_tokens == math.ceil(len(answer.choices[0].message.content) / 4)
        assert u.total_tokens == u.prompt_tokens + u.completion_tokens
        assert post(sim, "secret-1").status_code == 200  # 2 × total < 3 × prompt tokens
        r = post(sim, "secret-1")
        assert r.status_code == 429 and r.json()["error"] == {
            "message": "Allocated quota exceeded, please increase your quota limit.",
            "type": "Throttling.AllocationQuota", "param": None, "code": "Throttling.AllocationQuota"}
        assert 55 < int(r.headers["retry-after-ms"]) / 1000 <= 60
        k = sim.stats()["keys"]["k1"]
        assert (k["refused_tokens"], k["tokens_admitted"]) == (1, 2 * u.total_tokens)


# ------------------------------------------------------------------------ surge, retry-after, styles


def test_surge_refuses_a_burst_from_idle_with_burst_rate_and_no_retry_after_when_off():
    with SimServer(cfg(keys(1, qps=10), surge=True, retry_after=False)) as sim:
        rs = asyncio.run(burst(sim, ["secret-1"] * 10))
        assert codes(rs) == [200] * 5 + [429] * 5
        for r in (r for r in rs if r.status_code == 429):
            assert r.json()["error"]["code"] == "Throttling.BurstRate"
            assert r.json()["error"]["message"] == "Request rate increased too quickly, please reduce your request rate."
            assert "Retry-After" not in r.headers and "retry-after-ms" not in r.headers and r.json()["request_id"]
        assert sim.stats()["keys"]["k1"]["refused_surge"] == 5


def test_openai_style_refusals_and_a_storm_without_retry_after():
    sim_keys = keys(1, qps=1) + [SimKey(name="k2", api_key="secret-2", fault="rate_limit_storm")]
    with SimServer(cfg(sim_keys, errors="openai", retry_after=False)) as sim:
        assert post(sim, "secret-1").status_code == 200
        r = post(sim, "secret-1")
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
        assert r.json()["error"]["type"] == "requests" and "Retry-After" not in r.headers
        r = post(sim, "secret-2")
        assert r.status_code == 429 and "Retry-After" not in r.headers
        assert sim.stats()["keys"]["k2"]["refused_storm"] == 1


def test_billing_fault_per_key_in_both_styles_at_start_and_at_run_time():
    c = build_config(keys=2, qps=50, latency="fixed:0.01", port=0, faults=["sim-key-01=billing"])
    with SimServer(c) as sim:
        r = httpx.post(f"{sim.base_url}/chat/completions", json=body(),
                       headers={"Authorization": "Bearer sim-secret-01"}, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["code"] == "Arrearage"
        assert r.json()["error"]["message"] == "Access denied, please make sure your account is in good standing."
        assert "Retry-After" not in r.headers
        assert sim.stats()["faults"] == {"sim-key-01": {"kind": "billing"}}
        sim.set_fault("sim-key-01", None)
        assert post(sim, "sim-secret-01").status_code == 200
    with SimServer(cfg(keys(1, qps=50), errors="openai")) as sim:
        httpx.post(sim.base_url.removesuffix("/v1") + "/faults", json={"key": "k1", "fault": "billing"}, timeout=10)
        r = post(sim, "secret-1")
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
        assert sim.stats()["keys"]["k1"]["refused_billing"] == 1


# ------------------------------------------------------------------------- jitter and /requests


def test_requests_log_shows_what_the_server_received_and_jitter_delays_arrival():
    with SimServer(cfg(keys(2, qps=1), jitter_ms=40)) as sim:
        fmt = {"type": "json_object"}
        t0, m0 = time.time(), time.monotonic()
        assert post(sim, "secret-1", response_format=fmt, max_tokens=300).status_code == 200
        took = time.monotonic() - m0
        assert post(sim, "secret-1").status_code == 429
        post(sim, "secret-2", text="x" * 900)
        httpx.post(f"{sim.base_url}/chat/completions", json=body(), headers={"Authorization": "Bearer nope"})
        rows = httpx.get(sim.base_url.removesuffix("/v1") + "/requests", timeout=10).json()["requests"]
        assert [(r["key"], r["status"], r["admitted"]) for r in rows] == [
            ("k1", 200, True), ("k1", 429, False), ("k2", 200, True), (None, 401, False)]
        first, refused, long_prompt = rows[0], rows[1], rows[2]
        assert first["model"] == "qwen-vl-plus" and first["response_format"] == fmt and first["max_tokens"] == 300
        assert first["texts"][0] == {"role": "system", "text": "You are a traffic safety assessor."}
        assert first["prompt"].endswith(PROMPT) and first["images"] == [[810, 1080]]
        assert first["total_tokens"] == first["prompt_tokens"] + first["completion_tokens"]
        assert t0 <= first["ts"] <= first["ts_limiter"] and 0 <= first["jitter_ms"] <= 40
        assert took >= first["jitter_ms"] / 1000 + 0.01  # the jitter was waited, then the 10 ms latency
        assert refused["reason"] == "rate key k1 qps 1" and refused["account"] is None
        assert len(long_prompt["prompt"]) == 500 and long_prompt["response_format"] is None
        assert any(r["jitter_ms"] > 0 for r in rows)
        assert [r["key"] for r in sim.requests(limit=1, key="k1")] == ["k1"] and len(sim.requests(key="k2")) == 1
        base = sim.base_url.removesuffix("/v1")
        assert len(httpx.get(base + "/requests?limit=2", timeout=10).json()["requests"]) == 2
        assert [httpx.get(f"{base}/requests?limit={v}", timeout=10).status_code for v in ("-1", "x")] == [400, 400]


# ------------------------------------------------------------------------------------ the command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_llm_sim_command_with_accounts_limiter_and_metrics():
    mport = free_port()
    cmd = [sys.executable, "-m", "hazardctl.cli", "llm-sim", "--port", "0", "--keys", "4", "--qps", "5",
           "--keys-per-account", "2", "--account-qps", "3", "--limiter", "sliding-window", "--retry-after", "off",
           "--latency", "fixed:0.01", "--metrics-port", str(mport)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read()
        sim = type("S", (), {"base_url": url})
        rs = asyncio.run(burst(sim, ["sim-secret-01", "sim-secret-02"] * 2 + ["sim-secret-03"]))
        assert codes(rs) == [200] * 4 + [429]
        assert all("Retry-After" not in r.headers for r in rs)
        text = httpx.get(f"http://127.0.0.1:{mport}/metrics", timeout=10).text
        assert 'hazardctl_llm_sim_refused_total{name="acct-01",reason="rate",scope="account",stage="llm-sim"} 1.0' in text
        assert 'hazardctl_llm_sim_admitted_total{name="acct-02",scope="account",stage="llm-sim"} 1.0' in text
        assert "sim-secret" not in text
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    bad = subprocess.run([sys.executable, "-m", "hazardctl.cli", "llm-sim", "--port", "0", "--limiter", "leaky"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bad.returncode != 0 and "limiter" in bad.stderr and "Traceback" not in bad.stderr
