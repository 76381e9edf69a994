"""What a real detector and tracker do to the true boxes: jitter, missed boxes, id switches (seeded).

Applied frame by frame when a scenario is written (mot.py):
- every box edge moves by a uniform ±`jitter_px` (±3 px by default), independently per frame;
- a box is missed with probability `miss` (5 %): the object is absent from that frame;
- with probability `id_switch` per box (0.3 %, MOT17-like trackers switch a few per thousand boxes)
  the object's track id changes to a fresh one from that frame on, as after an occlusion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Noise:
    jitter_px: float = 3.0
    miss: float = 0.05
    id_switch: float = 0.003
    seed: int = 1

    def describe(self) -> str:
        return f"±{self.jitter_px:g} px, {self.miss:.0%} missed, {self.id_switch:.1%} id switches per box"


class NoisyTracker:
    """Turns one actor's true box into what detect would output on one frame, or None (missed)."""

    def __init__(self, noise: Noise, first_id: int = 1):
        self.noise = noise
        self.rng = np.random.default_rng(noise.seed)
        self._ids: dict[int, int] = {}
        self._next = first_id
        self.id_of: dict[int, int] = {}
        """every MOT id used → the actor it belongs to (for the labels)"""

    def track_id(self, actor_id: int) -> int:
        tid = self._ids.get(actor_id)
        if tid is None or (self.noise.id_switch and self.rng.random() < self.noise.id_switch):
            tid = self._next
            self._next += 1
            self._ids[actor_id] = tid
            self.id_of[tid] = actor_id
        return tid

    def observe(self, actor_id: int, box: tuple[float, float, float, float]) -> tuple[int, tuple[float, ...]] | None:
        j = self.noise.jitter_px
        jitter = self.rng.uniform(-j, j, 4) if j else np.zeros(4)
        missed = self.noise.miss and self.rng.random() < self.noise.miss
        tid = self.track_id(actor_id)
        if missed:
            return None
        x1, y1, x2, y2 = (float(v + d) for v, d in zip(box, jitter))
        return tid, (x1, y1, x2, y2)
