"""Group crops: union box + margin, at most `max_side` pixels, JPEG, base64 — and within the size limit.

A crop is encoded to base64 once and carried once, in its group. When a whole detection result
would exceed the output's max message size (Kafka's max.message.bytes), the crops are re-encoded
smaller, all by the same factor estimated from JPEG size ∝ area, and as a last resort the largest
crops are left out; both are counted so an operator sees it happen.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

BBox = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class CropConfig:
    max_side: int = 768
    jpeg_quality: int = 85
    margin: float = 0.15
    """added on each side, as a fraction of the union box's longer side (scale-free context)"""
    min_margin_px: int = 8
    min_side: int = 64
    """crops are not shrunk below this; past it a crop is left out instead"""


@dataclass(slots=True)
class Crop:
    jpeg_b64: str
    size: tuple[int, int]
    """width, height of the encoded crop"""


@dataclass(slots=True)
class FitReport:
    downsized: int = 0
    """crops re-encoded smaller to fit the message size"""
    dropped: int = 0
    """crops left out because even small ones did not fit"""


def crop_region(bbox: BBox, frame_w: int, frame_h: int, cfg: CropConfig) -> tuple[int, int, int, int]:
    """Integer pixel region of the union box plus margin, clipped to the frame (never empty)."""
    x1, y1, x2, y2 = bbox
    m = max(cfg.min_margin_px, cfg.margin * max(x2 - x1, y2 - y1))
    rx1 = int(max(0, math.floor(x1 - m)))
    ry1 = int(max(0, math.floor(y1 - m)))
    rx2 = int(min(frame_w, math.ceil(x2 + m)))
    ry2 = int(min(frame_h, math.ceil(y2 + m)))
    return rx1, ry1, max(rx2, rx1 + 1), max(ry2, ry1 + 1)


def encode_crop(image: np.ndarray, region: tuple[int, int, int, int], max_side: int, quality: int) -> Crop:
    x1, y1, x2, y2 = region
    roi = image[y1:y2, x1:x2]
    h, w = roi.shape[:2]
    scale = min(1.0, max_side / max(w, h))
    if scale < 1.0:
        roi = cv2.resize(roi, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", roi, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return Crop(base64.b64encode(buf).decode("ascii"), (roi.shape[1], roi.shape[0]))


def shrink_factor(crop_bytes: int, budget: int) -> float:
    """Linear scale that should bring `crop_bytes` of JPEG under `budget` (size ∝ area), with 10 % slack."""
    if crop_bytes <= budget:
        return 1.0
    return max(0.0, math.sqrt(max(0, budget) / crop_bytes) * 0.9)


def fit_crops(image: np.ndarray, bboxes: list[BBox], cfg: CropConfig, size_of: Callable[[list[Crop | None]], int],
              max_bytes: int | None, rounds: int = 4) -> tuple[list[Crop | None], FitReport]:
    """Crops for `bboxes`, shrunk or left out until `size_of(crops)` (the message size) ≤ max_bytes."""
    h, w = image.shape[:2]
    regions = [crop_region(b, w, h, cfg) for b in bboxes]
    crops: list[Crop | None] = [encode_crop(image, r, cfg.max_side, cfg.jpeg_quality) for r in regions]
    report = FitReport()
    downsized: set[int] = set()
    if max_bytes is None:
        return crops, report
    for _ in range(rounds):
        total = size_of(crops)
        if total <= max_bytes:
            break
        crop_bytes = sum(len(c.jpeg_b64) for c in crops if c is not None)
        factor = shrink_factor(crop_bytes, crop_bytes - (total - max_bytes))
        shrunk = False
        for i, c in enumerate(crops):
            if c is None:
                continue
            side = int(max(c.size) * factor)
            if side < cfg.min_side:
                continue
            crops[i] = encode_crop(image, regions[i], side, cfg.jpeg_quality)
            downsized.add(i)
            shrunk = True
        if not shrunk:
            break
    # last resort: leave out the largest crops until the message fits
    while size_of(crops) > max_bytes and any(c is not None for c in crops):
        i = max((i for i, c in enumerate(crops) if c is not None), key=lambda i: len(crops[i].jpeg_b64))  # type: ignore[union-attr]
        crops[i] = None
        downsized.discard(i)
        report.dropped += 1
    report.downsized = len(downsized)
    return crops, report
