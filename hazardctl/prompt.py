"""What we ask the vision LLM, and how its answer is read back (spec §6; guidance from FACTS.md).

The request is one user message: the crop as a JPEG data URL plus a text prompt that describes the
group (objects with ids, classes, boxes; spatial features) and asks for ONE strict JSON object.
The answer is validated with `RiskAssessment`; markdown fences and chatter around the object are
tolerated, anything else is a `BadResponse` (the scheduler retries once, then reports it).
"""

from __future__ import annotations

import json
import re

from pydantic import ValidationError

from hazardctl.messages import AssessmentTask, RiskAssessment

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


def _object_line(o) -> str:
    x1, y1, x2, y2 = (round(v) for v in o.bbox)
    track = f" track {o.track_id}" if o.track_id is not None else ""
    return f"- id {o.object_id}: {o.class_name} (conf {o.confidence:.2f}{track}) box [{x1},{y1},{x2},{y2}]"


def describe_features(task: AssessmentTask) -> str:
    f = task.group.features
    parts = [f"{f.vehicle_count} vehicles", f"{f.pedestrian_count} pedestrians",
             f"density {f.density_per_10k_px2:.2f} per 10^4 px^2",
             f"mean spacing {f.mean_spacing:.0f} px", f"min spacing {f.min_spacing:.0f} px"]
    if f.min_pedestrian_vehicle_distance is not None:
        parts.append(f"min pedestrian-vehicle distance {f.min_pedestrian_vehicle_distance:.0f} px")
    return ", ".join(parts) + f"; frame {task.frame_width}x{task.frame_height}"


def user_text(task: AssessmentTask) -> str:
    objects = "\n".join(_object_line(o) for o in task.objects) or "- (no object details)"
    return INSTRUCTIONS.format(objects=objects, features=describe_features(task))


def chat_messages(task: AssessmentTask) -> list[dict]:
    """The `messages` of one /chat/completions request (OpenAI vision format)."""
    content: list[dict] = []
    if task.group.crop_jpeg_b64:
        content.append({"type": "image_url",
                        "image_url": {"url": "data:image/jpeg;base64," + task.group.crop_jpeg_b64}})
    content.append({"type": "text", "text": user_text(task)})
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]


class BadResponse(Exception):
    """The model answered, but not with a usable assessment."""


_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*(.*?)\s*```\s*$", re.S)


def parse_assessment(text: str | None, task: AssessmentTask) -> RiskAssessment:
    """The model's reply → a validated assessment; danger ids outside the group are dropped."""
    if not text or not text.strip():
        raise BadResponse("empty reply")
    body = text.strip()
    m = _FENCE.match(body)
    if m:
        body = m.group(1)
    if not body.startswith("{"):
        start, end = body.find("{"), body.rfind("}")
        if start < 0 or end <= start:
            raise BadResponse("no JSON object in the reply")
        body = body[start:end + 1]
    try:
        data = json.loads(body)
    except json.JSONDecodeError as e:
        raise BadResponse(f"invalid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise BadResponse("the reply is JSON but not an object")
    if isinstance(data.get("level"), str):
        data["level"] = data["level"].strip().lower()
    if isinstance(data.get("risk_types"), str):
        data["risk_types"] = [data["risk_types"]]
    try:
        ra = RiskAssessment.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "reply"
        raise BadResponse(f"{where}: {first['msg']}") from None
    members = {o.object_id for o in task.objects} or set(task.group.member_ids)
    ra.danger_object_ids = [i for i in ra.danger_object_ids if i in members]
    ra.risk_types = [r.strip()[:80] for r in ra.risk_types if r.strip()][:3]
    return ra
