"""`hazardctl loadtest --motion`: the simulated road carries real motion cues (hazardctl.kinematics,
hazardctl.cues), calm traffic the danger-aware gate holds and labelled hazards it must send as
`suspect`; the report's calls per camera-second and hazard recall count what they should."""

from __future__ import annotations

import collections
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from hazardctl.gating import GroupGate
from hazardctl.messages import DetectionResult
from tools.loadtest.cameras import gate_view
from tools.loadtest.crops import real_crops
from tools.loadtest.hazards import HazardLog, figures
from tools.loadtest.ledger import TaskRow
from tools.loadtest.run import Options, gate_config
from tools.loadtest.scene import CameraScene, SceneConfig, hazard_onset_s

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_795_868_000.0


def _drive(mode: str, cameras: int = 10, seconds: int = 240, hazard_every: float = 30.0):
    """Every frame of `cameras` motion scenes through the gate in `mode`; per-group reasons and hazard timing."""
    cfg = SceneConfig(rate=0.5, fps=1.0, motion=True, hazard_every_s=hazard_every)
    gate = GroupGate(dataclasses.replace(gate_config(Options(rate=0.5, fps=1.0)), mode=mode))
    crops = real_crops()
    reasons: collections.Counter = collections.Counter()
    hazards: dict[str, dict] = {}
    calm_suspects = 0
    for c in range(cameras):
        scene = CameraScene(f"cam-{c}", cfg, crops, seed=c)
        for k in range(seconds):
            scene.advance(float(k))
            msg = scene.frame(k, T0 + k, f"cam-{c}:{k}")
            if c == 0 and k in (1, 40):
                DetectionResult.model_validate_json(orjson.dumps(msg))  # valid on the wire, motion and cues included
            tracks = {o["object_id"]: o["track_id"] for o in msg["objects"]}
            hz = scene.hazard_group_id()
            for g in msg["groups"]:
                r = gate.check(msg["camera_id"], g["group_id"], gate_view(g, tracks), msg["frame_ts"])
                reasons[r] += 1
                if g["group_id"] == hz:
                    h = hazards.setdefault(hz, {"appeared": k, "suspects": [], "cues": []})
                    h["cues"].append((k - h["appeared"], g["cues"]))
                    if r == "suspect":
                        h["suspects"].append(k - h["appeared"])
                elif r == "suspect":
                    calm_suspects += 1
    return reasons, hazards, calm_suspects


def test_motion_scene_carries_real_cues_and_the_danger_gate_sends_every_hazard_as_suspect():
    reasons, hazards, calm_suspects = _drive("danger")
    assert len(hazards) >= 70  # 10 cameras, one every 30 s for 240 s
    onset = hazard_onset_s()
    for gid, h in hazards.items():
        cues = dict(h["cues"])
        assert cues[0] is None  # first sighting: no motion yet, as detect
        later = [c for t, c in h["cues"] if t >= 1]
        assert later and all(c["conflict_possible"] for c in later[:2]), gid  # a moving car closing in
        # the labelled onset is real in the cues: TTC ≤ 1.5 s on the first frame after it
        first_after = next(c for t, c in h["cues"] if t >= onset)
        assert first_after["min_ttc_s"] is not None and first_after["min_ttc_s"] <= 1.5, (gid, first_after)
        if h["cues"][-1][0] >= onset + 1:  # not cut off by the end of the drive
            assert any(t >= onset and t <= onset + 1.0 for t in h["suspects"]), (gid, h["suspects"])
    assert calm_suspects == 0  # the calm traffic never raises a suspect
    assert reasons["changed"] == 0  # membership churn in calm groups is no reason


def test_danger_gate_spends_a_fraction_of_the_classic_gate_on_the_same_road():
    classic, _, _ = _drive("classic", cameras=6)
    danger, _, _ = _drive("danger", cameras=6)
    sent = {m: sum(v for k, v in r.items() if k) / 6 / 240 for m, r in (("classic", classic), ("danger", danger))}
    # classic: the road's activity (--rate 0.5) plus the hazards' own changes; danger: the new groups (every
    # other event, 0.2/s), calm refreshes (1/60 s a group) and ~1 new + 3 suspects per hazard (one per 30 s)
    assert sent["classic"] == pytest.approx(0.5 + 1 / 30 * 2, abs=0.06)
    assert sent["danger"] == pytest.approx(0.2 + 4 / 30, abs=0.05)
    assert sent["danger"] < 0.7 * sent["classic"]
    assert classic["suspect"] == 0 and danger["suspect"] > 0


def test_hazard_every_shorter_than_a_hazard_is_refused():
    assert SceneConfig(motion=True, hazard_every_s=3.0).check()
    assert SceneConfig(motion=True, hazard_every_s=30.0).check() is None
    assert SceneConfig(motion=False, hazard_every_s=3.0).check() is None  # no hazards without motion


def _row(tid, reason, outcome="ok", capture=100.0, on_topic=102.0):
    return TaskRow(tid, "cam", reason, capture=capture, outcome=outcome, on_topic=on_topic)


def test_recall_counts_a_suspect_ok_within_its_deadline_and_skips_hazards_cut_off_by_the_end():
    log = HazardLog()
    full = hazard_onset_s() + 1.0
    log.groups = {
        "h1": {"first": 0.0, "last": full, "tasks": [("a", "new"), ("b", "suspect")]},
        "h2": {"first": 0.0, "last": full, "tasks": [("c", "new"), ("d", "suspect")]},  # its suspect came back late
        "h3": {"first": 0.0, "last": full, "tasks": [("e", "new")]},  # no suspect at all: missed
        "h4": {"first": 0.0, "last": 1.0, "tasks": [("f", "new")]},  # the run ended before its onset
    }
    rows = [_row("a", "new"), _row("b", "suspect"), _row("c", "new"), _row("d", "suspect", on_topic=111.0),
            _row("e", "new"), _row("f", "new"), _row("x", "suspect", outcome="stale")]
    f = figures(log, rows, cameras=4, tasks_per_s=2.0, deadline_s=10.0, fps=1.0)
    assert f["hazards"] == 3 and f["hazards_recalled"] == 1 and f["hazard_recall"] == pytest.approx(1 / 3, abs=1e-4)
    assert f["suspect_tasks"] == 3 and f["suspect_ok_in_deadline"] == 1
    assert f["calls_per_camera_s"] == 0.5


def test_pipes_run_with_motion_is_predicted_exactly_and_recalls_its_hazards(tmp_path):
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "hazardctl.cli", "loadtest", "--no-live", "--cameras", "6", "--duration",
                        "16", "--transport", "pipes", "--motion", "--hazard-every", "8", "--out", str(out),
                        "--assert", "hazard_recall>=1", "--assert", "suspect_ok_share>=1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "calls per camera-second" in p.stdout
    s = json.loads((out / "summary.json").read_text())
    m = s["motion"]
    assert m["hazards"] >= 6 and m["hazards_recalled"] == m["hazards"]
    assert m["suspect_tasks"] >= m["hazards"] and m["suspect_ok_in_deadline"] == m["suspect_tasks"]
    assert s["production"]["exact"], s["production"]  # expand produced exactly the tasks the gate predicted
    assert s["reasons"].get("suspect") == m["suspect_tasks"] and not s["reasons"].get("changed")
    assert s["config"]["motion"] is True
