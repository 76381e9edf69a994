"""Motion gating: skip inference on a camera frame in which nothing moved (issue 21.2).

Frigate's idea on a CPU: a cheap frame difference decides whether the model runs at all. The frame
is shrunk to a small grey, slightly blurred image and compared with the last *analysed* frame (not
the previous one, so slow motion still adds up); when fewer than `min_changed` of its pixels moved
by more than `pixel_delta` grey levels, the stage repeats that frame's detections instead of running
the model (the tracker sees them again, so tracks age as for a frame with the same boxes). At least
every `force_every_s` seconds the model runs anyway, so a stopped car that starts slowly, lighting
or a detection the repeat would keep forever are refreshed. Pure: the clock is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True, slots=True)
class MotionGateConfig:
    width: int = 160
    """the grey image the difference runs on is this wide (its height keeps the aspect ratio)"""
    pixel_delta: int = 12
    """grey levels a pixel must change by to count as moved (above sensor noise and compression)"""
    min_changed: float = 0.001
    """fraction of pixels that must move for the frame to be analysed (0.1 %: ~25 pixels of 160×90;
    a pedestrian 60 px tall in a 720 p frame covers ~0.3 %)"""
    force_every_s: float = 2.0
    """the model runs at least this often per camera, motion or not"""


class MotionGate:
    """One camera's gate: `infer(image, now)` says whether the model must run on this frame."""

    def __init__(self, cfg: MotionGateConfig = MotionGateConfig()) -> None:
        self.cfg = cfg
        self._ref: np.ndarray | None = None
        self._last_infer: float | None = None
        self.skipped = 0
        self.inferred = 0

    def small(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        width = min(self.cfg.width, w)
        height = max(1, round(h * width / w))
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        return cv2.GaussianBlur(cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA), (3, 3), 0)

    def changed(self, small: np.ndarray) -> float:
        """Fraction of pixels that moved since the last analysed frame (1.0 with none to compare)."""
        if self._ref is None or self._ref.shape != small.shape:
            return 1.0
        return float(np.count_nonzero(cv2.absdiff(small, self._ref) > self.cfg.pixel_delta)) / small.size

    def infer(self, image: np.ndarray, now: float) -> bool:
        small = self.small(image)
        due = self._last_infer is None or now - self._last_infer >= self.cfg.force_every_s or now < self._last_infer
        if due or self.changed(small) >= self.cfg.min_changed:
            self._ref, self._last_infer = small, now
            self.inferred += 1
            return True
        self.skipped += 1
        return False

    def reset(self) -> None:
        self._ref = self._last_infer = None
