"""`scripts/bench_gate.py --quick`: the real detect (MOT replay) → the real expand with the classic and the
danger-aware gate, in one run (~20 s on 2 cores).

What it proves of the danger gate, beside the classic one measured on the same detections: every
labelled near-miss is covered by a `suspect` task, calm scenes cost several times fewer calls, and no
calm scene raises a `suspect`. The Must-show thresholds themselves, and the real footage (80 s of
video in real time: too long for make test), are `make bench-gate`'s (the full library, an hour of
calm scenes, --check).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_bench_gate_quick_classic_beside_danger(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/bench_gate.py", "--quick", "--calm-s", "120", "--no-footage",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "hazard recall" in out and "Must show" in out and "false suspect / camera-hour" in out
    s = json.loads((tmp_path / "summary.json").read_text())
    classic, danger = s["gates"]["classic"], s["gates"]["danger"]

    # the same detections went to both gates: the same scenes, the same hazards
    assert [x["name"] for x in classic["scenarios"]] == [x["name"] for x in danger["scenarios"]]
    hazards = [h for x in danger["scenarios"] for h in x["hazards"]]
    assert len(hazards) == 4
    assert danger["recall"] == 1.0
    assert all(h["reason"] == "suspect" for h in hazards), hazards
    for h in hazards:  # the delay is the frame wait plus the measured processing, in real time
        # (an early suspect, from the frame before the onset, has a negative frame wait and counts from 0)
        assert h["delay_s"] == pytest.approx(max(0.0, h["frame_wait_s"] + h["processing_s"]), abs=1e-6)
        assert -0.5 < h["frame_wait_s"] <= h["conflict_s"] - h["onset_s"]
        assert (h["frame_wait_s"] < 0) == (h["suspect_before_s"] is not None)
        assert 0 < h["processing_s"] < 2.0  # detect + pipe + expand; milliseconds on a quiet machine
    assert not any(x["reasons"].get("suspect") for x in classic["scenarios"])  # classic knows no suspect

    calm_c = {x["name"]: x for x in classic["scenarios"] if x["kind"] == "calm"}
    calm_d = {x["name"]: x for x in danger["scenarios"] if x["kind"] == "calm"}
    assert set(calm_d) == {"crowd-plaza", "parked-row", "parallel-traffic", "waiting-crossing"}
    for name, d in calm_d.items():
        assert d["tasks"] > 0 and not d["reasons"].get("suspect"), d
        assert d["calls_per_s"] * 3 < calm_c[name]["calls_per_s"], (name, d["calls_per_s"], calm_c[name]["calls_per_s"])
    assert danger["false_suspects_per_camera_hour"] == 0.0
    assert danger["footage"] is None
