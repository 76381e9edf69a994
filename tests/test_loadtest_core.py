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
