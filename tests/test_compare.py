"""`hazardctl compare` (issue 22): the agreement of two result sets on the same tasks, counted by hand
here, and the command on the files a real shadow run wrote (tests/test_schedule_variants.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.compare import LEVELS, compare, report

ROOT = Path(__file__).resolve().parent.parent


def res(task: str, level: str | None, types=(), status="ok", variant="plus", llm=1.0, tokens=500) -> dict:
    return {"task_id": task, "status": status, "level": level, "risk_types": list(types), "variant": variant,
            "tokens": tokens, "times": {"llm_start": 100.0, "llm_end": 100.0 + llm}}


def test_matrix_agreement_overlap_and_per_variant_figures():
    primary = [res("a", "none"), res("b", "low", ["tailgating"]), res("c", "high", ["vehicle-pedestrian conflict"]),
               res("d", "medium", ["Tailgating", "lane change"]), res("e", "low"), res("f", None, status="failed"),
               res("b", "low", ["tailgating"])]  # a redelivered duplicate counts once
    shadow = [res("a", "none", variant="max", llm=2.0, tokens=900), res("b", "medium", ["tailgating"], variant="max"),
              res("c", "medium", ["vehicle-pedestrian conflict", "speeding"], variant="max"),
              res("d", "medium", ["tailgating"], variant="max"), res("f", "low", variant="max"),
              res("g", "high", variant="max")]
    ag = compare(primary, shadow)
    assert ag.paired == 4 and ag.only_from == 1 and ag.only_to == 2  # e only primary; f failed there; f, g only shadow
    m = {(LEVELS[i], LEVELS[j]): n for i, row in enumerate(ag.matrix) for j, n in enumerate(row) if n}
    assert m == {("none", "none"): 1, ("low", "medium"): 1, ("high", "medium"): 1, ("medium", "medium"): 1}
    assert ag.exact == 0.5 and ag.within_one == 1.0 and ag.to_higher == 0.25 and ag.to_lower == 0.25
    # b: {tailgating} both = 1; c: 1 of 2 = 0.5; d: {tailgating} of {tailgating, lane change} = 0.5 (case folded)
    assert ag.risk_type_overlap == pytest.approx((1 + 0.5 + 0.5) / 3) and ag.risk_type_pairs == 3
    by = {(v.variant, v.side): v for v in ag.variants}
    assert by[("plus", "from")].results == 6 and by[("plus", "from")].ok == 5
    assert by[("max", "to")].llm_p95_s == pytest.approx(2.0) and by[("max", "to")].llm_p50_s == pytest.approx(1.0)
    assert by[("max", "to")].tokens_p95 == 900
    text = report(ag, ("plus", "max"))
    assert "exact 50.0 %" in text and "max" in text


def test_nothing_in_common_is_reported_not_divided_by_zero():
    ag = compare([res("a", "low")], [res("b", "low", variant="max")])
    assert ag.paired == 0 and ag.exact is None and ag.risk_type_overlap is None
    assert "0 tasks answered ok by both" in report(ag, ("a", "b"))


def test_compare_command_on_a_shadow_run(tmp_path):
    from tests.test_schedule_variants import key_data, run_files
    from tests.test_schedule_stage import sim_keys, tasks
    from hazardctl.keys import parse_keys
    from tools.llm_sim import SimConfig, SimServer

    with SimServer(SimConfig(keys=sim_keys(4, qps=50), latency="uniform:0.02:0.06", port=0)) as sim:
        data = key_data(sim, variants={"plus": {"model": "qwen-vl-plus"}, "max": {"model": "qwen-vl-max"}},
                        routes={"default": "plus"}, shadow={"variant": "max", "share": 100})
        results, _, shadows, _ = run_files(tmp_path, parse_keys(data, "k"), tasks(40, deadline_s=60), shadow=True)
    png = tmp_path / "compare.png"
    p = subprocess.run([sys.executable, "-m", "hazardctl.cli", "compare", "--from", str(tmp_path / "out.jsonl"),
                        "--to", str(tmp_path / "shadow.jsonl"), "--png", str(png), "--json"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    ag = json.loads(p.stdout)
    paired = len({r["task_id"] for r in results} & {r["task_id"] for r in shadows if r["status"] == "ok"})
    assert ag["paired"] == paired > 0 and sum(map(sum, ag["matrix"])) == paired
    assert {(v["variant"], v["side"]) for v in ag["variants"]} == {("plus", "from"), ("max", "to")}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = subprocess.run([sys.executable, "-m", "hazardctl.cli", "compare", "--from", str(tmp_path / "nope"),
                              "--to", str(png)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert missing.returncode == 2 and "file not found" in missing.stderr
