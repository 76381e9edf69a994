"""Where things are in one camera's view: named zones, lane directions and the ground calibration.

Pure geometry (numpy, supervision's PolygonZone, OpenCV's homography; no clock, no I/O). Public API:

* `SceneConfig` — the `zones:`, `calibration:`, `frame_size:` and `scene_cues:` of one camera in
  config/cameras.yaml (pydantic), and `build_scene(camera_id, raw, frame_size) -> Scene`, which
  validates them into one `ConfigError` line naming the camera and the zone (exit 2, before any
  camera opens): a polygon with < 3 points, self-intersecting or outside the frame; an unknown
  kind; a zero-length lane arrow; a calibration whose points are collinear or whose homography is
  degenerate.
* `Scene.for_frame(w, h)` — the scene in the pixels of the frames that actually arrive (pixel
  coordinates are scaled when the stream's size differs from `frame_size`);
  `Scene.membership(bboxes, classes) -> (n_objects, n_zones) bool` — which zones each road user
  is in, by the bottom-centre of its box (where it touches the ground), with supervision's
  `PolygonZone`; a zone with `classes` only holds those classes.
* `Calibration` — four image points and their ground coordinates in metres → a homography;
  `ground(points)`, `speed_kmh(point, velocity)`, `distance_m(a, b)`.

Coordinates: a polygon (or arrow, or calibration point) whose numbers are all within [0, 1] is in
fractions of the frame; otherwise pixels of `frame_size` (required then, except for MOT replays,
whose seqinfo.ini gives it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hazardctl.errors import ConfigError

ZoneKind = Literal["roadway", "crosswalk", "sidewalk", "ignore", "custom"]
KINDS: tuple[str, ...] = ("roadway", "crosswalk", "sidewalk", "ignore", "custom")
Point = tuple[float, float]


class ZoneSpec(BaseModel):
    """One named polygon of a camera (config/cameras.yaml)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    kind: ZoneKind
    polygon: list[Point]
    classes: list[str] | None = Field(default=None, description="only these classes are in the zone")
    direction: tuple[Point, Point] | None = Field(
        default=None, description="roadways: the lane's direction of travel, an arrow from the first point to the second")


class CalibrationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: list[Point] = Field(description="four points in the image (pixels or fractions)")
    ground: list[Point] = Field(description="the same four points on the ground, metres")

    @field_validator("image", "ground")
    @classmethod
    def _four(cls, v: list[Point]) -> list[Point]:
        if len(v) != 4:
            raise ValueError(f"needs exactly 4 points, got {len(v)}")
        return v


class SceneCueConfig(BaseModel):
    """Thresholds of the zone cues (hazardctl/zone_cues.py); real units apply when calibrated."""

    model_config = ConfigDict(extra="forbid")

    wrong_way_frames: int = Field(default=3, ge=1, description="analysed frames in a row against the lane")
    wrong_way_angle_deg: float = Field(default=120.0, gt=90, le=180,
                                       description="heading this far from the lane's direction is against it")
    wrong_way_min_px_s: float = Field(default=20.0, ge=0, description="uncalibrated: slower is not driving")
    wrong_way_min_kmh: float = Field(default=8.0, ge=0, description="calibrated: slower is not driving")
    stopped_s: float = Field(default=30.0, gt=0, description="stopped in a roadway this long is a cue")
    stopped_kmh: float = Field(default=2.0, ge=0, description="calibrated: slower than this is stopped")


class SceneConfig(BaseModel):
    """What cameras.yaml may say about a camera's scene (all optional)."""

    model_config = ConfigDict(extra="forbid")

    frame_size: tuple[int, int] | None = None
    zones: list[dict] = Field(default_factory=list)
    calibration: dict | None = None
    scene_cues: dict | None = None


# --- geometry -------------------------------------------------------------------------------------

def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def _segments_cross(p1, p2, q1, q2) -> bool:
    """Proper or touching intersection of two segments (collinear overlap included)."""
    d1, d2 = _cross(q1, q2, p1), _cross(q1, q2, p2)
    d3, d4 = _cross(p1, p2, q1), _cross(p1, p2, q2)
    if ((d1 > 0) != (d2 > 0)) and ((d3 > 0) != (d4 > 0)) and 0 not in (d1, d2, d3, d4):
        return True

    def on(a, b, c, d) -> bool:
        return d == 0 and min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])

    return on(q1, q2, p1, d1) or on(q1, q2, p2, d2) or on(p1, p2, q1, d3) or on(p1, p2, q2, d4)


def self_intersects(poly: np.ndarray) -> bool:
    """Do two non-adjacent edges of the closed polygon meet (a bow tie, a figure eight)?"""
    n = len(poly)
    edges = [(poly[i], poly[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # neighbours share a vertex
            if _segments_cross(*edges[i], *edges[j]):
                return True
    return False


def polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _is_fraction(points: np.ndarray) -> bool:
    return bool(points.size) and float(points.min()) >= 0.0 and float(points.max()) <= 1.0


# --- calibration ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Calibration:
    """Image pixels ↔ ground metres on the road plane, from four point pairs (a homography)."""

    image: np.ndarray
    """(4, 2) pixels"""
    ground: np.ndarray
    """(4, 2) metres"""
    h: np.ndarray = field(repr=False)
    """3×3, image → ground"""

    @classmethod
    def from_points(cls, image: np.ndarray, ground: np.ndarray) -> Calibration:
        """ValueError when three of either set of points are collinear or the homography is degenerate."""
        import cv2

        image, ground = np.asarray(image, np.float64), np.asarray(ground, np.float64)
        for name, pts in (("image", image), ("ground", ground)):
            scale = max(1e-9, float(np.ptp(pts, axis=0).max()))
            for skip in range(4):
                a, b, c = (pts[k] for k in range(4) if k != skip)
                if abs(_cross(a, b, c)) <= 1e-6 * scale * scale:
                    raise ValueError(f"calibration: three {name} points are collinear (a homography needs four "
                                     "points, no three on one line)")
        h = cv2.getPerspectiveTransform(image.astype(np.float32), ground.astype(np.float32)).astype(np.float64)
        if not np.isfinite(h).all() or abs(np.linalg.det(h)) < 1e-12 or np.linalg.cond(h) > 1e12:
            raise ValueError("calibration: the four points give a degenerate homography")
        back = cls._apply(h, image)
        if not np.allclose(back, ground, atol=1e-3 * max(1.0, float(np.abs(ground).max()))):
            raise ValueError("calibration: the four points give a degenerate homography")
        return cls(image, ground, h)

    @staticmethod
    def _apply(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        hom = np.hstack([pts, np.ones((len(pts), 1))]) @ h.T
        with np.errstate(divide="ignore", invalid="ignore"):
            return hom[:, :2] / hom[:, 2:3]

    def ground_of(self, pts) -> np.ndarray:
        """Ground metres of image points (n, 2)."""
        return self._apply(self.h, pts)

    def image_of(self, ground_pts) -> np.ndarray:
        """Image pixels of ground points (the inverse homography; the preview draws the grid with it)."""
        return self._apply(np.linalg.inv(self.h), ground_pts)

    def speed_kmh(self, point: Point, velocity: tuple[float, float], dt: float = 0.1) -> float | None:
        """Ground speed of something at image `point` moving at `velocity` px/s (central difference
        of the homography over ±dt/2, exact enough for the lengths a frame spans)."""
        p, v = np.asarray(point, np.float64), np.asarray(velocity, np.float64)
        a, b = self.ground_of(np.stack([p - v * dt / 2, p + v * dt / 2]))
        d = float(np.hypot(*(b - a))) / dt * 3.6
        return d if math.isfinite(d) else None

    def distance_m(self, a: Point, b: Point) -> float | None:
        pa, pb = self.ground_of(np.array([a, b], np.float64))
        d = float(np.hypot(*(pb - pa)))
        return d if math.isfinite(d) else None

    def scaled(self, sx: float, sy: float) -> Calibration:
        return Calibration.from_points(self.image * [sx, sy], self.ground)


# --- zones and the scene --------------------------------------------------------------------------

@dataclass(frozen=True)
class Zone:
    name: str
    kind: str
    polygon: np.ndarray
    """(n, 2) pixels"""
    classes: frozenset[str] | None = None
    direction: tuple[float, float] | None = None
    """unit vector of the lane's travel, image coordinates (+y is down)"""
    arrow: np.ndarray | None = None
    """(2, 2) pixels: the configured arrow (drawn by the preview)"""


def footpoints(bboxes: np.ndarray) -> np.ndarray:
    """Bottom centre of each box: where a road user touches the ground."""
    b = np.asarray(bboxes, np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2.0, b[:, 3]], axis=1)


@dataclass(frozen=True)
class Scene:
    """One camera's zones, calibration and cue thresholds, in the pixels of `frame_size`."""

    camera_id: str
    frame_size: tuple[int, int]
    zones: tuple[Zone, ...] = ()
    calibration: Calibration | None = None
    cues: SceneCueConfig = field(default_factory=SceneCueConfig)

    def for_frame(self, width: int, height: int) -> Scene:
        """The scene for frames of this size (the configured pixels scaled to them)."""
        if (width, height) == self.frame_size:
            return self
        sx, sy = width / self.frame_size[0], height / self.frame_size[1]
        zones = tuple(Zone(z.name, z.kind, z.polygon * [sx, sy], z.classes,
                           _unit((z.arrow[1] - z.arrow[0]) * [sx, sy]) if z.arrow is not None else None,
                           None if z.arrow is None else z.arrow * [sx, sy]) for z in self.zones)
        cal = self.calibration.scaled(sx, sy) if self.calibration is not None else None
        return Scene(self.camera_id, (width, height), zones, cal, self.cues)

    def membership(self, bboxes, classes: list[str]) -> np.ndarray:
        """(n_objects, n_zones) bool: object i's footpoint is in zone j (and j admits its class)."""
        import supervision as sv

        n = len(classes)
        out = np.zeros((n, len(self.zones)), dtype=bool)
        if n == 0 or not self.zones:
            return out
        det = sv.Detections(xyxy=np.asarray(bboxes, np.float64).reshape(-1, 4))
        for j, z in enumerate(self._polygon_zones()):
            hit = z.trigger(det)
            zone = self.zones[j]
            if zone.classes is not None:
                hit &= np.array([c in zone.classes for c in classes], dtype=bool)
            out[:, j] = hit
        return out

    def _polygon_zones(self):
        cached = self.__dict__.get("_pz")
        if cached is None:
            import supervision as sv

            cached = [sv.PolygonZone(np.rint(z.polygon).astype(np.int64), triggering_anchors=(sv.Position.BOTTOM_CENTER,))
                      for z in self.zones]
            object.__setattr__(self, "_pz", cached)
        return cached


def _unit(v: np.ndarray) -> tuple[float, float] | None:
    n = float(np.hypot(*v))
    return None if n == 0 else (float(v[0]) / n, float(v[1]) / n)


def _to_px(points: list[Point], size: tuple[int, int] | None, what: str) -> np.ndarray:
    arr = np.asarray(points, np.float64).reshape(-1, 2)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: coordinates must be finite numbers")
    if _is_fraction(arr):
        if size is None:
            return arr  # fractions without a size are scaled by for_frame (size (1, 1))
        return arr * [size[0], size[1]]
    if size is None:
        raise ValueError(f"{what} is in pixels: give the camera's frame_size: [width, height] (or use 0-1 fractions)")
    return arr


def _first_line(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def build_scene(camera_id: str, cfg: SceneConfig, frame_size: tuple[int, int] | None = None) -> Scene | None:
    """The camera's Scene, or None when it configures none; ConfigError naming camera and zone."""
    if not cfg.zones and cfg.calibration is None and cfg.scene_cues is None:
        return None
    size = cfg.frame_size or frame_size
    if size is not None and (size[0] <= 0 or size[1] <= 0):
        raise ConfigError(f"camera {camera_id}: frame_size {list(size)}: must be positive")
    zones: list[Zone] = []
    for i, raw in enumerate(cfg.zones):
        name = raw.get("name") if isinstance(raw, dict) else None
        where = f"camera {camera_id}, zone {name or f'#{i + 1}'}"
        try:
            spec = ZoneSpec.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            if err["loc"] and err["loc"][0] == "kind":
                raise ConfigError(f"{where}: unknown kind {raw.get('kind')!r} (one of {', '.join(KINDS)})") from None
            raise ConfigError(f"{where}: {_first_line(e)}") from None
        if spec.name in {z.name for z in zones}:
            raise ConfigError(f"{where}: the name is used twice")
        try:
            zones.append(_zone(spec, size))
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    cal = None
    if cfg.calibration is not None:
        where = f"camera {camera_id}, calibration"
        try:
            spec_c = CalibrationSpec.model_validate(cfg.calibration)
            cal = Calibration.from_points(_to_px(spec_c.image, size, "calibration image points"),
                                          np.asarray(spec_c.ground, np.float64))
        except ValidationError as e:
            raise ConfigError(f"{where}: {_first_line(e)}") from None
        except ValueError as e:
            raise ConfigError(f"{where}: {str(e).removeprefix('calibration: ')}") from None
    try:
        cues = SceneCueConfig.model_validate(cfg.scene_cues or {})
    except ValidationError as e:
        raise ConfigError(f"camera {camera_id}, scene_cues: {_first_line(e)}") from None
    return Scene(camera_id, tuple(size) if size else (1, 1), tuple(zones), cal, cues)  # type: ignore[arg-type]


def _zone(spec: ZoneSpec, size: tuple[int, int] | None) -> Zone:
    if len(spec.polygon) < 3:
        raise ValueError(f"polygon has {len(spec.polygon)} points; a zone needs at least 3")
    poly = _to_px(spec.polygon, size, "polygon")
    if size is not None:
        w, h = size
        if (poly[:, 0] < 0).any() or (poly[:, 1] < 0).any() or (poly[:, 0] > w).any() or (poly[:, 1] > h).any():
            raise ValueError(f"polygon lies (partly) outside the {w}x{h} frame")
    scale = max(1.0, float(np.ptp(poly, axis=0).max()))
    if polygon_area(poly) > 1e-9 * scale * scale and self_intersects(poly):
        raise ValueError("polygon intersects itself (order its points around the edge)")
    if polygon_area(poly) <= 1e-9 * scale * scale:
        if len(poly) >= 4 and self_intersects(poly):  # a symmetric bow tie has zero signed area
            raise ValueError("polygon intersects itself (order its points around the edge)")
        raise ValueError("polygon has no area (its points are on one line)")
    direction = arrow = None
    if spec.direction is not None:
        if spec.kind != "roadway":
            raise ValueError("only a roadway has a lane direction")
        arrow = _to_px(list(spec.direction), size, "direction")
        direction = _unit(arrow[1] - arrow[0])
        if direction is None or float(np.hypot(*(arrow[1] - arrow[0]))) < 1e-6 * max(1.0, scale):
            raise ValueError("the lane direction arrow has zero length (its two points are the same)")
    classes = frozenset(spec.classes) if spec.classes is not None else None
    return Zone(spec.name, spec.kind, poly, classes, direction, arrow)
