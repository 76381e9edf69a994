"""Motion gating: run the model only on the frames, and the parts of frames, where something moved (issue 21).

Frigate's idea on a CPU: a cheap frame difference decides whether the model runs at all, and where. The
frame is shrunk to a small grey, slightly blurred image and compared with the last *analysed* image (not
the previous frame, so slow motion still adds up). When fewer than `min_changed` of its pixels moved by
more than `pixel_delta` grey levels, the stage repeats that frame's detections instead of running the
model (the tracker sees them again, so tracks age as for a frame with the same boxes). At least every
`force_every_s` seconds the whole frame is analysed anyway, so a stopped car that starts slowly, lighting
or a detection the repeat would keep forever are refreshed.

Regions (`regions=True`): when something moved, the changed pixels are grouped into connected blobs, each
blob's box is grown by a margin (context for the CNN), then grown again to hold every last-analysed box it
touches (an object partly moving is seen whole, and no previous box straddles a region edge), overlapping
regions are merged, and the model runs on those regions only (`OnnxDetector.detect_regions`). The frame's
boxes are then `merge_boxes`: the previous boxes lying outside every region (nothing moved there), those
inside on which no pixel changed unless the model found something on them (`GateDecision.still`), plus
the boxes found inside them. Too many regions are merged pairwise (least added area first); when they cover
more than `max_region_area` of the frame, the whole frame runs instead. Pure: the clock is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np

Region = tuple[int, int, int, int]
"""x1, y1, x2, y2 in frame pixels, x2/y2 exclusive, clipped to the frame"""
XYXY = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class MotionGateConfig:
    width: int = 160
    """the grey image the difference runs on is this wide (its height keeps the aspect ratio)"""
    pixel_delta: int = 12
    """grey levels a pixel must change by to count as moved (above sensor noise and compression)"""
    min_changed: float = 0.001
    """fraction of pixels that must move for the frame to be analysed (0.1 %: ~14 pixels of 160×90;
    a pedestrian 60 px tall in a 720 p frame covers ~0.3 %)"""
    force_every_s: float = 2.0
    """the whole frame is analysed at least this often per camera, motion or not"""
    regions: bool = False
    """run the model only on the regions that moved (False: the whole frame whenever anything moved)"""
    max_region_area: float = 0.5
    """when the regions cover more than this fraction of the frame, the whole frame runs instead (its
    cost is ~ proportional to pixels, and one whole run has no region edges)"""
    max_regions: int = 4
    """at most this many regions a frame (one model run each): the closest ones are merged beyond it"""
    margin: float = 0.25
    """each region grows by this fraction of its own width/height on each side (context for the CNN) …"""
    margin_px: int = 32
    """… and by at least this many frame pixels"""
    dilate: int = 1
    """the changed-pixel mask is dilated this many times (3×3, small-image pixels) before grouping, so
    the fragments of one mover (a person's legs and head) join into one blob"""


@dataclass(frozen=True, slots=True)
class GateDecision:
    infer: bool
    """False: nothing moved, repeat the last analysed frame's boxes"""
    regions: tuple[Region, ...] | None
    """where to run the model; None: the whole frame (forced refresh, first frame, motion too wide)"""
    still: tuple[XYXY, ...] = ()
    """the last boxes inside a region on which no pixel changed: merge_boxes keeps them unless the model
    finds something there (a region's crop scores borderline objects lower than the whole frame does)"""


SKIP = GateDecision(False, None)
WHOLE = GateDecision(True, None)


# ---------------------------------------------------------------------------- pure geometry

def _area(r: Sequence[float]) -> float:
    return max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])


def _overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    """Positive-area intersection (touching edges do not count)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _contains(outer: Sequence[float], inner: Sequence[float]) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


def _union(a: Region, b: Region) -> Region:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def widen_span(lo: int, hi: int, want: int, limit: int) -> tuple[int, int]:
    """[lo, hi) widened to `want` pixels, centred, shifted back inside [0, limit) where it can be."""
    extra = want - (hi - lo)
    lo -= extra // 2
    hi += extra - extra // 2
    if lo < 0:
        lo, hi = 0, hi - lo
    if hi > limit:
        lo, hi = lo - (hi - limit), limit
    return lo, hi


def grow(box: Sequence[float], size: tuple[int, int], margin: float, margin_px: int, min_side: int = 0) -> Region:
    """`box` grown by max(margin × its side, margin_px) on each side, at least `min_side` on each axis
    (centred, shifted back inside the frame where it can be), as whole pixels clipped to the frame."""
    w, h = size

    def axis(lo: float, hi: float, limit: int) -> tuple[int, int]:
        pad = max(margin * (hi - lo), margin_px)
        a, b = max(math.floor(lo - pad), 0), min(math.ceil(hi + pad), limit)
        if b - a < min_side:
            a, b = widen_span(a, b, min_side, limit)
        return max(a, 0), min(b, limit)

    x1, x2 = axis(box[0], box[2], w)
    y1, y2 = axis(box[1], box[3], h)
    return x1, y1, x2, y2


def settle(regions: list[Region], last: Sequence[XYXY], size: tuple[int, int], cfg: MotionGateConfig,
           min_side: int = 0) -> list[Region]:
    """Grow every region to hold each last box it overlaps (with margin) and merge overlapping regions,
    until nothing changes: afterwards each last box lies wholly inside one region or outside all."""
    grown = [(b, grow(b, size, cfg.margin, cfg.margin_px, min_side)) for b in last]
    regions = list(regions)
    while True:
        changed = False
        for i, r in enumerate(regions):
            for b, g in grown:
                if _overlap(r, b) and not _contains(r, g):
                    r, changed = _union(r, g), True
            regions[i] = r
        merged: list[Region] = []
        for r in regions:  # each new region swallows every merged one it overlaps, repeatedly
            while True:
                hit = next((k for k, m in enumerate(merged) if _overlap(m, r)), None)
                if hit is None:
                    break
                r, changed = _union(r, merged.pop(hit)), True
            merged.append(r)
        regions = merged
        if not changed:
            return regions


def plan_regions(blobs: Sequence[Region], last: Sequence[XYXY], size: tuple[int, int], cfg: MotionGateConfig,
                 min_side: int = 0) -> tuple[Region, ...] | None:
    """The regions to analyse for these motion blobs (frame pixels), or None for the whole frame."""
    if not blobs:
        return None
    regions = settle([grow(b, size, cfg.margin, cfg.margin_px, min_side) for b in blobs], last, size, cfg, min_side)
    while len(regions) > max(1, cfg.max_regions):
        # the pair whose union adds the least area (the cheapest extra pixels to save a model run)
        _, i, j = min((_area(_union(a, b)) - _area(a) - _area(b), i, j)
                      for i, a in enumerate(regions) for j, b in enumerate(regions) if i < j)
        joined = _union(regions[i], regions[j])
        regions = settle([r for k, r in enumerate(regions) if k not in (i, j)] + [joined], last, size, cfg, min_side)
    if sum(_area(r) for r in regions) > cfg.max_region_area * size[0] * size[1]:
        return None
    return tuple(sorted(regions))


REGION_MIN_INPUT_PX = 128
"""what a caller should pass as decide()'s min_side, via min_side_for: each region at least this many model
input pixels on each side. The CenterNet's MobileNetV3 has squeeze-excite blocks (global average pools), so
its scores depend on the whole input: on a crop of little more than one object they drop (-0.10 on average
for 64-px crops, -0.055 for 128) and borderline boxes vanish. With 64 regions kept 93.6-95.1 % of the
every-frame detections on vtest.avi, with 128 96.6-97.9 % (scripts/bench_regions.py, docs/detect.md)."""


def min_side_for(input_px: int, scale_x: float, scale_y: float) -> int:
    """Frame pixels a region needs on each side so that the model sees at least `input_px` input pixels
    on both axes at the frame's scale (e.g. 64 input px of a 1280x720 frame stretched to 512x512: 160)."""
    return math.ceil(input_px / min(scale_x, scale_y))


T = TypeVar("T")


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / max(_area(a) + _area(b) - inter, 1e-9)


STILL_IOU = 0.3
"""a still last box gives way to a found box overlapping it this much (the model's newer word on it)"""


def merge_boxes(last: Sequence[T], found: Sequence[T], regions: Sequence[Region], still: Sequence[XYXY] = (),
                bbox: Callable[[T], Sequence[float]] = lambda b: b.bbox) -> list[T]:  # type: ignore[attr-defined]
    """A region frame's boxes: the last analysed boxes outside every region (nothing moved there), the
    `still` ones inside (GateDecision.still: no pixel of them changed) that no found box overlaps, and the
    boxes found in the regions. Regions hold every last box they touch, so outside = no overlap at all."""
    keep = {tuple(b) for b in still}
    return [b for b in last
            if not any(_overlap(bbox(b), r) for r in regions)
            or (tuple(bbox(b)) in keep and not any(iou(bbox(b), bbox(f)) >= STILL_IOU for f in found))] + list(found)


# ---------------------------------------------------------------------------- the gate

class MotionGate:
    """One camera's gate: `decide(image, now, last_boxes)` says whether and where the model must run."""

    def __init__(self, cfg: MotionGateConfig = MotionGateConfig()) -> None:
        self.cfg = cfg
        self._ref: np.ndarray | None = None
        self._last_infer: float | None = None
        self.skipped = 0
        self.inferred = 0
        """frames the model ran on, whole or in regions"""
        self.regional = 0
        """of those, frames it ran on in regions only"""

    def small(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        width = min(self.cfg.width, w)
        height = max(1, round(h * width / w))
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        return cv2.GaussianBlur(cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA), (3, 3), 0)

    def _mask(self, small: np.ndarray) -> np.ndarray | None:
        if self._ref is None or self._ref.shape != small.shape:
            return None
        return cv2.absdiff(small, self._ref) > self.cfg.pixel_delta

    def changed(self, small: np.ndarray) -> float:
        """Fraction of pixels that moved since the last analysed frame (1.0 with none to compare)."""
        mask = self._mask(small)
        return 1.0 if mask is None else float(np.count_nonzero(mask)) / small.size

    def blobs(self, mask: np.ndarray, size: tuple[int, int]) -> list[Region]:
        """Boxes (frame pixels) of the connected groups of changed small-image pixels."""
        m = mask.astype(np.uint8)
        if self.cfg.dilate > 0:
            m = cv2.dilate(m, np.ones((3, 3), np.uint8), iterations=self.cfg.dilate)
        n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        fx, fy = size[0] / mask.shape[1], size[1] / mask.shape[0]
        return [(math.floor(x * fx), math.floor(y * fy), min(math.ceil((x + w) * fx), size[0]),
                 min(math.ceil((y + h) * fy), size[1]))
                for x, y, w, h, _ in stats[1:n].tolist()]

    def decide(self, image: np.ndarray, now: float, last_boxes: Sequence[XYXY] = (), min_side: int = 0
               ) -> GateDecision:
        """Skip, the whole frame, or regions. `last_boxes`: the boxes (xyxy, frame pixels) published for
        this camera's last analysed frame; `min_side`: the smallest region side the model wants (frame px)."""
        return self._decide(image, now, last_boxes, min_side, self.cfg.regions)

    def _decide(self, image: np.ndarray, now: float, last_boxes: Sequence[XYXY], min_side: int,
                regions: bool) -> GateDecision:
        small = self.small(image)
        due = self._last_infer is None or now - self._last_infer >= self.cfg.force_every_s or now < self._last_infer
        mask = None if due else self._mask(small)
        if mask is not None and np.count_nonzero(mask) < self.cfg.min_changed * small.size:
            self.skipped += 1
            return SKIP
        self.inferred += 1
        planned = None
        if mask is not None and regions:
            size = (image.shape[1], image.shape[0])
            planned = plan_regions(self.blobs(mask, size), last_boxes, size, self.cfg, min_side)
        if planned is None:
            self._ref, self._last_infer = small, now
            return WHOLE
        still = tuple(tuple(b) for b in last_boxes
                      if any(_overlap(b, r) for r in planned) and not self._moved(mask, b, image))
        # only the analysed regions become the reference: slow motion elsewhere keeps adding up
        fx, fy = small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]
        assert self._ref is not None
        for x1, y1, x2, y2 in planned:
            sx1, sy1 = math.floor(x1 * fx), math.floor(y1 * fy)
            sx2, sy2 = math.ceil(x2 * fx), math.ceil(y2 * fy)
            self._ref[sy1:sy2, sx1:sx2] = small[sy1:sy2, sx1:sx2]
        self.regional += 1
        return GateDecision(True, planned, still)

    @staticmethod
    def _moved(mask: np.ndarray, box: XYXY, image: np.ndarray) -> bool:
        """Whether any changed small-image pixel lies under the box."""
        fx, fy = mask.shape[1] / image.shape[1], mask.shape[0] / image.shape[0]
        x1, y1 = max(0, math.floor(box[0] * fx)), max(0, math.floor(box[1] * fy))
        x2, y2 = math.ceil(box[2] * fx), math.ceil(box[3] * fy)
        return bool(mask[y1:y2, x1:x2].any())

    def infer(self, image: np.ndarray, now: float) -> bool:
        """All-or-nothing (the stage before regions): True = run the model on the whole frame."""
        return self._decide(image, now, (), 0, False).infer

    def reset(self) -> None:
        self._ref = self._last_infer = None
