"""python -m tools.scenarios OUT [--quick] [--calm-s 900] [--fps 2] [--seed 7] [--no-noise]: write the library."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from tools.scenarios import library, mot
from tools.scenarios.noise import Noise


def write_library(out: Path, *, quick: bool = False, calm_s: float = 900.0, fps: float = 2.0, seed: int = 7,
                  noise: Noise | None = Noise()) -> dict[str, list[Path]]:
    """{"hazard": [...], "calm": [...]} sequence folders (hazard also holds the busy scenes)."""
    base = noise or Noise(jitter_px=0.0, miss=0.0, id_switch=0.0)
    written: dict[str, list[Path]] = {"hazard": [], "calm": []}
    for i, s in enumerate(library.hazards(seed, quick=quick)):
        written["hazard"].append(mot.write(s, out / "hazard", fps, replace(base, seed=seed * 1000 + i)))
    for i, s in enumerate(library.calm(calm_s, seed + 4)):
        written["calm"].append(mot.write(s, out / "calm", fps, replace(base, seed=seed * 1000 + 500 + i)))
    return written


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.scenarios", description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--quick", action="store_true", help="one scenario of each kind")
    ap.add_argument("--calm-s", type=float, default=900.0, help="length of each calm scene, s (default 900)")
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-noise", action="store_true")
    a = ap.parse_args()
    written = write_library(a.out, quick=a.quick, calm_s=a.calm_s, fps=a.fps, seed=a.seed,
                            noise=None if a.no_noise else Noise())
    for kind, seqs in written.items():
        for seq in seqs:
            lab = mot.read_labels(seq)
            hz = ", ".join(f"onset {h['onset_s']:.2f} s → conflict {h['conflict_s']:.2f} s (TTC {h['min_ttc_s']:.2f})"
                           for h in lab["hazards"])
            print(f"{seq}  {lab['kind']:6} {lab['frames']:5d} frames {lab['boxes']:6d} boxes  {hz}")


if __name__ == "__main__":
    main()
