"""MOT replays with a scene (issue 19): box files whose road users move under simple physics, and the
cameras.yaml that gives their camera zones, lane directions and a calibration.

The street (1280x720): an eastbound roadway (y 300-420, lane arrow pointing right), a crosswalk
across it (x 900-1000), the sidewalk south of it (y 420-560), an ignore zone top right (a billboard
whose printed people a detector sees)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

W, H = 1280, 720
ROADWAY = [[0, 300], [1280, 300], [1280, 420], [0, 420]]
CROSSWALK = [[900, 300], [1000, 300], [1000, 420], [900, 420]]
SIDEWALK = [[0, 420], [1280, 420], [1280, 560], [0, 560]]
BILLBOARD = [[1000, 20], [1260, 20], [1260, 200], [1000, 200]]
STREET_ZONES = [
    {"name": "eastbound", "kind": "roadway", "polygon": ROADWAY, "direction": [[100, 360], [600, 360]]},
    {"name": "school-crossing", "kind": "crosswalk", "polygon": CROSSWALK},
    {"name": "south-pavement", "kind": "sidewalk", "polygon": SIDEWALK},
    {"name": "billboard", "kind": "ignore", "polygon": BILLBOARD},
]
CAR = (120.0, 60.0)
PERSON = (24.0, 60.0)


@dataclass
class Track:
    track_id: int
    cls: str
    size: tuple[float, float]
    foot: callable  # t -> (x, y) of the bottom centre, or None when not in view
    scale: callable = None  # t -> box scale (perspective), default 1


def write(folder: Path, tracks: list[Track], seconds: float, fps: float = 2.0, jitter_px: float = 0.0,
          seed: int = 19) -> Path:
    """A MOT sequence folder (seqinfo.ini + gt/gt.txt, COCO names in column 10); frame k at (k-1)/fps;
    each box edge moved by uniform noise of ±jitter_px (a detector's box jitter)."""
    (folder / "gt").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps)) + 1
    lines = []
    for k in range(1, n + 1):
        t = (k - 1) / fps
        for tr in tracks:
            p = tr.foot(t)
            if p is None:
                continue
            s = tr.scale(t) if tr.scale else 1.0
            w, h = tr.size[0] * s, tr.size[1] * s
            x1, y1, x2, y2 = np.array([p[0] - w / 2, p[1] - h, p[0] + w / 2, p[1]]) + rng.uniform(-1, 1, 4) * jitter_px
            lines.append(f"{k},{tr.track_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,-1,1,{tr.cls}")
    (folder / "gt" / "gt.txt").write_text("\n".join(lines) + "\n")
    (folder / "seqinfo.ini").write_text(f"[Sequence]\nname={folder.name}\nframeRate={fps:g}\nseqLength={n}\n"
                                        f"imWidth={W}\nimHeight={H}\n")
    return folder


def cameras_yaml(path: Path, camera_id: str, source: str, zones=None, **extra) -> Path:
    cam = {"id": camera_id, "source": source, **({"zones": zones} if zones is not None else {}), **extra}
    path.write_text(yaml.safe_dump({"cameras": [cam]}, sort_keys=False))
    return path


def linear(start: tuple[float, float], velocity: tuple[float, float], t0: float = 0.0, t1: float = 1e9):
    """Bottom centre moving at constant velocity (px/s) from `start` at t0, in view between t0 and t1."""
    def at(t: float):
        if t < t0 - 1e-9 or t > t1 + 1e-9:
            return None
        return (start[0] + velocity[0] * (t - t0), start[1] + velocity[1] * (t - t0))
    return at


def still(p: tuple[float, float]):
    return lambda t: p


# --- a calibrated camera looking down a road -------------------------------------------------------
#: image trapezoid of a 10 m wide, 40 m long stretch of road (the far end is narrower: perspective)
CAL_IMAGE = [[500, 250], [780, 250], [1180, 700], [100, 700]]
CAL_GROUND = [[0, 40], [10, 40], [10, 0], [0, 0]]


def ground_to_image():
    import cv2

    h = cv2.getPerspectiveTransform(np.float32(CAL_GROUND), np.float32(CAL_IMAGE))
    def f(x: float, y: float) -> tuple[float, float]:
        v = h @ np.array([x, y, 1.0])
        return float(v[0] / v[2]), float(v[1] / v[2])
    return f
