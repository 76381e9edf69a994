"""How one call ends when the provider refuses it, against the real simulated provider on loopback
(tools.llm_sim: DashScope- and OpenAI-style bodies): each 429 class and billing gets its own outcome,
with and without Retry-After; the usage of an answer comes back to correct the token estimate; the
provider's message is never kept."""

from __future__ import annotations

import asyncio

import pytest

from hazardctl.keypool import Outcome
from hazardctl.keys import LLMKey
from hazardctl.llm_client import call_llm, estimate_tokens, open_clients
from tests.test_schedule_stage import tasks
from tools.llm_sim import SimConfig, SimKey, SimServer


def calls(sim: SimServer, n: int, gap: float = 0.0, task=None) -> list:
    """n calls with key k0, one after the other (`gap` seconds apart)."""
    key = LLMKey(name="k0", api_key="secret-0", qps_limit=100, base_url=sim.base_url, timeout=5.0)
    task = task or tasks(1)[0]

    async def main():
        client = open_clients([key])["k0"]
        out = []
        for _ in range(n):
            out.append(await call_llm(client, key, task, 5.0))
            await asyncio.sleep(gap)
        await client.close()
        return out

    return asyncio.run(main())


def sim(errors: str = "dashscope", retry_after: bool = True, surge: bool = False, **key) -> SimServer:
    return SimServer(SimConfig(keys=[SimKey(name="k0", api_key="secret-0", **key)], latency="fixed:0.01", port=0,
                               errors=errors, retry_after=retry_after, surge=surge))


@pytest.mark.parametrize("errors", ["dashscope", "openai"])
def test_request_rate_429_with_and_without_retry_after(errors):
    with sim(errors, qps=1) as s:
        ok, limited = calls(s, 2)
    assert ok.outcome is Outcome.OK and limited.outcome is Outcome.RATE_LIMITED
    assert limited.retry_after is not None and 0 < limited.retry_after <= 1.0
    with sim(errors, retry_after=False, qps=1) as s:
        _, limited = calls(s, 2)
    assert limited.outcome is Outcome.RATE_LIMITED and limited.retry_after is None


@pytest.mark.parametrize("errors", ["dashscope", "openai"])
def test_token_quota_429_is_its_own_class(errors):
    with sim(errors, qps=100, tpm=2000) as s:
        out = calls(s, 3)
    assert out[0].outcome is Outcome.OK
    assert Outcome.RATE_LIMITED_TOKENS in {c.outcome for c in out[1:]}


def test_surge_429_is_its_own_class():
    with sim(qps=10, surge=True) as s:  # from idle: half the limit in the first second
        out = calls(s, 7)
    assert [c.outcome for c in out[:5]] == [Outcome.OK] * 5 and out[5].outcome is Outcome.SURGE


@pytest.mark.parametrize("errors,status", [("dashscope", "HTTP 400 Arrearage"), ("openai", "HTTP 429 insufficient_quota")])
def test_billing_is_insufficient_quota_whatever_the_status(errors, status):
    with sim(errors, billing=True) as s:
        (c,) = calls(s, 1)
    assert c.outcome is Outcome.INSUFFICIENT_QUOTA
    assert c.error == status  # our words: the status and the code, never the provider's message


def real_crop_task():
    """A task whose crop is a real JPEG (the provider reads its size from the JPEG header)."""
    import base64
    import io
    from pathlib import Path

    from PIL import Image

    img = Image.open(Path(__file__).parent / "data" / "bus.jpg")
    img.thumbnail((400, 400))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=80)
    task = tasks(1)[0]
    group = task.group.model_copy(update={"crop_jpeg_b64": base64.b64encode(buf.getvalue()).decode(),
                                          "crop_size": img.size})
    return task.model_copy(update={"group": group})


def test_usage_comes_back_and_the_estimate_covers_it():
    """The estimate (patches + text + max_tokens) is at least what the provider counts, and not far
    above it: the pool charges it at send and refunds the difference when `usage` comes back."""
    task = real_crop_task()
    with sim(qps=100) as s:
        (c,) = calls(s, 1, task=task)
        counted = s.stats()["totals"]["tokens_admitted"]
    assert c.outcome is Outcome.OK and c.usage == counted
    estimate = estimate_tokens(task, max_tokens=400)
    assert counted <= estimate <= counted + 400
