"""The request we build and how replies and 429 headers are read (pure functions, no server)."""

from __future__ import annotations

import email.utils
import time

import pytest

from hazardctl.llm_client import retry_after_s
from hazardctl.prompt import BadResponse, chat_messages, parse_assessment
from tests.test_schedule_stage import tasks

TASK = tasks(1)[0]


def test_request_has_the_crop_as_a_data_url_and_the_group_in_the_prompt():
    msgs = chat_messages(TASK)
    assert msgs[0]["role"] == "system" and "JSON" in msgs[0]["content"]
    image, text = msgs[1]["content"]
    assert image["image_url"]["url"] == "data:image/jpeg;base64," + TASK.group.crop_jpeg_b64
    prompt = text["text"]
    for o in TASK.objects:
        assert f"id {o.object_id}: {o.class_name}" in prompt
    assert "min spacing" in prompt and "ONE JSON object" in prompt
    assert '"low" or "none"' in prompt  # congestion / uncertainty guidance


@pytest.mark.parametrize("reply", [
    '{"level": "high", "risk_types": ["tailgating"], "description": "x", "confidence": 0.9, "danger_object_ids": [0, 1]}',
    '```json\n{"level": "high", "risk_types": ["tailgating"], "confidence": 0.9, "danger_object_ids": [0, 1]}\n```',
    'Here you are: {"level": "HIGH", "risk_types": "tailgating", "confidence": 0.9, "danger_object_ids": [0, 1, 99]} hope it helps',
])
def test_tolerated_replies(reply):
    ra = parse_assessment(reply, TASK)
    assert ra.level == "high" and ra.risk_types == ["tailgating"] and ra.danger_object_ids == [0, 1]


@pytest.mark.parametrize("reply, why", [
    (None, "empty"), ("", "empty"), ("no json here", "no JSON object"), ("{level: high", "truncated"),
    ('{"level": "purple"}', "level"), ('{"risk_types": []}', "level"), ('[1, 2]', "no JSON object"),
    ('{"level": "low", "confidence": 700}', "confidence"),
])
def test_unusable_replies(reply, why):
    with pytest.raises(BadResponse, match=why):
        parse_assessment(reply, TASK)


def test_retry_after_headers():
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5
    assert retry_after_s({"retry-after": "3"}) == 3.0
    date = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8.0 < retry_after_s({"retry-after": date}) <= 10.0
    assert retry_after_s({}) is None and retry_after_s(None) is None
    assert retry_after_s({"retry-after": "soon"}) is None


# -- the model is told the motion (issue 16.6) ---------------------------------------------------------

def moving(task=TASK, *, closing: float = 140.0, ttc: float | None = 1.2, conflict: bool = True, pair: bool = True):
    """TASK (object 0 a person, object 1 a car) with a car approaching the person and a standing person."""
    from hazardctl.messages import GroupCues, Motion, PairCue

    cue = PairCue(kind="vehicle-pedestrian", object_ids=(1, 0), gap=30.0, closing_speed=closing, ttc_s=ttc,
                  min_gap=0.0, min_gap_in_s=1.2, size=150.0)
    cues = GroupCues(conflict_possible=conflict, min_ttc_s=ttc, max_closing_speed=closing,
                     pair=cue if pair else None, flags=["crosswalk"])
    person, car = task.objects
    objects = [person.model_copy(update={"motion": Motion(vx=0, vy=0, speed=0, heading_deg=0, stopped_s=2.0, samples=4)}),
               car.model_copy(update={"motion": Motion(vx=-140, vy=0, speed=140, heading_deg=180, stopped_s=0,
                                                       samples=4)})]
    return task.model_copy(update={"group": task.group.model_copy(update={"cues": cues}), "objects": objects})


def test_the_prompt_states_the_motion_in_words_and_numbers():
    from hazardctl.prompt import user_text

    text = user_text(moving())
    assert "object 1 (car) approaches object 0 (person) at 140 px/s, time to collision 1.2 s" in text
    assert "gap now 30 px, smallest predicted gap 0 px in 1.2 s" in text
    assert "- object 0 (person): stopped for 2.0 s" in text
    assert "- object 1 (car): moving 140 px/s toward the left (heading 180 deg)" in text
    assert "- cues: crosswalk" in text
    assert text.index("approaches") < text.index("- id 0: person")  # before the object list
    away = user_text(moving(closing=-40.0, ttc=None))
    assert "object 1 (car) moves away from object 0 (person) at 40 px/s; gap now" in away
    assert "time to collision 1.2" not in away
    calm = user_text(moving(closing=0.0, ttc=None, conflict=False, pair=False))
    assert "no conflict possible" in calm and "approaches" not in calm


def test_the_prompt_states_the_motion_in_chinese():
    from hazardctl.prompt import user_text

    text = user_text(moving(), "zh")
    assert "目标 1（car）正以 140 像素/秒 接近目标 0（person），碰撞时间 1.2 秒" in text
    assert "目标 0（person）：已停止 2.0 秒" in text and "向左移动" in text
    assert "approaches" not in text


def test_a_task_without_motion_gets_todays_prompt_and_version():
    from hazardctl.prompt import MOTION_PROMPTS, PROMPTS, _object_line, describe_features, prompt_for_task, user_text

    for lang in ("en", "zh"):
        objects = "\n".join(_object_line(o) for o in TASK.objects)
        assert user_text(TASK, lang) == PROMPTS[lang].template.format(objects=objects,
                                                                      features=describe_features(TASK, lang))
        assert prompt_for_task(TASK, lang) is PROMPTS[lang]
        assert prompt_for_task(moving(), lang) is MOTION_PROMPTS[lang]
        assert MOTION_PROMPTS[lang].version != PROMPTS[lang].version
        # the answer schema is the same: everything from the JSON instructions on is identical
        tail = PROMPTS[lang].template[PROMPTS[lang].template.index("JSON"):]
        assert MOTION_PROMPTS[lang].template.endswith(tail)
    # the versions results carried before issue 16: tasks without motion keep them
    assert (PROMPTS["en"].version, PROMPTS["zh"].version) == ("en-e5b04f06", "zh-4288fcb5")
    assert "Motion" not in user_text(TASK) and "运动" not in user_text(TASK, "zh")


def test_a_coasted_object_is_named_as_predicted_not_seen():
    from hazardctl.prompt import user_text

    task = moving()
    person, car = task.objects
    coasted = task.model_copy(update={"objects": [person, car.model_copy(update={"coasted": True})]})
    line = "not detected on this frame: box predicted from its motion"
    said = [ln for ln in user_text(coasted).splitlines() if line in ln]
    assert len(said) == 1 and said[0].startswith(f"- id {task.objects[1].object_id}:")
    assert line not in user_text(task)
