"""The loadtest's pure parts: the road scene passes `rate` groups/s per camera through the real gate,
percentiles are exact, the identity catches what it should, asserts and chaos are parsed strictly."""

from __future__ import annotations

import collections

import orjson
import pytest

from hazardctl.errors import ConfigError
from hazardctl.gating import GroupGate
from hazardctl.messages import DetectionResult
from tools.loadtest import chaos, report
from tools.loadtest.cameras import gate_view
from tools.loadtest.crops import real_crops
from tools.loadtest.ledger import Ledger
from tools.loadtest.run import Options, gate_config
from tools.loadtest.scene import CameraScene, SceneConfig


@pytest.mark.parametrize("rate,fps", [(0.5, 1.0), (0.5, 2.0), (1.0, 2.0), (0.08, 1.0)])
def test_scene_passes_the_rate_through_the_gate_without_a_start_burst(rate, fps):
    cfg = SceneConfig(rate=rate, fps=fps)
    gate = GroupGate(gate_config(Options(rate=rate, fps=fps)))
    crops = real_crops()
    reasons: collections.Counter = collections.Counter()
    per_second: collections.Counter = collections.Counter()
    cameras, seconds, t0 = 20, 200, 1_795_868_000.123
    for c in range(cameras):
        scene = CameraScene(f"cam-{c}", cfg, crops, seed=c)
        for k in range(int(seconds * fps)):
            scene.advance(k / fps)
            msg = scene.frame(k, t0 + c * 0.013 + k / fps, f"cam-{c}:{k}")
            if c == 0 and k == 5:
                DetectionResult.model_validate_json(orjson.dumps(msg))  # a valid detection result
            tracks = {o["object_id"]: o["track_id"] for o in msg["objects"]}
            for g in msg["groups"]:
                r = gate.check(msg["camera_id"], g["group_id"], gate_view(g, tracks), msg["frame_ts"])
                reasons[r] += 1
                if r:
                    per_second[int(k / fps)] += 1
    sent = sum(v for k, v in reasons.items() if k)
    assert sent / cameras / seconds == pytest.approx(rate, rel=0.03), reasons
    assert reasons[None] > sent  # most groups shown are persisting ones the gate suppresses
    if rate > 0.1:
        assert reasons["refresh"] and reasons["changed"] and reasons["new"]
    # no burst at the start: the first seconds carry about the rate like any others
    assert max(per_second[s] for s in range(3)) <= 3 * rate * cameras + 3


def test_scene_refuses_a_rate_the_frame_rate_cannot_carry():
    assert SceneConfig(rate=3.0, fps=1.0).check()
    assert SceneConfig(rate=0.5, fps=1.0).check() is None


def test_percentiles_are_exact_nearest_rank():
    values = [float(i) for i in range(1, 101)]
    assert [report.pct(values, p) for p in (50, 90, 95, 99)] == [50.0, 90.0, 95.0, 99.0]
    assert report.pct([3.0, 1.0, 2.0], 95) == 3.0
    assert report.pct([], 95) is None


def _task(tid: str) -> bytes:
    return orjson.dumps({"task_id": tid, "camera_id": "c", "reason": "new", "frame_ts": 1.0, "times": {"capture": 1.0}})


def _result(tid: str, status: str = "ok", error_class: str | None = None) -> bytes:
    return orjson.dumps({"task_id": tid, "camera_id": "c", "status": status, "error_class": error_class,
                         "key_name": "k1", "attempts": 1, "times": {"capture": 1.0, "llm_start": 1.1, "llm_end": 2.0}})


def test_ledger_identity_counts_each_term_from_its_own_source():
    led = Ledger()
    for t in "abcdefg":
        led.on_task(_task(t), 1.0)
    led.on_task(_task("a"), 1.5)  # redelivered task
    led.on_result(_result("a"), 2.1)
    led.on_result(_result("a"), 2.2)  # redelivered result
    led.on_result(_result("b", "failed", "timeout"), 2.1)
    led.on_dead_letter(orjson.dumps({"stage": "schedule", "payload": _task("b").decode()}), 2.1)  # beside its result
    led.on_result(_result("c", "stale"), 2.1)
    led.on_result(_result("d", "stale", "shed"), 2.1)
    led.on_dead_letter(orjson.dumps({"stage": "schedule", "payload": _task("e").decode(), "error_class": "internal"}), 2)
    c = led.counts()
    assert (c["ok"], c["failed"], c["stale"], c["shed"], c["dead_letter"], c["in_flight"]) == (1, 1, 1, 1, 1, 2)
    assert c["duplicate_tasks"] == 1 and c["duplicate_results"] == 1 and c["dead_letter_messages"] == 2
    assert report.identity(c)["holds"]
    led.on_result(_result("zzz"), 2.3)  # a result of a task nobody offered breaks the identity
    assert not report.identity(led.counts())["holds"]


def test_asserts_parse_and_check():
    a = report.parse_assert("e2e.p95<2.0")
    assert (a.name, a.op, a.value) == ("e2e.p95", "<", 2.0)
    with pytest.raises(ConfigError):
        report.parse_assert("p95 is small")
    summary = {"latency": {"e2e": {"p95": 1.9}, "llm": {"p95": 1.8}, "e2e_minus_llm": {}, "stages": {}},
               "counts": dict.fromkeys(["ok", "failed", "stale", "shed", "dead_letter", "in_flight", "offered",
                                        "duplicate_results"], 0),
               "success": 0.995, "rates": {"achieved_per_s": 25.1, "tasks_per_s": 25.0}, "cameras": {"late": 0},
               "identity": {"holds": True}}
    checks = report.check_asserts(summary, [report.parse_assert(x) for x in
                                            ("e2e.p95<2.0", "success>=0.99", "e2e_over_llm.p95<=0.05", "nope>1")])
    assert [c["ok"] for c in checks] == [True, True, False, False]
    assert "no figure 'nope'" in checks[3]["why"]


def test_chaos_is_parsed_strictly_and_kills_need_kafka():
    assert chaos.parse("key-401@20", "kafka", 60) == chaos.Chaos(20.0, "key-401")
    for bad in ("key-401", "nothing@3", "key-401@x", "key-401@70"):
        with pytest.raises(ConfigError):
            chaos.parse(bad, "kafka", 60)
    with pytest.raises(ConfigError, match="needs --transport kafka"):
        chaos.parse("kill-schedule@5", "pipes", 60)
    assert chaos.parse("latency-spike@5", "pipes", 60).name == "latency-spike"


def test_live_view_renders_outcomes_and_key_states():
    import io

    from rich.console import Console

    from tools.loadtest.live import LiveView

    console = Console(file=io.StringIO(), force_terminal=True, width=140, record=True)
    view = LiveView(console, Options(cameras=5), 0.0, None, None, None, None, enabled=True)
    view._sim = {"keys": {"sim-key-01": {"requests": 7, "ok": 6, "rate_limited_429": 0, "unauthorized_401": 1,
                                         "server_errors_5xx": 0, "in_flight": 2}}}
    view._states = {"sim-key-01": "disabled"}
    counts = {"offered": 12, "ok": 9, "failed": 1, "stale": 0, "shed": 0, "dead_letter": 0, "in_flight": 2}
    f = {"elapsed": 12.3, "frames": 60, "late": 0, "predicted": 12, "counts": counts, "offered_rate": 2.5,
         "achieved_rate": 2.4, "success": 0.9, "e2e_p95": 1.95, "llm_p95": 1.9, "dead": ["schedule"]}
    console.print(view.render(f))
    text = console.export_text()
    assert "offered 12  ok 9  failed 1" in text and "disabled" in text and "schedule" in text and "90.00%" in text
    assert "in flight 2" in view.line(f) and "DOWN: schedule" in view.line(f)


def _offered(led: Ledger, tid: str, reason: str = "new") -> None:
    led.on_task(orjson.dumps({"task_id": tid, "camera_id": "c", "reason": reason, "frame_ts": 1.0,
                              "times": {"capture": 1.0}}), 1.01)


def test_production_compares_task_ids_with_the_gates_prediction():
    led = Ledger()
    for tid, reason in (("a", "new"), ("b", "changed"), ("x", "new"), ("y", "new")):
        _offered(led, tid, reason)
    expected = {"a": "new", "b": "changed", "c": "refresh", "d": "new"}
    p = report.production(expected, led.rows())
    # the counts agree (4 = 4) but two predicted tasks never came and two came unpredicted: not as predicted
    assert p["produced_vs_expected"] == 1.0 and not p["exact"]
    assert (p["as_predicted"], p["unexpected"], p["never_produced"]) == (2, 2, 2)
    assert p["unexpected_by_reason"] == {"new": 2} and p["never_produced_by_reason"] == {"new": 1, "refresh": 1}
    assert {t["task_id"] for t in p["never_produced_tasks"]} == {"c", "d"}
    # a restarted gate that forgot its state: everything predicted came, plus groups re-sent as new
    _offered(led, "c", "refresh")
    _offered(led, "d", "new")
    p = report.production(expected, led.rows())
    assert p["produced_vs_expected"] == 1.5 and p["never_produced"] == 0 and p["unexpected"] == 2
    exact = report.production({"a": "new", "b": "changed", "c": "refresh", "d": "new", "x": "new", "y": "new"},
                              led.rows())
    assert exact["exact"] and exact["produced_vs_expected"] == 1.0


def _summary(lat: dict, counts: dict, production: dict | None) -> dict:
    return {"latency": lat, "counts": counts, "success": 0.5, "rates": {"achieved_per_s": 1.0, "tasks_per_s": 1.0},
            "cameras": {"late": 0}, "identity": {"holds": True}, "production": production}


def test_lost_counts_predicted_tasks_never_produced_and_asserts_see_it():
    led = Ledger()
    _offered(led, "a")
    led.on_result(_result("a"), 2.5)
    p = report.production({"a": "new", "b": "new", "c": "refresh"}, led.rows())
    s = _summary(report.latencies(led.rows()), led.counts(), p)
    checks = report.check_asserts(s, [report.parse_assert(x) for x in
                                      ("produced_vs_expected==1", "lost==0", "never_produced==2", "unexpected==0")])
    assert [(c["ok"], c["value"]) for c in checks] == [(False, 0.333333), (False, 2), (True, 2), (True, 0)]


def _timed_result(tid: str, capture: float, attempts: list[tuple[float, float]], status: str = "ok",
                  error_class: str | None = None) -> bytes:
    times = {"capture": capture, "llm_start": attempts[-1][0], "llm_end": attempts[-1][1],
             "llm_attempts": [list(a) for a in attempts]}
    return orjson.dumps({"task_id": tid, "camera_id": "c", "status": status, "error_class": error_class,
                         "key_name": "k1", "attempts": len(attempts), "times": times})


def test_headline_is_per_task_and_retries_are_not_overhead():
    led = Ledger()
    # two tasks whose LLM calls and ends to end are anti-correlated: the P95s of the two distributions
    # differ by far less than any task's own overhead
    _offered(led, "slow-llm")
    led.on_result(_timed_result("slow-llm", 0.0, [(0.01, 2.01)]), 2.1)  # 2.0 s LLM, 100 ms ours
    _offered(led, "fast-llm")
    led.on_result(_timed_result("fast-llm", 0.0, [(0.01, 1.01)]), 2.1)  # 1.0 s LLM, 1.1 s ours
    _offered(led, "retried")  # a first attempt of 1.5 s failed, the second answered in 1.0 s; 60 ms ours
    led.on_result(_timed_result("retried", 0.0, [(0.02, 1.52), (1.53, 2.53)]), 2.56)
    lat = report.latencies(led.rows())
    over = sorted(round(x, 3) for x in [lat["e2e_minus_llm"][k] for k in ("p50", "max")])
    assert over == [0.1, 1.1]
    assert lat["e2e_minus_llm"]["n"] == 3 and round(lat["e2e_minus_llm"]["p50"], 3) == 0.1
    assert lat["retry"]["n"] == 1 and round(lat["retry"]["max"], 3) == 1.5
    f = report.flat_figures(_summary(lat, led.counts(), None))
    assert round(f["e2e_minus_llm.p95"], 3) == 1.1  # the task that spent 1.1 s outside the LLM
    assert round(f["e2e_over_llm.p95"], 3) == round(2.56 - 2.0, 3)  # what subtracting two P95s would say
    # without llm_attempts (an older scheduler) retries are unknown and stay in the overhead
    assert report.http_windows({"llm_start": 1.0, "llm_end": 2.0}) == (1.0, 0.0)


def test_failed_shed_stale_and_dead_letter_tasks_have_latency_rows_of_their_own():
    led = Ledger()
    for tid in ("ok", "f", "st", "sh", "dl"):
        _offered(led, tid)
    led.on_result(_timed_result("ok", 1.0, [(1.1, 2.0)]), 2.1)
    led.on_result(_timed_result("f", 1.0, [(1.1, 2.0), (2.1, 3.0)], "failed", "timeout"), 3.2)
    led.on_result(orjson.dumps({"task_id": "st", "camera_id": "c", "status": "stale", "times": {"capture": 1.0}}), 11.5)
    led.on_result(orjson.dumps({"task_id": "sh", "camera_id": "c", "status": "stale", "error_class": "shed",
                                "times": {"capture": 1.0}}), 4.0)
    led.on_dead_letter(orjson.dumps({"stage": "schedule", "payload": _task("dl").decode(), "error_class": "x"}), 6.0)
    lat = report.latencies(led.rows())
    got = {k: round(d["max"], 2) for k, d in lat["e2e_by_outcome"].items()}
    assert got == {"failed": 2.2, "stale": 10.5, "shed": 3.0, "dead_letter": 5.0}
    assert lat["e2e"]["n"] == 1  # the ok row stays ok tasks only
    f = report.flat_figures(_summary(lat, led.counts(), None))
    assert round(f["e2e_stale.p95"], 2) == 10.5 and round(f["e2e_dead_letter.p95"], 2) == 5.0
