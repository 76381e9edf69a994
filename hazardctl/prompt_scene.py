"""What the model is told about the scene (issue 19): the images over time, zones, ground units.

`scene_images(task)` are the request's images in the order the text names them: the earlier crops
of the group's region (oldest first), the latest crop (the frame the boxes refer to), then the
whole-frame thumbnail. `describe_scene(task, language)` is the section added to the prompt when the
task carries frames, zones or calibrated values: each image's time offset, each member's zones and the
group's zone cues, ground speeds (km/h) and the worst pair's distance (m). A task with none of these
gets no section, so its prompt and version are unchanged; one with it has its own version (`SCENE_VERSION`,
the wording's hash, joins it: hazardctl.prompt.prompt_for_task).
"""

from __future__ import annotations

import hashlib

from hazardctl.messages import AssessmentTask

SCENE_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "head": "Scene:",
        "images": "- the images are in time order: {list}",
        "earlier": "image {n}: {s:.1f} s earlier, the same area",
        "latest": "image {n}: now (the boxes refer to it)",
        "context": "image {n}: the whole camera view now, small, for context (signals, lanes)",
        "zones": "- zones: {list}",
        "zone_of": "object {id} ({cls}) in {zones}",
        "nowhere": "object {id} ({cls}) in no zone",
        "speed": "- ground speed (calibrated camera): {list}",
        "speed_of": "object {id} ({cls}) {kmh:.0f} km/h",
        "gap": "- distance between object {a} and object {b} on the ground: {m:.1f} m",
        "sep": "; ",
    },
    "zh": {
        "head": "场景：",
        "images": "- 图片按时间顺序：{list}",
        "earlier": "图 {n}：{s:.1f} 秒前，同一区域",
        "latest": "图 {n}：当前（框对应此图）",
        "context": "图 {n}：当前整个监控画面（缩小），用于了解信号灯和车道",
        "zones": "- 区域：{list}",
        "zone_of": "目标 {id}（{cls}）在 {zones}",
        "nowhere": "目标 {id}（{cls}）不在任何区域",
        "speed": "- 地面速度（已标定）：{list}",
        "speed_of": "目标 {id}（{cls}）{kmh:.0f} 公里/小时",
        "gap": "- 目标 {a} 与目标 {b} 的地面距离：{m:.1f} 米",
        "sep": "；",
    },
}
SCENE_VERSION = hashlib.sha256(repr(sorted((k, sorted(v.items())) for k, v in SCENE_WORDS.items())).encode()).hexdigest()[:8]


def scene_images(task: AssessmentTask) -> list[tuple[str, str]]:
    """(kind, data URL) in time order: earlier crops, the latest crop, the context thumbnail."""
    frames = task.group.frames or []
    out = [("earlier", f.jpeg_b64) for f in frames if f.kind == "crop"]
    if task.group.crop_jpeg_b64:
        out.append(("latest", task.group.crop_jpeg_b64))
    out += [("context", f.jpeg_b64) for f in frames if f.kind == "context"]
    return [(k, "data:image/jpeg;base64," + b) for k, b in out]


def has_scene(task: AssessmentTask) -> bool:
    g = task.group
    return bool(g.frames) or g.zones is not None or any(
        o.motion is not None and o.motion.speed_kmh is not None for o in task.objects)


def describe_scene(task: AssessmentTask, language: str = "en") -> str:
    """The scene section ('' when the task has nothing to tell)."""
    if not has_scene(task):
        return ""
    w = SCENE_WORDS.get(language, SCENE_WORDS["en"])
    g, lines = task.group, [w["head"]]
    if g.frames:
        crops = [f for f in g.frames if f.kind == "crop"]
        parts, n = [], 1
        for f in crops:
            parts.append(w["earlier"].format(n=n, s=-f.offset_s))
            n += 1
        if g.crop_jpeg_b64:
            parts.append(w["latest"].format(n=n))
            n += 1
        for f in g.frames:
            if f.kind == "context":
                parts.append(w["context"].format(n=n))
                n += 1
        lines.append(w["images"].format(list=w["sep"].join(parts)))
    if g.zones is not None:
        parts = [w["zone_of"].format(id=o.object_id, cls=o.class_name, zones=", ".join(o.zones))
                 if o.zones else w["nowhere"].format(id=o.object_id, cls=o.class_name) for o in task.objects]
        lines.append(w["zones"].format(list=w["sep"].join(parts)))
    speeds = [w["speed_of"].format(id=o.object_id, cls=o.class_name, kmh=o.motion.speed_kmh)
              for o in task.objects if o.motion is not None and o.motion.speed_kmh is not None]
    if speeds:
        lines.append(w["speed"].format(list=w["sep"].join(speeds)))
    pair = g.cues.pair if g.cues is not None else None
    if pair is not None and pair.gap_m is not None:
        lines.append(w["gap"].format(a=pair.object_ids[0], b=pair.object_ids[1], m=pair.gap_m))
    return "\n".join(lines) + "\n"
