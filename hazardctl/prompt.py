"""What we ask the vision LLM, in the operators' language (spec §6; guidance from FACTS.md; issue 12).

The request is a system message (the analyst's role) and one user message: the crop as a JPEG data
URL plus a text prompt that describes the group (objects with ids, classes, boxes; spatial
features) and asks for ONE strict JSON object. `--language zh` asks in Chinese, so risk types and description come back in Chinese; the JSON keys
and the four level values (none/low/medium/high) stay the same in every language. Each prompt has a
`version` (a short hash of its system prompt and template, language included) that every result
carries, so a change in answers can be tied to a change in the prompt. The answer is read by
`hazardctl.answers.read_answer` (strict first, then named rules; `BadResponse` if unreadable).

The model is told the motion (issue 16.6): a task whose group carries motion cues (`Group.cues`) or
whose members carry kinematics (`DetectedObject.motion`) is asked with the motion prompt of its
language, which states them in words and numbers ("object 3 (car) approaches object 1 (person) at
140 px/s, time to collision 1.2 s") before the object list. Its version differs from the plain
prompt's (its template and wording are hashed); a task without motion gets the plain prompt,
unchanged. The answer schema is the same for both.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Literal

from hazardctl.answers import BadResponse, read_answer
from hazardctl.messages import AssessmentTask, RiskAssessment
from hazardctl.prompt_scene import SCENE_VERSION, describe_scene, has_scene, scene_images

__all__ = ["BadResponse", "LANGUAGES", "Prompt", "chat_messages", "describe_motion", "has_motion", "parse_assessment",
           "prompt_for", "prompt_for_task"]

Language = Literal["en", "zh"]
LANGUAGES: tuple[str, ...] = ("en", "zh")

SYSTEM_PROMPT = (
    "You are a traffic-safety analyst watching road cameras. You judge whether a group of road users "
    "in a camera crop is in a dangerous situation right now. You answer with one JSON object and nothing else."
)

INSTRUCTIONS = """\
The image is a crop of a traffic-camera frame around one group of road users.
Objects in the group (ids refer to this list; boxes are x1,y1,x2,y2 in frame pixels):
{objects}
Spatial features: {features}

Judge the risk of an accident in this scene. Dangerous situations include: a vehicle too close to a
pedestrian or cyclist, tailgating, wrong-way driving, running a red light, an abrupt lane change,
driving on the emergency lane.
Ordinary congestion, parked or queued vehicles, and cases where you are not sure are "low" or "none".

Answer with ONE JSON object, no markdown, no text around it, exactly these keys:
{{"level": "none" | "low" | "medium" | "high",
 "risk_types": [1 to 3 short phrases, e.g. "vehicle-pedestrian conflict"; empty if level is none],
 "description": "one sentence on what you see",
 "confidence": a number from 0 to 1,
 "danger_object_ids": [ids from the list above involved in the danger; empty if none]}}"""


SYSTEM_PROMPT_ZH = "你是一名交通安全分析员，负责查看道路监控画面。你判断监控画面裁剪图中的一组道路使用者此刻是否处于危险之中。你只回答一个 JSON 对象，不写任何其他内容。"

INSTRUCTIONS_ZH = """\
图片是交通监控画面中围绕一组道路使用者的裁剪图。
该组中的目标（id 对应下面的列表；框为画面像素坐标 x1,y1,x2,y2）：
{objects}
空间特征：{features}

判断该场景发生事故的风险。危险情形包括：车辆离行人或骑车人过近、跟车过近、逆行、闯红灯、突然变道、
占用应急车道。
普通拥堵、停放或排队的车辆，以及你不确定的情况，属于 "low" 或 "none"。

只回答一个 JSON 对象，不要 markdown，前后不要有任何文字，键名必须完全如下（键名用英文）：
{{"level": "none" | "low" | "medium" | "high"（只能是这四个英文值之一）,
 "risk_types": [1 到 3 个简短的中文短语，例如 "人车冲突"；level 为 none 时为空列表],
 "description": "用一句中文描述你看到的情况",
 "confidence": 0 到 1 之间的数字,
 "danger_object_ids": [上面列表中与危险有关的目标 id；没有则为空列表]}}"""


#: The motion prompt: the plain one with the motion, in words and numbers, before the object list
#: (ids refer to the list below it), and one line on how to weigh it.
_MOTION_INTRO = "The image is a crop of a traffic-camera frame around one group of road users.\n"
_MOTION_SECTION = ("Motion measured by tracking over the last frames (image pixels and seconds; ids refer to the "
                   "list below):\n{motion}\n")
_MOTION_ADVICE = ('Ordinary congestion, parked or queued vehicles, and cases where you are not sure are "low" or "none".\n',
                  'Ordinary congestion, parked or queued vehicles, and cases where you are not sure are "low" or "none".\n'
                  "The motion is an estimate from tracking: a short time to collision while closing is a sign of\n"
                  "danger, but judge by what the image shows.\n")
assert INSTRUCTIONS.startswith(_MOTION_INTRO) and _MOTION_ADVICE[0] in INSTRUCTIONS
INSTRUCTIONS_MOTION = (_MOTION_INTRO + _MOTION_SECTION + INSTRUCTIONS[len(_MOTION_INTRO):]).replace(*_MOTION_ADVICE)

_MOTION_INTRO_ZH = "图片是交通监控画面中围绕一组道路使用者的裁剪图。\n"
_MOTION_SECTION_ZH = "跟踪在最近几帧测得的运动（图像像素与秒；id 对应下面的列表）：\n{motion}\n"
_MOTION_ADVICE_ZH = ('普通拥堵、停放或排队的车辆，以及你不确定的情况，属于 "low" 或 "none"。\n',
                     '普通拥堵、停放或排队的车辆，以及你不确定的情况，属于 "low" 或 "none"。\n'
                     "运动是跟踪得出的估计：正在接近且碰撞时间很短是危险的迹象，但请以画面为准。\n")
assert INSTRUCTIONS_ZH.startswith(_MOTION_INTRO_ZH) and _MOTION_ADVICE_ZH[0] in INSTRUCTIONS_ZH
INSTRUCTIONS_MOTION_ZH = (_MOTION_INTRO_ZH + _MOTION_SECTION_ZH
                          + INSTRUCTIONS_ZH[len(_MOTION_INTRO_ZH):]).replace(*_MOTION_ADVICE_ZH)

#: How one motion line is worded, per language (part of the motion prompt's version).
MOTION_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "closing": "- object {a} ({a_cls}) approaches object {b} ({b_cls}) at {v:.0f} px/s{ttc}{gap}",
        "opening": "- object {a} ({a_cls}) moves away from object {b} ({b_cls}) at {v:.0f} px/s{gap}",
        "steady": "- object {a} ({a_cls}) keeps its distance to object {b} ({b_cls}){gap}",
        "ttc": ", time to collision {ttc:.1f} s",
        "gap": "; gap now {gap:.0f} px, smallest predicted gap {min_gap:.0f} px in {min_gap_in_s:.1f} s",
        "worst": "- in the whole group: smallest time to collision {ttc}, fastest closing speed {v}",
        "none": "none",
        "seconds": "{:.1f} s",
        "speed": "{:.0f} px/s",
        "calm": "- no conflict possible: no vehicle is closing on another road user",
        "flags": "- cues: {flags}",
        "flag_sep": ", ",
        "moving": "- object {id} ({cls}): moving {v:.0f} px/s toward the {dir} (heading {deg:.0f} deg)",
        "stopped": "- object {id} ({cls}): stopped for {s:.1f} s",
        "directions": "right|lower right|bottom|lower left|left|upper left|top|upper right",
    },
    "zh": {
        "closing": "- 目标 {a}（{a_cls}）正以 {v:.0f} 像素/秒 接近目标 {b}（{b_cls}）{ttc}{gap}",
        "opening": "- 目标 {a}（{a_cls}）正以 {v:.0f} 像素/秒 远离目标 {b}（{b_cls}）{gap}",
        "steady": "- 目标 {a}（{a_cls}）与目标 {b}（{b_cls}）保持距离{gap}",
        "ttc": "，碰撞时间 {ttc:.1f} 秒",
        "gap": "；当前间距 {gap:.0f} 像素，预计 {min_gap_in_s:.1f} 秒后最小间距 {min_gap:.0f} 像素",
        "worst": "- 整组：最小碰撞时间 {ttc}，最大接近速度 {v}",
        "none": "无",
        "seconds": "{:.1f} 秒",
        "speed": "{:.0f} 像素/秒",
        "calm": "- 不可能发生冲突：没有车辆在接近其他道路使用者",
        "flags": "- 线索：{flags}",
        "flag_sep": "、",
        "moving": "- 目标 {id}（{cls}）：以 {v:.0f} 像素/秒 向{dir}移动（航向 {deg:.0f} 度）",
        "stopped": "- 目标 {id}（{cls}）：已停止 {s:.1f} 秒",
        "directions": "右|右下|下|左下|左|左上|上|右上",
    },
}
#: |closing speed| below this (px/s) reads as keeping the distance; below this speed an object is standing
STEADY_PX_S = 1.0


@dataclass(frozen=True)
class Prompt:
    """The system prompt and user template of one language, the motion wording when the template has
    a {motion} section, and their short version hash."""

    language: str
    system: str
    template: str
    words: tuple[tuple[str, str], ...] = ()

    @property
    def version(self) -> str:
        text = f"{self.language}\x00{self.system}\x00{self.template}"
        if self.words:  # the plain prompts hash as they always did: their version is unchanged
            text += "\x00" + "\x00".join(f"{k}={v}" for k, v in self.words)
        h = hashlib.sha256(text.encode()).hexdigest()
        return f"{self.language}-{h[:8]}"


PROMPTS: dict[str, Prompt] = {
    "en": Prompt("en", SYSTEM_PROMPT, INSTRUCTIONS),
    "zh": Prompt("zh", SYSTEM_PROMPT_ZH, INSTRUCTIONS_ZH),
}
MOTION_PROMPTS: dict[str, Prompt] = {
    "en": Prompt("en", SYSTEM_PROMPT, INSTRUCTIONS_MOTION, tuple(sorted(MOTION_WORDS["en"].items()))),
    "zh": Prompt("zh", SYSTEM_PROMPT_ZH, INSTRUCTIONS_MOTION_ZH, tuple(sorted(MOTION_WORDS["zh"].items()))),
}


def prompt_for(language: str = "en", motion: bool = False) -> Prompt:
    try:
        return (MOTION_PROMPTS if motion else PROMPTS)[language]
    except KeyError:
        raise ValueError(f"language {language!r}: one of {', '.join(LANGUAGES)}") from None


def has_motion(task: AssessmentTask) -> bool:
    """Does the task carry anything to tell about motion (group cues, or a member's kinematics)?"""
    return task.group.cues is not None or any(o.motion is not None for o in task.objects)


def prompt_for_task(task: AssessmentTask, language: str = "en", motion: bool = True) -> Prompt:
    """The prompt this task is asked with: the motion prompt when it carries motion, else the plain one;
    `motion=False` (a variant's `prompt_version: plain`, issue 22): always the plain one. A task that carries
    a scene (frames, zones, ground units: hazardctl/prompt_scene.py) is asked with that section too, and its
    version says so (the scene wording's hash joins the hashed words)."""
    prompt = prompt_for(language, motion and has_motion(task))
    if has_scene(task):
        prompt = dataclasses.replace(prompt, words=prompt.words + (("scene", SCENE_VERSION),))
    return prompt


def describe_motion(task: AssessmentTask, language: str = "en") -> str:
    """The task's motion in words and numbers, one line each: the worst pair, the group's worst cues when
    no pair is named, calm, named cues, then every member that moves or has stopped."""
    w = MOTION_WORDS[prompt_for(language).language]
    cls = {o.object_id: o.class_name for o in task.objects}
    lines: list[str] = []
    cues = task.group.cues
    if cues is not None:
        pair = cues.pair
        if pair is not None:
            a, b = pair.object_ids
            names = {"a": a, "b": b, "a_cls": cls.get(a, "?"), "b_cls": cls.get(b, "?")}
            gap = w["gap"].format(gap=pair.gap, min_gap=pair.min_gap, min_gap_in_s=pair.min_gap_in_s)
            if pair.closing_speed >= STEADY_PX_S:
                ttc = w["ttc"].format(ttc=pair.ttc_s) if pair.ttc_s is not None else ""
                lines.append(w["closing"].format(v=pair.closing_speed, ttc=ttc, gap=gap, **names))
            elif pair.closing_speed <= -STEADY_PX_S:
                lines.append(w["opening"].format(v=-pair.closing_speed, gap=gap, **names))
            else:
                lines.append(w["steady"].format(gap=gap, **names))
        elif cues.min_ttc_s is not None or cues.max_closing_speed is not None:
            ttc = w["seconds"].format(cues.min_ttc_s) if cues.min_ttc_s is not None else w["none"]
            v = w["speed"].format(cues.max_closing_speed) if cues.max_closing_speed is not None else w["none"]
            lines.append(w["worst"].format(ttc=ttc, v=v))
        if not cues.conflict_possible:
            lines.append(w["calm"])
        if cues.flags:
            lines.append(w["flags"].format(flags=w["flag_sep"].join(cues.flags)))
    directions = w["directions"].split("|")
    for o in task.objects:
        m = o.motion
        if m is None:
            continue
        if m.stopped_s > 0:
            lines.append(w["stopped"].format(id=o.object_id, cls=o.class_name, s=m.stopped_s))
        elif m.speed >= STEADY_PX_S:
            d = directions[round(m.heading_deg / 45.0) % 8]
            lines.append(w["moving"].format(id=o.object_id, cls=o.class_name, v=m.speed, dir=d, deg=m.heading_deg))
    return "\n".join(lines) or "-"


def _object_line(o) -> str:
    x1, y1, x2, y2 = (round(v) for v in o.bbox)
    track = f" track {o.track_id}" if o.track_id is not None else ""
    if getattr(o, "coasted", None):
        track += ", not detected on this frame: box predicted from its motion"
    return f"- id {o.object_id}: {o.class_name} (conf {o.confidence:.2f}{track}) box [{x1},{y1},{x2},{y2}]"


def describe_features(task: AssessmentTask, language: str = "en") -> str:
    f = task.group.features
    if language == "zh":
        parts = [f"{f.vehicle_count} 辆车", f"{f.pedestrian_count} 名行人",
                 f"密度 每 10^4 像素² {f.density_per_10k_px2:.2f} 个",
                 f"平均间距 {f.mean_spacing:.0f} 像素", f"最小间距 {f.min_spacing:.0f} 像素"]
        if f.min_pedestrian_vehicle_distance is not None:
            parts.append(f"人车最小距离 {f.min_pedestrian_vehicle_distance:.0f} 像素")
        return "，".join(parts) + f"；画面 {task.frame_width}x{task.frame_height}"
    parts = [f"{f.vehicle_count} vehicles", f"{f.pedestrian_count} pedestrians",
             f"density {f.density_per_10k_px2:.2f} per 10^4 px^2",
             f"mean spacing {f.mean_spacing:.0f} px", f"min spacing {f.min_spacing:.0f} px"]
    if f.min_pedestrian_vehicle_distance is not None:
        parts.append(f"min pedestrian-vehicle distance {f.min_pedestrian_vehicle_distance:.0f} px")
    return ", ".join(parts) + f"; frame {task.frame_width}x{task.frame_height}"


def user_text(task: AssessmentTask, language: str = "en", motion: bool = True) -> str:
    objects = "\n".join(_object_line(o) for o in task.objects) or "- (no object details)"
    features = describe_features(task, language)
    scene = describe_scene(task, language)  # issue 19: images over time, zones, ground units ('' without)
    if motion and has_motion(task):
        return scene + prompt_for(language, True).template.format(
            motion=describe_motion(task, language), objects=objects, features=features)
    return scene + prompt_for(language).template.format(objects=objects, features=features)


def chat_messages(task: AssessmentTask, language: str = "en", motion: bool = True) -> list[dict]:
    """The `messages` of one /chat/completions request (OpenAI vision format)."""
    content: list[dict] = [{"type": "image_url", "image_url": {"url": url}} for _, url in scene_images(task)]
    content.append({"type": "text", "text": user_text(task, language, motion)})
    return [{"role": "system", "content": prompt_for(language).system}, {"role": "user", "content": content}]


def parse_assessment(text: str | None, task: AssessmentTask) -> RiskAssessment:
    """The model's reply → a validated assessment (see `hazardctl.answers.read_answer` for the rules)."""
    return read_answer(text, task).assessment
