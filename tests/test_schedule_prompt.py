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
