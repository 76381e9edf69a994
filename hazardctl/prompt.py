"""What we ask the vision LLM, in the operators' language (spec §6; guidance from FACTS.md; issue 12).

The request is a system message (the analyst's role) and one user message: the crop as a JPEG data
URL plus a text prompt that describes the group (objects with ids, classes, boxes; spatial
features) and asks for ONE strict JSON object. `--language zh` asks in Chinese, so risk types and description come back in Chinese; the JSON keys
and the four level values (none/low/medium/high) stay the same in every language. Each prompt has a
`version` (a short hash of its system prompt and template, language included) that every result
carries, so a change in answers can be tied to a change in the prompt. The answer is read by
`hazardctl.answers.read_answer` (strict first, then named rules; `BadResponse` if unreadable).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from hazardctl.answers import BadResponse, read_answer
from hazardctl.messages import AssessmentTask, RiskAssessment

__all__ = ["BadResponse", "LANGUAGES", "Prompt", "chat_messages", "parse_assessment", "prompt_for"]

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


@dataclass(frozen=True)
class Prompt:
    """The system prompt and user template of one language, and their short version hash."""

    language: str
    system: str
    template: str

    @property
    def version(self) -> str:
        h = hashlib.sha256(f"{self.language}\x00{self.system}\x00{self.template}".encode()).hexdigest()
        return f"{self.language}-{h[:8]}"


PROMPTS: dict[str, Prompt] = {
    "en": Prompt("en", SYSTEM_PROMPT, INSTRUCTIONS),
    "zh": Prompt("zh", SYSTEM_PROMPT_ZH, INSTRUCTIONS_ZH),
}


def prompt_for(language: str = "en") -> Prompt:
    try:
        return PROMPTS[language]
    except KeyError:
        raise ValueError(f"language {language!r}: one of {', '.join(LANGUAGES)}") from None


def _object_line(o) -> str:
    x1, y1, x2, y2 = (round(v) for v in o.bbox)
    track = f" track {o.track_id}" if o.track_id is not None else ""
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


def user_text(task: AssessmentTask, language: str = "en") -> str:
    objects = "\n".join(_object_line(o) for o in task.objects) or "- (no object details)"
    return prompt_for(language).template.format(objects=objects, features=describe_features(task, language))


def chat_messages(task: AssessmentTask, language: str = "en") -> list[dict]:
    """The `messages` of one /chat/completions request (OpenAI vision format)."""
    content: list[dict] = []
    if task.group.crop_jpeg_b64:
        content.append({"type": "image_url",
                        "image_url": {"url": "data:image/jpeg;base64," + task.group.crop_jpeg_b64}})
    content.append({"type": "text", "text": user_text(task, language)})
    return [{"role": "system", "content": prompt_for(language).system}, {"role": "user", "content": content}]


def parse_assessment(text: str | None, task: AssessmentTask) -> RiskAssessment:
    """The model's reply → a validated assessment (see `hazardctl.answers.read_answer` for the rules)."""
    return read_answer(text, task).assessment
