"""Group crops (union box + margin, max side, JPEG, base64 once) and the message size limit."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np
import pytest

from stages.detect.crops import CropConfig, crop_region, encode_crop, fit_crops, shrink_factor

BUS = cv2.imread(str(Path(__file__).resolve().parent / "data" / "bus.jpg"))


def decode(b64: str) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def test_region_adds_a_margin_relative_to_the_box_and_stays_in_the_frame():
    cfg = CropConfig(margin=0.1, min_margin_px=8)
    assert crop_region((100, 100, 300, 200), 1000, 1000, cfg) == (80, 80, 320, 220)   # 10 % of 200
    assert crop_region((100, 100, 110, 110), 1000, 1000, cfg) == (92, 92, 118, 118)   # at least 8 px
    assert crop_region((-5, 0, 990, 400), 1000, 500, cfg) == (0, 0, 1000, 500)        # clipped


def test_crop_is_resized_to_max_side_and_encoded_as_jpeg():
    crop = encode_crop(BUS, (0, 0, 810, 1080), 768, 85)
    img = decode(crop.jpeg_b64)
    assert crop.size == (576, 768) == (img.shape[1], img.shape[0])
    small = encode_crop(BUS, (10, 20, 110, 70), 768, 85)
    assert small.size == (100, 50)  # never enlarged
    assert len(encode_crop(BUS, (0, 0, 810, 1080), 768, 40).jpeg_b64) < len(crop.jpeg_b64)


def test_shrink_factor():
    assert shrink_factor(100, 200) == 1.0
    assert shrink_factor(400, 100) == pytest.approx(0.45)


def test_crops_fit_under_the_message_limit_by_downsizing():
    boxes = [(45, 227, 810, 902), (0, 0, 400, 400)]
    skeleton = 5_000

    def size_of(crops):
        return skeleton + sum(len(c.jpeg_b64) for c in crops if c is not None)

    full, report = fit_crops(BUS, boxes, CropConfig(), size_of, None)
    assert report.downsized == report.dropped == 0
    full_size = size_of(full)
    limit = skeleton + (full_size - skeleton) // 3
    crops, report = fit_crops(BUS, boxes, CropConfig(), size_of, limit)
    assert size_of(crops) <= limit
    assert report.downsized == 2 and report.dropped == 0
    assert all(max(c.size) < 768 for c in crops)
    assert max(crops[0].size) >= 300, "shrunk far more than needed"


def test_crops_are_left_out_when_even_small_ones_do_not_fit():
    boxes = [(45, 227, 810, 902), (0, 0, 400, 400)]

    def size_of(crops):
        return 10_000 + sum(len(c.jpeg_b64) for c in crops if c is not None)

    crops, report = fit_crops(BUS, boxes, CropConfig(min_side=200), size_of, 10_500)
    assert crops == [None, None] and report.dropped == 2 and report.downsized == 0
