"""Test scenes for detect: real people cut out of tests/data/bus.jpg, walking across a grey road.

Five pedestrians walk right together; from frame 30 on the last two walk faster and leave the
others. The ground truth (each person's box in every frame) comes with the video, so a test can
check the groups the real detector + grouping found against what really happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DATA = Path(__file__).resolve().parent / "data"
#: people in bus.jpg (x1, y1, x2, y2), found by the COCO CenterNet detector
BUS_PEOPLE = [(45, 396, 221, 902), (223, 405, 339, 865), (685, 370, 810, 880)]
HEIGHT, WIDTH = 720, 1280
PERSON_H = 240
ROAD_GREY = 110
SPLIT_FROM = 30


def people() -> list[np.ndarray]:
    bus = cv2.imread(str(DATA / "bus.jpg"))
    assert bus is not None, "tests/data/bus.jpg is missing"
    cuts = [bus[y1:y2, x1:x2] for x1, y1, x2, y2 in BUS_PEOPLE]
    cuts = [cv2.resize(c, (round(c.shape[1] * PERSON_H / c.shape[0]), PERSON_H), interpolation=cv2.INTER_AREA)
            for c in cuts]
    return [cuts[0], cuts[1], cuts[2], cv2.flip(cuts[0], 1), cv2.flip(cuts[1], 1)]


@dataclass
class Walk:
    frames: list[np.ndarray]
    truth: list[list[tuple[float, float, float, float]]]
    """per frame, per person: the pasted box"""
    fps: int

    def gap(self, frame: int) -> float:
        """Gap between the group that stays (persons 0-2) and the one that leaves (3-4)."""
        return self.truth[frame][3][0] - self.truth[frame][2][2]


def walk(n_frames: int = 80, fps: int = 10, y: int = 300) -> Walk:
    cuts = people()
    x0 = [40.0]
    for c in cuts[:-1]:
        x0.append(x0[-1] + c.shape[1] + 15)
    frames, truth = [], []
    for t in range(n_frames):
        common = 4 * min(t, SPLIT_FROM) + 2 * max(0, t - SPLIT_FROM)
        fast = 4 * min(t, SPLIT_FROM) + 10 * max(0, t - SPLIT_FROM)
        xs = [x + (common if i < 3 else fast) for i, x in enumerate(x0)]
        img = np.full((HEIGHT, WIDTH, 3), ROAD_GREY, np.uint8)
        cv2.line(img, (0, y + PERSON_H + 20), (WIDTH, y + PERSON_H + 20), (200, 200, 200), 4)  # kerb
        boxes = []
        for c, x in zip(cuts, xs):
            xi = int(round(x))
            img[y:y + PERSON_H, xi:xi + c.shape[1]] = c
            boxes.append((float(xi), float(y), float(xi + c.shape[1]), float(y + PERSON_H)))
        frames.append(img)
        truth.append(boxes)
    return Walk(frames, truth, fps)


def write_video(w: Walk, path: Path) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), w.fps, (WIDTH, HEIGHT))
    assert vw.isOpened(), "cv2.VideoWriter cannot write mp4v"
    for f in w.frames:
        vw.write(f)
    vw.release()
    return path


def write_jpegs(w: Walk, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(w.frames):
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), f, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def who(bbox, truth_boxes, min_iou: float = 0.5) -> int | None:
    """Which person of the ground truth a detected box is (None: nobody)."""
    best = max(range(len(truth_boxes)), key=lambda i: iou(bbox, truth_boxes[i]))
    return best if iou(bbox, truth_boxes[best]) >= min_iou else None
