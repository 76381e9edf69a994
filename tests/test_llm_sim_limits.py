"""The simulator's provider rules as pure logic with a fake clock: limiter models, accounts, surge, tokens, refusals.

Every limiter is checked at its exact boundary (admits the limit, refuses the next, admits again
at the exact instant it should), and the sliding window against a brute-force check of every
1 s window over random arrivals.
"""

from __future__ import annotations

import base64
import math
import random
import struct
from pathlib import Path

import cv2
import pytest

from tools.llm_sim.limits import (
    FixedWindow, Limits, ScopeLimit, SlidingWindow, SurgeGuard, TokenBucket, admit, make_limiter,
)
from tools.llm_sim.refusals import refusal
from tools.llm_sim.tokens import UNKNOWN_IMAGE_TOKENS, image_size, image_tokens, jpeg_size, text_tokens

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("token-bucket", "sliding-window", "fixed-window")


def admitted(lim, t: float, cost: float = 1.0) -> bool:
    if lim.wait(t, cost) == 0.0:
        lim.take(t, cost)
        return True
    return False


# --------------------------------------------------------------------------- the three models


def test_token_bucket_admits_capacity_at_once_then_one_per_refill_interval():
    b = make_limiter("token-bucket", 5, 1.0, now=100.0)
    assert [admitted(b, 100.0) for _ in range(6)] == [True] * 5 + [False]
    assert b.wait(100.0) == pytest.approx(0.2)
    assert not admitted(b, 100.2 - 1e-6)
    assert admitted(b, 100.2) and not admitted(b, 100.2)


def test_sliding_window_admits_the_limit_in_any_second_and_refuses_the_next_at_the_exact_boundary():
    w = make_limiter("sliding-window", 5, 1.0, now=0.0)
    assert all(admitted(w, t) for t in (0.0, 0.1, 0.2, 0.3, 0.4))
    assert w.wait(0.999) == pytest.approx(0.001)  # (−0.001, 0.999] still holds all five
    assert not admitted(w, 0.999)
    assert admitted(w, 1.0)  # the request of t=0 left the window (0, 1.0]
    assert w.wait(1.05) == pytest.approx(0.05)  # next frees at 1.1 (t=0.1 leaves)
    assert not admitted(w, 1.0999) and admitted(w, 1.1)


def test_sliding_window_is_exact_over_random_arrivals():
    """No window (t−1, t] ever holds more than the limit, and every refusal was forced (the window was full)."""
    rng = random.Random(3)
    w = SlidingWindow(5, 1.0)
    times = sorted(rng.uniform(0, 30) for _ in range(600))  # ~20/s offered against 5/s
    ok, refused = [], []
    for t in times:
        (ok if admitted(w, t) else refused).append(t)
    assert len(ok) >= 5 * 29
    for t in ok:
        assert sum(1 for u in ok if t - 1.0 < u <= t) <= 5
    for t in refused:
        assert sum(1 for u in ok if t - 1.0 < u <= t) == 5


def test_fixed_window_counts_per_wall_clock_second_and_allows_the_boundary_burst():
    f = make_limiter("fixed-window", 5, 1.0, now=10.0)
    assert all(admitted(f, t) for t in (10.9, 10.92, 10.94, 10.96, 10.98))
    assert f.wait(10.99) == pytest.approx(0.01)  # until the next second starts
    assert not admitted(f, 10.9999)
    assert all(admitted(f, 11.0) for _ in range(5))  # 10 in (10.9, 11.0]: what a fixed window allows
    assert not admitted(f, 11.5)


@pytest.mark.parametrize("model", MODELS)
def test_every_model_holds_a_client_paced_exactly_at_the_limit(model):
    lim = make_limiter(model, 5, 1.0, now=0.0)
    t = 0.0
    for _ in range(500):
        assert admitted(lim, t)
        t += 0.2  # accumulates float error on purpose


@pytest.mark.parametrize("model", MODELS)
def test_per_minute_limits_in_every_model(model):
    lim = make_limiter(model, 3, 60.0, now=0.0)
    assert [admitted(lim, t) for t in (0.0, 1.0, 2.0, 3.0)] == [True, True, True, False]
    # windows: the t=0 admission leaves (or the minute ends) at 60; bucket: 3 per 60 s refills 0.05/s,
    # 0.15 earned by t=3, so the missing 0.85 takes 17 s
    expect = 17.0 if model == "token-bucket" else 57.0
    assert lim.wait(3.0) == pytest.approx(expect)


@pytest.mark.parametrize("model", MODELS)
def test_token_limits_count_the_cost_and_a_request_larger_than_the_limit_never_fits(model):
    lim = make_limiter(model, 1000, 1.0, now=0.0)
    assert admitted(lim, 0.0, 600) and not admitted(lim, 0.0, 600) and admitted(lim, 0.0, 400)
    assert math.isinf(lim.wait(5.0, 1001))


def test_sliding_window_tolerance_lets_a_request_in_that_much_early_and_no_earlier():
    """(The token bucket's tolerance is tested in test_llm_sim.py; the fixed window has none.)"""
    def full() -> SlidingWindow:
        w = SlidingWindow(2, 1.0, tolerance_s=0.01)
        w.take(0.0), w.take(0.5)
        return w

    assert full().wait(0.995) == 0.0  # the t=0 admission counts as gone 10 ms early
    assert full().wait(0.985) == pytest.approx(0.005)  # 15 ms early: refused until 0.99


# ----------------------------------------------------------------------------- keys, accounts


def scope(scope: str, name: str, model: str = "sliding-window", surge=None, **limits) -> ScopeLimit:
    return ScopeLimit(scope, name, Limits(**limits), model, 0.0, surge)  # type: ignore[arg-type]


def test_an_account_limit_is_shared_by_its_keys_and_a_refusal_consumes_nothing_anywhere():
    acct = scope("account", "acct-a", qps=6)
    k1, k2 = scope("key", "k1", qps=5), scope("key", "k2", qps=5)
    got = [admit([k, acct], 0.0, 1) for k in (k1, k2, k1, k2, k1, k2)]
    assert got == [None] * 6
    r = admit([k1, acct], 0.0, 1)
    assert (r.reason, r.scope, r.name, r.limit) == ("rate", "account", "acct-a", "qps 6")
    r = admit([k1, acct], 0.5, 1)
    assert r.scope == "account"  # still full: the refusals above took nothing
    assert len(k1.requests[0][1].log) == 3  # the key counted only its 3 admitted requests
    for _ in range(2):
        assert admit([k1, acct], 0.0, 1).scope == "account"
    k3 = scope("key", "k3", qps=2)
    assert [admit([k3], 0.0, 1) is None for _ in range(3)] == [True, True, False]  # a key's own limit


def test_request_limits_refuse_before_token_limits_and_each_says_which():
    s = scope("key", "k", qps=2, tpm=3000)
    assert admit([s], 0.0, 1500) is None and admit([s], 0.1, 1500) is None
    r = admit([s], 0.2, 10)
    assert (r.reason, r.limit) == ("rate", "qps 2")
    r = admit([s], 1.5, 10)
    assert (r.reason, r.limit, r.wait_s) == ("tokens", "tpm 3000", pytest.approx(58.5))


def test_tps_and_rpm_are_limits_of_their_own():
    s = scope("key", "k", model="fixed-window", qps=100, rpm=2, tps=100)
    assert admit([s], 0.0, 60) is None
    assert admit([s], 0.1, 60).reason == "tokens"  # 120 > tps 100 in this second
    assert admit([s], 1.0, 60) is None
    r = admit([s], 2.0, 1)
    assert (r.reason, r.limit, r.wait_s) == ("rate", "rpm 2", pytest.approx(58.0))


# ----------------------------------------------------------------------------------- surge


def test_surge_from_idle_admits_half_the_limit_in_the_first_second_then_doubles():
    g = SurgeGuard(10)  # floor 0.5, growth 2
    got = [g.wait(0.01 * i) == 0.0 and (g.take(0.01 * i) or True) for i in range(8)]
    assert got == [True] * 5 + [False] * 3
    assert g.wait(0.5) == pytest.approx(0.5)  # the first of the last second leaves at 1.0
    # second 2: c0 = 5 → allowance 10
    assert sum(1 for i in range(12) if g.wait(1.0 + 0.05 * i) == 0.0 and (g.take(1.0 + 0.05 * i) or True)) == 10


def test_surge_never_touches_a_steady_client_at_the_limit_but_refuses_one_resuming_at_full_rate():
    s = scope("key", "k", qps=5, surge=(0.5, 2.0))
    t, refused = 0.0, []
    for i in range(100):  # ramps up from idle: 3 in the first second, then full rate
        r = admit([s], t, 1)
        refused += [i] if r else []
        t += 0.2
    assert refused == [3, 4]  # 0.6 s and 0.8 s: the 4th and 5th in the first second; never again
    t += 5.0  # idle for 5 s, then 5 at once
    got = [admit([s], t, 1) for _ in range(5)]
    assert [g is None for g in got] == [True, True, True, False, False] and got[3].reason == "surge"


# ------------------------------------------------------------------------------------ tokens


@pytest.mark.parametrize("name", ["bus.jpg", "zidane.jpg"])
def test_image_size_from_the_jpeg_header_matches_opencv(name):
    raw = (ROOT / "tests/data" / name).read_bytes()
    h, w = cv2.imread(str(ROOT / "tests/data" / name)).shape[:2]
    assert jpeg_size(raw) == (w, h)
    url = "data:image/jpeg;base64," + base64.b64encode(raw).decode()
    assert image_size(url) == (w, h)
    assert image_tokens((w, h)) == math.ceil(w / 28) * math.ceil(h / 28)


def test_image_size_of_png_crops_and_of_what_cannot_be_read():
    ok, png = cv2.imencode(".png", cv2.imread(str(ROOT / "tests/data/bus.jpg"))[:57, :30])
    assert ok and image_size("data:image/png;base64," + base64.b64encode(png.tobytes()).decode()) == (30, 57)
    assert image_tokens((30, 57)) == 2 * 3 and image_tokens((28, 28)) == 1
    for url in ("https://example.com/a.jpg", "data:image/jpeg;base64,AAAA", "data:text/plain,hello"):
        assert image_size(url) is None
    assert image_tokens(None) == UNKNOWN_IMAGE_TOKENS
    truncated = b"\xff\xd8\xff\xe0" + struct.pack(">H", 16) + b"\0" * 14  # an APP0 and no SOF
    assert jpeg_size(truncated) is None
    assert text_tokens("") == 0 and text_tokens("abcde") == 2


# ---------------------------------------------------------------------------------- refusals


def test_refusal_bodies_in_both_provider_styles():
    status, body = refusal("dashscope", "rate", "req-1")
    assert status == 429 and body == {"error": {
        "message": "Requests rate limit exceeded, please try again later.", "type": "Throttling.RateQuota",
        "param": None, "code": "Throttling.RateQuota"}, "request_id": "req-1"}
    assert refusal("dashscope", "tokens", "r")[1]["error"]["message"].startswith("Allocated quota exceeded")
    assert refusal("dashscope", "surge", "r")[1]["error"]["code"] == "Throttling.BurstRate"
    assert refusal("dashscope", "billing", "r")[0] == 400
    status, body = refusal("openai", "billing", "r")
    assert status == 429 and body["error"]["code"] == "insufficient_quota" and "request_id" not in body
    assert refusal("openai", "tokens", "r")[1]["error"]["type"] == "tokens"
