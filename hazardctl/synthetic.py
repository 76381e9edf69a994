"""Synthetic but valid messages for tests, benchmarks and the loadtest's simulated cameras.

Objects move slowly along the frame so groups persist across frames (same track ids, same group
ids) and a group's geometry drifts, as on a real road.
"""

from __future__ import annotations

import base64
import random

from hazardctl.messages import DetectedObject, DetectionResult, DetectorInfo, Group, SpatialFeatures, StageTimes

#: A tiny real JPEG (8x8 grey) so crops decode as images without shipping test data.
TINY_JPEG_B64 = (
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwcKDcp"
    "LDAxNDQ0Hyc5PTgyPC4zNDL/wAALCAAIAAgBAREA/8QAFQABAQAAAAAAAAAAAAAAAAAAAAf/xAAUEAEAAAAAAAAAAAAAAAAA"
    "AAAA/9oACAEBAAA/AKp//9k="
)


def detection(camera_id: str, frame_id: int, ts: float, *, groups: int = 3, crop_bytes: int = 0,
              seed: int | None = None, width: int = 1280, height: int = 720) -> DetectionResult:
    """One frame of one camera with `groups` groups of 2–3 road users each."""
    rng = random.Random(seed if seed is not None else hash((camera_id, frame_id)))
    crop = TINY_JPEG_B64 if crop_bytes == 0 else base64.b64encode(rng.randbytes(crop_bytes)).decode()
    objects: list[DetectedObject] = []
    out_groups: list[Group] = []
    drift = frame_id * 2.0
    for g in range(groups):
        x0, y0 = 100 + g * 350 + drift % 200, 200 + (g % 2) * 200
        members = []
        classes = ["person", "car", "car"][: 2 + (g % 2)]
        for j, cls in enumerate(classes):
            oid = len(objects)
            w, h = (40, 100) if cls == "person" else (160, 90)
            x, y = x0 + j * 70, y0 + j * 10
            objects.append(DetectedObject(object_id=oid, class_name=cls, class_id=0 if cls == "person" else 2,
                                          confidence=round(0.5 + rng.random() * 0.45, 3),
                                          bbox=(x, y, x + w, y + h), track_id=g * 10 + j + 1))
            members.append(oid)
        xs = [objects[m].bbox for m in members]
        box = (min(b[0] for b in xs), min(b[1] for b in xs), max(b[2] for b in xs), max(b[3] for b in xs))
        out_groups.append(Group(
            group_id=f"{camera_id}-g{g + 1}", member_ids=members, bbox=box, classes=classes,
            mean_confidence=round(sum(objects[m].confidence for m in members) / len(members), 3),
            features=SpatialFeatures(density_per_10k_px2=1.2, mean_spacing=70.0, min_spacing=70.0,
                                     vehicle_count=classes.count("car"), pedestrian_count=classes.count("person"),
                                     min_pedestrian_vehicle_distance=70.0),
            crop_jpeg_b64=crop, crop_size=(int(box[2] - box[0]), int(box[3] - box[1])),
        ))
    return DetectionResult(
        message_id=f"{camera_id}:{frame_id}", camera_id=camera_id, frame_id=frame_id, frame_ts=ts,
        frame_width=width, frame_height=height, detector=DetectorInfo(model="synthetic", version="1"),
        objects=objects, groups=out_groups, times=StageTimes(capture=ts, detect=ts + 0.1, published=ts + 0.11),
    )


def risk_result(camera_id: str, group_id: str, frame_id: int, ts: float, *, level: str | None = "high",
                risk_types: list[str] | None = None, description: str | None = None, status: str = "ok",
                crop_b64: str | None = TINY_JPEG_B64, confidence: float | None = 0.8,
                detection_id: str | None = None, task_id: str | None = None):
    """One valid risk-assessment result for `group_id` of frame `frame_id` (capture time `ts`).

    The task id is derived like expand derives it, so the same (frame, group) is the same task.
    """
    from hazardctl.messages import RiskAssessmentResult, task_id_for

    detection_id = detection_id or f"{camera_id}:{frame_id}"
    if risk_types is None:
        risk_types = {"high": ["vehicle-pedestrian conflict"], "medium": ["tailgating"]}.get(level or "", [])
    if description is None:
        description = f"{level} risk: {', '.join(risk_types)}" if risk_types else "normal traffic"
    ok = status == "ok"
    return RiskAssessmentResult(
        task_id=task_id or task_id_for(detection_id, group_id), detection_id=detection_id, camera_id=camera_id,
        group_id=group_id, frame_id=frame_id, frame_ts=ts, status=status, level=level if ok else None,
        risk_types=risk_types if ok else [], description=description if ok else "",
        confidence=confidence if ok else None, key_name="key-01", model="synthetic-vl",
        attempts=1, error_class=None if ok else "timeout", crop_jpeg_b64=crop_b64,
        times=StageTimes(capture=ts, detect=ts + 0.1, published=ts + 0.11, expand=ts + 0.12,
                         dequeue=ts + 0.13, llm_start=ts + 0.14, llm_end=ts + 1.4, result=ts + 1.41),
    )
