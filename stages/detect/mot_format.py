"""MOT-Challenge box files: what `detect --source mot:PATH` replays instead of running a detector.

Pure parsing (no clock, no threads). PATH is a sequence folder (seqinfo.ini with frameRate,
imWidth, imHeight, optional seqLength and name; boxes in gt/gt.txt, else det/det.txt) or a box
file (.txt): then a seqinfo.ini beside it or one folder up is used if there is one, otherwise the
frame rate is --fps and the frame size the extent of the boxes.

One line per box: `frame,id,bb_left,bb_top,bb_width,bb_height[,conf[,class[,visibility[,coco]]]]`,
frames from 1. MOT17 classes: 1 pedestrian, 2 person on vehicle, 7 static person → person;
3 car → car; 4 bicycle → bicycle; 5 motorbike → motorcycle; 6, 8–12 (non-motorized vehicle,
distractor, occluders, reflection) are ignored; -1 or no class column (MOT15/16 and det files,
pedestrians only) → person. An optional 10th column holding a COCO class name (`bus`, `truck`, …;
a number there is MOT15's world coordinate and ignored) overrides the class, so synthetic
scenarios can use every road-user class. `conf` becomes the confidence when in (0, 1]; otherwise
(a gt "consider" flag 0/1, a detector score on another scale) the box gets 1.0. id -1: untracked.

A line that cannot be a box (too few or too many columns, not numbers, frame < 1, non-finite or
huge values, width or height ≤ 0, an unknown class, an id twice in one frame) is returned as a
`BadLine` with its line number: the stage makes it a dead letter; blank lines are skipped.
"""

from __future__ import annotations

import configparser
import math
from dataclasses import dataclass, field
from pathlib import Path

from hazardctl.errors import ConfigError

SCHEME = "mot:"
#: MOT17 class number → COCO class name (None: not a road user we replay)
MOT_CLASSES: dict[int, str | None] = {
    -1: "person", 1: "person", 2: "person", 3: "car", 4: "bicycle", 5: "motorcycle", 6: None, 7: "person",
    8: None, 9: None, 10: None, 11: None, 12: None,
}
#: COCO ids of the names a MOT file can produce (the detector's numbering, so results look alike)
COCO_IDS = {"person": 0, "bicycle": 1, "car": 2, "motorcycle": 3, "airplane": 4, "bus": 5, "train": 6,
            "truck": 7, "boat": 8, "traffic light": 9, "fire hydrant": 10, "stop sign": 11}
MAX_COORD = 1e5
MAX_FRAME = 10_000_000


@dataclass(frozen=True, slots=True)
class MotInfo:
    """Where a MOT sequence's boxes are and how to time them."""

    boxes_path: str
    name: str
    frame_rate: float | None
    """None: not known from a seqinfo.ini (a bare box file; --fps gives it)"""
    width: int | None = None
    height: int | None = None
    length: int | None = None
    """seqLength: frames in the sequence (the file may have none in the last ones)"""


@dataclass(frozen=True, slots=True)
class MotBox:
    frame: int
    track_id: int | None
    class_name: str
    confidence: float
    bbox: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class BadLine:
    line: int
    text: str
    reason: str


@dataclass
class MotSequence:
    """A parsed box file: boxes by frame number, and the lines that were not boxes."""

    frames: dict[int, list[MotBox]] = field(default_factory=dict)
    bad: list[BadLine] = field(default_factory=list)
    ignored: int = 0
    """boxes of classes that are not replayed (occluders, distractors, classes not asked for)"""
    max_id: int = 0
    extent: tuple[float, float] = (0.0, 0.0)
    """largest right and bottom edge seen (frame size of a bare box file)"""

    @property
    def last_frame(self) -> int:
        return max(self.frames, default=0)


def is_mot(uri: str) -> bool:
    return uri.startswith(SCHEME)


def _read_seqinfo(path: Path) -> dict[str, str]:
    cp = configparser.ConfigParser()
    try:
        cp.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a seqinfo.ini ({type(e).__name__})") from None
    if not cp.has_section("Sequence"):
        raise ConfigError(f"{path}: no [Sequence] section")
    return {k.lower(): v for k, v in cp.items("Sequence")}


def _positive(info: dict[str, str], key: str, path: Path, cast=float):
    raw = info.get(key.lower())
    if raw is None:
        return None
    try:
        value = cast(raw)
    except ValueError:
        raise ConfigError(f"{path}: {key}={raw!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{path}: {key}={raw!r} must be > 0")
    return value


def mot_info(uri: str) -> MotInfo:
    """Locate the box file and read seqinfo.ini; a missing file or bad ini is one ConfigError line."""
    raw = uri[len(SCHEME):] if is_mot(uri) else uri
    p = Path(raw)
    if p.is_dir():
        seq = p / "seqinfo.ini"
        if not seq.is_file():
            raise ConfigError(f"--source {uri}: no seqinfo.ini in this folder (or give the box .txt file and --fps)")
        boxes = next((c for c in (p / "gt" / "gt.txt", p / "det" / "det.txt") if c.is_file()), None)
        if boxes is None:
            raise ConfigError(f"--source {uri}: neither gt/gt.txt nor det/det.txt in this folder")
    elif p.is_file():
        boxes = p
        seq = next((c for c in (p.parent / "seqinfo.ini", p.parent.parent / "seqinfo.ini") if c.is_file()), None)
    else:
        raise ConfigError(f"--source {uri}: no such file or folder")
    if seq is None:
        return MotInfo(str(boxes), boxes.stem, None)
    info = _read_seqinfo(seq)
    rate = _positive(info, "frameRate", seq)
    if rate is None:
        raise ConfigError(f"{seq}: frameRate is missing")
    return MotInfo(str(boxes), info.get("name") or seq.parent.name or boxes.stem, rate,
                   _positive(info, "imWidth", seq, int), _positive(info, "imHeight", seq, int),
                   _positive(info, "seqLength", seq, int))


def _number(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"{what} {text!r} is not finite")
    if abs(v) > MAX_COORD:
        raise ValueError(f"{what} {text!r} is out of range")
    return v


def _integer(text: str, what: str) -> int:
    """MOT writers often print integers as floats (`1.0`): accept those, not `1.5`."""
    if not _is_float(text):
        raise ValueError(f"{what} {text!r} is not a number")
    v = float(text)
    if v != int(v) or abs(v) > MAX_FRAME:
        raise ValueError(f"{what} {text!r} is not an integer in range")
    return int(v)


def _is_float(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def parse_line(text: str, classes: frozenset[str] | None) -> MotBox | None:
    """One line as a box; None for a class that is not replayed; ValueError (the reason) for a bad line."""
    cols = [c.strip() for c in text.split(",")]
    if len(cols) < 6 or len(cols) > 10:
        raise ValueError(f"expected 6 to 10 comma-separated columns, got {len(cols)}")
    frame = _integer(cols[0], "frame")
    if not 1 <= frame <= MAX_FRAME:
        raise ValueError(f"frame {cols[0]!r} must be between 1 and {MAX_FRAME}")
    track = _integer(cols[1], "id")
    x, y, w, h = (_number(c, n) for c, n in zip(cols[2:6], ("bb_left", "bb_top", "bb_width", "bb_height")))
    if w <= 0 or h <= 0:
        raise ValueError(f"bb_width and bb_height must be > 0, got {w:g} × {h:g}")
    conf = _number(cols[6], "conf") if len(cols) > 6 and cols[6] else 1.0
    name: str | None = "person"
    if len(cols) > 7 and cols[7]:
        cls = _integer(cols[7], "class")
        if cls not in MOT_CLASSES:
            raise ValueError(f"class {cls} is not a MOT class (1–12, or -1)")
        name = MOT_CLASSES[cls]
    if len(cols) > 8 and cols[8]:
        _number(cols[8], "visibility")
    if len(cols) > 9 and cols[9] and not _is_float(cols[9]):
        coco = cols[9].strip().strip('"').lower()
        if coco not in COCO_IDS:
            raise ValueError(f"class name {cols[9]!r} is not one of {', '.join(COCO_IDS)}")
        name = coco
    if name is None or (classes is not None and name not in classes):
        return None
    return MotBox(frame, track if track >= 0 else None, name, conf if 0.0 < conf <= 1.0 else 1.0,
                  (x, y, x + w, y + h))


def parse_boxes(lines, classes: frozenset[str] | None = None) -> MotSequence:
    """Every line of a box file (an iterable of str); bad lines kept with their 1-based numbers."""
    seq = MotSequence()
    seen: set[tuple[int, int]] = set()
    right = bottom = 0.0
    for n, text in enumerate(lines, start=1):
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        try:
            box = parse_line(text, classes)
        except ValueError as e:
            seq.bad.append(BadLine(n, text, str(e)))
            continue
        if box is None:
            seq.ignored += 1
            continue
        if box.track_id is not None:
            if (box.frame, box.track_id) in seen:
                seq.bad.append(BadLine(n, text, f"id {box.track_id} appears twice in frame {box.frame}"))
                continue
            seen.add((box.frame, box.track_id))
            seq.max_id = max(seq.max_id, box.track_id)
        seq.frames.setdefault(box.frame, []).append(box)
        right, bottom = max(right, box.bbox[2]), max(bottom, box.bbox[3])
    seq.extent = (right, bottom)
    return seq
