"""The scene drawn on a frame — zones (tinted by kind, named), lane arrows, the calibration's ground grid
(1 m lines, 5 m bold) and its four points, and detections with the zones their ground points are in.

Pure drawing (OpenCV), shared by `hazardctl zones preview` (tools/zones_preview.py) and detect's camera
snapshots (stages/detect/camera_status.py), so the page shows the overlay the preview showed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from hazardctl.zones import Scene, footpoints

#: BGR tint per zone kind
KIND_COLOURS = {"roadway": (200, 90, 30), "crosswalk": (255, 255, 255), "sidewalk": (80, 200, 80),
                "ignore": (60, 60, 220), "custom": (220, 160, 40)}
ARROW = (255, 0, 255)
GRID = (255, 200, 0)
BOX = (40, 255, 255)


@dataclass
class Detection:
    class_name: str
    confidence: float
    bbox: tuple[float, float, float, float]


def _label(img: np.ndarray, text: str, org: tuple[int, int], colour=(255, 255, 255), scale: float = 0.5) -> None:
    x, y = org
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(img, (x - 2, y - th - 4), (x + tw + 2, y + 3), (0, 0, 0), -1)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def draw(image: np.ndarray, scene: Scene, detections: list[Detection] = ()) -> tuple[np.ndarray, list[list[str]]]:
    """(the annotated copy, the zone names of each detection's ground point)."""
    h, w = image.shape[:2]
    scene = scene.for_frame(w, h)
    out = image.copy()
    tint = image.copy()
    for z in scene.zones:
        cv2.fillPoly(tint, [np.rint(z.polygon).astype(np.int32)], KIND_COLOURS.get(z.kind, (200, 0, 200)))
    out = cv2.addWeighted(tint, 0.35, out, 0.65, 0)
    for z in scene.zones:
        pts = np.rint(z.polygon).astype(np.int32)
        cv2.polylines(out, [pts], True, KIND_COLOURS.get(z.kind, (200, 0, 200)), 2, cv2.LINE_AA)
        if z.arrow is not None:
            a, b = (tuple(int(round(v)) for v in p) for p in z.arrow)
            cv2.arrowedLine(out, a, b, ARROW, 4, cv2.LINE_AA, tipLength=0.08)
        cx, cy = pts.mean(axis=0)
        _label(out, f"{z.name} ({z.kind})", (int(cx) - 40, int(cy)))
    cal = scene.calibration
    if cal is not None:
        _grid(out, cal)
        for k, p in enumerate(cal.image):
            c = (int(round(p[0])), int(round(p[1])))
            cv2.circle(out, c, 7, GRID, -1, cv2.LINE_AA)
            g = cal.ground[k]
            _label(out, f"({g[0]:g}, {g[1]:g}) m", (c[0] + 8, c[1] - 8), GRID, 0.45)
    zones_of: list[list[str]] = []
    if detections:
        inside = scene.membership([d.bbox for d in detections], [d.class_name for d in detections])
        feet = footpoints([d.bbox for d in detections])
        for i, d in enumerate(detections):
            names = [z.name for j, z in enumerate(scene.zones) if inside[i, j]]
            zones_of.append(names)
            x1, y1, x2, y2 = (int(round(v)) for v in d.bbox)
            cv2.rectangle(out, (x1, y1), (x2, y2), BOX, 2)
            cv2.circle(out, (int(feet[i][0]), int(feet[i][1])), 4, (0, 0, 255), -1)
            _label(out, f"{d.class_name} {d.confidence:.2f}" + (f" [{', '.join(names)}]" if names else ""),
                   (x1, max(12, y1 - 4)), BOX, 0.45)
    return out, zones_of


def _grid(img: np.ndarray, cal) -> None:
    """Ground lines every metre over the calibrated quadrilateral (bold every 5 m)."""
    g = cal.ground
    x0, y0 = np.floor(g.min(axis=0)).astype(int)
    x1, y1 = np.ceil(g.max(axis=0)).astype(int)
    if (x1 - x0) * (y1 - y0) > 200 * 200:  # a huge area in metres: draw every 5 m only
        step = 5
    else:
        step = 1
    for x in range(x0, x1 + 1, step):
        _polyline(img, cal, [(x, y0 + (y1 - y0) * k / 20) for k in range(21)], bold=x % 5 == 0)
    for y in range(y0, y1 + 1, step):
        _polyline(img, cal, [(x0 + (x1 - x0) * k / 20, y) for k in range(21)], bold=y % 5 == 0)


def _polyline(img: np.ndarray, cal, ground_pts, bold: bool) -> None:
    pts = cal.image_of(np.array(ground_pts, np.float64))
    ok = np.isfinite(pts).all(axis=1) & (np.abs(pts) < 1e5).all(axis=1)
    pts = np.rint(pts[ok]).astype(np.int32)
    if len(pts) >= 2:
        cv2.polylines(img, [pts], False, GRID, 2 if bold else 1, cv2.LINE_AA)
