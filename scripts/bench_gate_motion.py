#!/usr/bin/env python
"""Does motion gating (detect --motion-gate) lose hazards? The gate benchmark's hazard onsets, with and without it.

The gate benchmark (scripts/bench_gate.py, tools/scenarios) replays boxes, not images, so the
motion gate has nothing to look at. Substitute: every frame of each hazard/busy scenario is
*rendered* (its boxes filled in per-class colours on a grey road with fixed sensor noise, at the
scenario's 1920x1080) and run through the real MotionGate (stages/detect/motion_gate.py) on the
scenario's own clock. A frame it gates out gets the boxes of the last frame it let through (what
the stage publishes then); the gated sequences and the originals are replayed by the same real
`hazardctl detect --source mot:... | hazardctl expand --gate danger` pipes as bench-gate, and the
labelled hazard onsets covered (tools/scenarios/score.py) are compared. Issue 21 asks >= 98 % of
the ungated figure.

    python scripts/bench_gate_motion.py [--quick] [--force 2.0] [--min-changed 0.001]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_gate import mot_args, replay, score_set  # noqa: E402
from stages.detect.motion_gate import MotionGate, MotionGateConfig  # noqa: E402
from tools.scenarios import mot  # noqa: E402
from tools.scenarios.__main__ import write_library  # noqa: E402

COLOURS = {"person": (40, 40, 200), "car": (200, 60, 30), "bicycle": (30, 180, 30), "motorcycle": (30, 200, 200),
           "bus": (160, 30, 160), "truck": (20, 20, 20)}


def render(lines: list[list[str]], size: tuple[int, int], background: np.ndarray) -> np.ndarray:
    img = background.copy()
    for f in lines:
        x, y, w, h = (float(v) for v in f[2:6])
        cv2.rectangle(img, (round(x), round(y)), (round(x + w), round(y + h)),
                      COLOURS.get(f[9] if len(f) > 9 else "car", (0, 0, 0)), -1)
    return img


def gate_sequence(seq: Path, out_root: Path, cfg: MotionGateConfig) -> tuple[Path, int, int]:
    """A copy of `seq` whose gated-out frames repeat the last analysed frame's boxes; (path, inferred, frames)."""
    labels = mot.read_labels(seq)
    ini = dict(line.split("=", 1) for line in (seq / "seqinfo.ini").read_text().splitlines() if "=" in line)
    w, h = int(ini["imWidth"]), int(ini["imHeight"])
    by_frame: dict[int, list[list[str]]] = defaultdict(list)
    for line in (seq / "gt" / "gt.txt").read_text().splitlines():
        if line.strip():
            f = line.split(",")
            by_frame[int(f[0])].append(f)
    rng = np.random.default_rng(0)
    background = np.full((h, w, 3), 110, np.uint8) + rng.integers(0, 4, (h, w, 3), dtype=np.uint8)
    gate = MotionGate(cfg)
    last: list[list[str]] = []
    out_lines = []
    for k in range(1, labels["frames"] + 1):
        boxes = by_frame.get(k, [])
        if gate.infer(render(boxes, (w, h), background), (k - 1) / labels["fps"]):
            last = boxes
        out_lines += [",".join([str(k), *f[1:]]) for f in last]
    dst = out_root / seq.name
    shutil.copytree(seq, dst)
    (dst / "gt" / "gt.txt").write_text("\n".join(out_lines) + "\n")
    return dst, gate.inferred, labels["frames"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one scenario of each kind")
    ap.add_argument("--force", type=float, default=MotionGateConfig().force_every_s)
    ap.add_argument("--min-changed", type=float, default=MotionGateConfig().min_changed)
    a = ap.parse_args(argv)
    cfg = MotionGateConfig(force_every_s=a.force, min_changed=a.min_changed)
    with tempfile.TemporaryDirectory(prefix="bench-gate-motion-") as tmp:
        work = Path(tmp)
        seqs = write_library(work / "scenarios", quick=a.quick, calm_s=10.0)["hazard"]
        gated_root = work / "gated"
        gated_root.mkdir()
        gated, inferred, frames = [], 0, 0
        for s in seqs:
            g, n_inf, n = gate_sequence(s, gated_root, cfg)
            gated.append(g)
            inferred += n_inf
            frames += n
        figs = {}
        for name, set_ in (("ungated", seqs), ("gated", gated)):
            run = replay(name, mot_args(set_, fast=True), ("danger",), work / name, timeout=600)
            figs[name] = score_set(set_, run, ("danger",))["danger"]
    covered = {n: sum(h.covered for f in fs for h in f.hazards) for n, fs in figs.items()}
    total = sum(len(f.hazards) for f in figs["ungated"])
    print(f"motion gate (force every {cfg.force_every_s:g} s, min changed {cfg.min_changed:g}): model run on "
          f"{inferred} of {frames} frames ({100 * (1 - inferred / frames):.1f} % skipped) of {len(seqs)} hazard/busy scenes")
    print(f"labelled hazard onsets covered (danger gate): ungated {covered['ungated']}/{total}, gated "
          f"{covered['gated']}/{total}")
    share = covered["gated"] / covered["ungated"] if covered["ungated"] else 1.0
    print(f"kept with gating: {100 * share:.1f} % of the ungated figure (issue 21 asks >= 98 %)")
    return 0 if share >= 0.98 else 1


if __name__ == "__main__":
    sys.exit(main())
