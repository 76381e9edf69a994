"""Frames over time for the model (issue 19.4): earlier crops of a group's region, within a token budget.

One ring of whole frames per *camera* (not per group), about `spacing_s` apart: a group seen for the
first time still has a past (its road users were in the earlier frames before they were close enough
to group), and cutting the group's *current* region out of each earlier frame shows the motion in
the same window. Memory: `count` frames per camera (three 1080p frames ≈ 18 MB).

Which groups get frames is decided in detect (stages/detect/scene.py) by a shadow of expand's gate —
the same pure `hazardctl.gating.decide` with its default settings — so the groups expand will send as
`new` or `suspect` carry them and no others; when expand runs other settings and sends a group with
frames as `changed` or `refresh`, it strips them (stages/expand/tasks.py): frames never ride on
refreshes. (detect cannot know expand's decision for sure; expand cannot add frames it never got.)

Token budget: Qwen-VL bills one token per 28×28 px patch. The task's images together (the latest
crop, which detect already carries, plus these) stay within `token_budget` (default 1024): a 768×432
latest crop is 28×16 = 448 tokens, two earlier crops at ≤ 448 px are 16×9 = 144 each (16×16 = 256
for a square region), a 4:3 thumbnail at 448 px is 16×12 = 192: 928 tokens. When the latest crop
leaves less room, the earlier images shrink together (never below 112 px, 4 patches a side; below
that they are left out).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from stages.detect.crops import Crop, CropConfig, crop_region, encode_crop

PATCH_PX = 28
MIN_SIDE = 4 * PATCH_PX


@dataclass(frozen=True, slots=True)
class FramesConfig:
    count: int = 3
    """images of the group's region per task, the latest crop included (1: no earlier frames)"""
    spacing_s: float = 1.0
    """seconds between them"""
    thumbnail: bool = False
    """also a downscaled whole frame (the latest), for context: signal heads, lanes, the junction"""
    max_side: int = 448
    """longest side of an earlier crop and of the thumbnail, px"""
    token_budget: int = 1024
    """image tokens per task, all images (28×28 px patches)"""
    jpeg_quality: int = 80

    @property
    def enabled(self) -> bool:
        return self.count > 1 or self.thumbnail


def image_tokens(w: int, h: int) -> int:
    return math.ceil(max(1, w) / PATCH_PX) * math.ceil(max(1, h) / PATCH_PX)


def fit_side(w: int, h: int, max_side: int, max_tokens: int) -> int:
    """The longest side (≤ max_side, ≤ the region's own) at which a w×h region costs at most `max_tokens`;
    0: it does not fit even at MIN_SIDE (or, for a smaller region, at its own size)."""
    side = min(max_side, max(w, h))
    if side < MIN_SIDE:  # a small region: at its own size if that fits, never enlarged
        return side if image_tokens(w, h) <= max_tokens else 0
    while side >= MIN_SIDE:
        s = side / max(w, h)
        if image_tokens(max(1, round(w * s)), max(1, round(h * s))) <= max_tokens:
            return side
        side = int(side * 0.9)
    return 0


class FrameHistory:
    """The last few frames of one camera, about `spacing_s` apart (pure: times are passed in)."""

    def __init__(self, cfg: FramesConfig):
        self.cfg = cfg
        self._frames: deque[tuple[float, np.ndarray]] = deque()

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, ts: float, image: np.ndarray) -> None:
        """Keep this frame if it is ≥ 0.75 × spacing after the last kept one; drop what is too old."""
        cfg = self.cfg
        if self._frames and ts <= self._frames[-1][0]:
            if ts < self._frames[-1][0] - cfg.spacing_s * cfg.count:
                self._frames.clear()  # the clock went back (a replay looped): the old frames are another time
            else:
                return
        if self._frames and ts - self._frames[-1][0] < 0.75 * cfg.spacing_s:
            return
        self._frames.append((ts, image))
        horizon = ts - cfg.spacing_s * (cfg.count - 1) - cfg.spacing_s
        while self._frames and self._frames[0][0] < horizon:
            self._frames.popleft()

    def pick(self, ts: float) -> list[tuple[float, np.ndarray]]:
        """(offset s, image) of the earlier frames nearest ts − k × spacing (k = count−1 … 1), each
        within half a spacing of its target, oldest first, none used twice."""
        cfg, out, used = self.cfg, [], set()
        for k in range(cfg.count - 1, 0, -1):
            target = ts - k * cfg.spacing_s
            best = None
            for idx, (t, _) in enumerate(self._frames):
                if idx in used or t >= ts or abs(t - target) > cfg.spacing_s / 2:
                    continue
                if best is None or abs(t - target) < abs(self._frames[best][0] - target):
                    best = idx
            if best is not None:
                used.add(best)
                t, img = self._frames[best]
                out.append((t - ts, img))
        return out


@dataclass(slots=True)
class FrameImage:
    offset_s: float
    kind: str
    crop: Crop


def group_frames(history: FrameHistory, ts: float, image: np.ndarray, bbox, latest_size: tuple[int, int] | None,
                 crops: CropConfig) -> list[FrameImage]:
    """The earlier crops of `bbox`'s region (and the thumbnail), sized so that all the task's images,
    the latest crop (`latest_size`) included, fit the token budget."""
    cfg = history.cfg
    past = history.pick(ts)
    h, w = image.shape[:2]
    region = crop_region(bbox, w, h, crops)
    rw, rh = region[2] - region[0], region[3] - region[1]
    n = len(past) + (1 if cfg.thumbnail else 0)
    if n == 0:
        return []
    room = cfg.token_budget - (image_tokens(*latest_size) if latest_size else 0)
    share = room // n
    out = []
    side = fit_side(rw, rh, cfg.max_side, share)
    if side:
        for offset, old in past:
            if old.shape[:2] != (h, w):
                continue  # the stream changed size: that region is not the same place
            out.append(FrameImage(round(offset, 3), "crop", encode_crop(old, region, side, cfg.jpeg_quality)))
    if cfg.thumbnail:
        tside = fit_side(w, h, cfg.max_side, share)
        if tside:
            out.append(FrameImage(0.0, "context", encode_crop(image, (0, 0, w, h), tside, cfg.jpeg_quality)))
    return out


#: JSON around one frame's base64 (`{"offset_s":-2.0,"kind":"crop","jpeg_b64":"","size":[448,252]}` + a comma)
FRAME_JSON_OVERHEAD = 96


def fit_frames(groups, base_bytes: int, max_bytes: int) -> int:
    """Leave out whole groups' frames, largest first, until the message (`base_bytes` without frames) fits
    under `max_bytes`; returns how many frames were left out (`group.frames` set to None)."""
    def size(g) -> int:
        return sum(len(f.jpeg_b64) + FRAME_JSON_OVERHEAD for f in g.frames)

    framed = [g for g in groups if g.frames]
    total = base_bytes + sum(size(g) for g in framed)
    dropped = 0
    while total > max_bytes and framed:
        g = max(framed, key=size)
        total -= size(g)
        dropped += len(g.frames)
        g.frames = None
        framed.remove(g)
    return dropped
