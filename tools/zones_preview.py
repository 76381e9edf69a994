"""`hazardctl zones preview`: one frame of a camera with its scene drawn on it, so an operator sees at a
glance whether the config fits the view — zones (tinted by kind, named), lane arrows, the
calibration's ground grid (1 m lines, 5 m bold) and its four points, and the detections of that frame
with the zones their ground points are in.

`draw(image, scene, detections) -> image` is pure drawing (hazardctl/scene_draw.py); `grab_frame(source, at_s)` reads
one frame of a video file, stream or image.
"""

from __future__ import annotations

import cv2
import numpy as np

from hazardctl.errors import ConfigError, ServiceUnavailable
from hazardctl.scene_draw import ARROW, BOX, GRID, KIND_COLOURS, Detection, draw  # noqa: F401 -- the tool's API


def grab_frame(source: str, at_s: float = 0.0, open_timeout_s: float = 10.0) -> np.ndarray:
    """One BGR frame: an image file, or the frame at `at_s` seconds of a video file or stream."""
    from pathlib import Path

    if Path(source).suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp", ".webp"}:
        img = cv2.imread(source, cv2.IMREAD_COLOR)
        if img is None:
            raise ConfigError(f"--source {source}: cannot read the image")
        return img
    if "://" not in source and not Path(source).is_file():
        raise ConfigError(f"--source {source}: file not found")
    cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000)])
    try:
        if not cap.isOpened():
            raise ServiceUnavailable(f"--source {source}: cannot open it")
        if at_s > 0 and "://" not in source:
            cap.set(cv2.CAP_PROP_POS_MSEC, at_s * 1000.0)
        ok, img = cap.read()
        if not ok or img is None:
            raise ServiceUnavailable(f"--source {source}: no frame could be read")
        return img
    finally:
        cap.release()


def detect_frame(image: np.ndarray, model: str, classes: list[str] | None, conf: float) -> list[Detection]:
    from stages.detect.backends import load_detector

    det = load_detector(model, device="cpu", conf=conf, iou=0.5, imgsz=640, classes=classes)
    (boxes,) = det.detect([image])
    return [Detection(b.class_name, float(b.confidence), tuple(float(v) for v in b.bbox)) for b in boxes]
