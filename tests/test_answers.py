"""The tolerant reader of model answers (hazardctl/answers.py, issue 12): the corpus of real-looking
answers in tests/data/answers/ (one file per variant, with the expected reading or rejection), the
simulator's variant catalogue run through the same reader, and the rules' edges."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from hazardctl.answers import REASONS, RULES, BadResponse, read_answer
from hazardctl.answer_watch import BadAnswerRate
from hazardctl.keypool import KeyLimits, KeyPool, KeyState, Outcome, PoolPolicy
from tests.test_schedule_stage import tasks
from tools.llm_sim.answers import READABLE, VARIANTS, answer_variant, assessment

CORPUS = sorted((Path(__file__).parent / "data" / "answers").glob("*.yaml"))
TASK = tasks(1)[0]  # objects 0 and 1 (a person and a car)


def test_the_corpus_has_every_kind_of_answer():
    assert len(CORPUS) >= 30
    cases = [yaml.safe_load(p.read_text()) for p in CORPUS]
    used_rules = {r for c in cases for r in c["expect"].get("rules", [])}
    assert used_rules == set(RULES)  # every rule has at least one example
    reasons = {c["expect"]["reject"] for c in cases if "reject" in c["expect"]}
    assert reasons >= set(REASONS) - {"not_a_completion"}  # not_a_completion is the HTTP body, not content


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_answer_is_read_or_rejected_as_expected(path):
    case = yaml.safe_load(path.read_text())
    expect = case["expect"]
    if "reject" in expect:
        with pytest.raises(BadResponse) as e:
            read_answer(case["content"], TASK, case["finish_reason"])
        assert e.value.reason == expect["reject"]
        return
    reading = read_answer(case["content"], TASK, case["finish_reason"])
    ra = reading.assessment
    assert ra.level == expect["level"]
    assert sorted(reading.rules) == sorted(expect["rules"])
    for field in ("risk_types", "description", "confidence", "danger_object_ids"):
        if field in expect:
            assert getattr(ra, field) == expect[field], field


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_simulator_variant_is_read_as_the_same_assessment_or_rejected(variant):
    """The simulator's catalogue (`--answer-mix`) against the reader, over 100 requests and both languages."""
    for i in range(100):
        digest = os.urandom(32)
        prompt = "- id 0: person\n- id 1: car\n- id 2: car" + ("\n判断风险" if i % 2 else "")
        ref = read_answer(answer_variant(digest, prompt, "strict")[0]).assessment
        assert ref.level == assessment(digest, prompt)["level"]
        content, finish = answer_variant(digest, prompt, variant)
        if variant not in READABLE:
            with pytest.raises(BadResponse):
                read_answer(content, None, finish)
            continue
        ra = read_answer(content, None, finish).assessment
        assert ra.level == ref.level, (variant, content)
        assert ra.danger_object_ids == ref.danger_object_ids, (variant, content)
        assert ra.risk_types == ref.risk_types, (variant, content)
        assert ra.confidence == pytest.approx(ref.confidence, abs=0.006), (variant, content)


def test_a_conforming_answer_takes_the_strict_path():
    reading = read_answer('{"level": "low", "risk_types": ["x"], "description": "d", "confidence": 0.5, '
                          '"danger_object_ids": []}', TASK, "stop")
    assert reading.rules == () and reading.assessment.level == "low"


def test_levels_in_results_are_always_the_four_enum_values():
    for level in ("高", "中等", "Severe", "minimal", "0", "2.0", "无风险"):
        assert read_answer('{"level": "%s"}' % level).assessment.level in ("none", "low", "medium", "high")


def test_score_bands_and_a_level_that_is_a_fraction():
    assert [read_answer('{"risk_score": %s}' % s).assessment.level for s in (0, 0.19, 0.2, 0.44, 0.45, 0.69, 0.7, 1)] \
        == ["none", "none", "low", "low", "medium", "medium", "high", "high"]
    assert read_answer('{"level": 0.75}').rules == ("level_score",)
    with pytest.raises(BadResponse, match="bad_level"):
        read_answer('{"risk_score": 1.5}')


def test_an_apostrophe_in_prose_does_not_hide_the_object():
    r = read_answer("Here's what I see: {\"level\": \"low\"} — that's all.")
    assert r.assessment.level == "low" and r.rules == ("surrounding_text",)


def test_one_broken_object_beside_a_good_one_is_not_ambiguous():
    r = read_answer('Template: {level: ???}\nAnswer: {"level": "high"}')
    assert r.assessment.level == "high" and "several_objects" not in r.rules


# -- key health: an unusable answer is the model's fault -------------------------------------------

def test_the_key_pool_never_cools_a_key_for_unusable_answers():
    """Even 100 bad answers in a row: the key stays available (the scheduler reports them as the key working)."""
    p = KeyPool([KeyLimits("a", 1000.0)], PoolPolicy(max_retry_per_key=2, default_cooldown=30.0), now=0.0)
    for i in range(100):
        lease = p.acquire(i * 0.01)
        assert lease is not None
        p.release(lease, Outcome.BAD_RESPONSE, i * 0.01 + 0.005)
    assert p.state("a", 1.0) is KeyState.AVAILABLE


def test_bad_answer_rate_warns_once_when_it_rises_and_once_when_it_falls_back():
    rate = BadAnswerRate(threshold=0.2, window=50, min_answers=10)
    events = [rate.add(False) for _ in range(50)]
    events += [rate.add(True) for _ in range(20)]
    assert events.count("above") == 1 and rate.ratio == pytest.approx(20 / 50)
    events += [rate.add(False) for _ in range(50)]
    assert events.count("below") == 1 and rate.ratio == 0.0
    assert [e for e in events if e] == ["above", "below"]


@pytest.mark.parametrize("content, reason", [
    ('{"level": "high", "x": ' + "[" * 3000 + "]" * 3000 + "}", "invalid_json"),  # deeper than orjson's limit
    ("{'level': 'high', 'x': " + "[" * 3000 + "]" * 3000 + "}", "invalid_json"),
])
def test_hostile_nesting_is_a_bad_response_not_a_recursion_error(content, reason):
    with pytest.raises(BadResponse) as e:
        read_answer(content, TASK, "stop")
    assert e.value.reason == reason


def test_a_digit_run_too_long_for_int_is_no_danger_id():
    r = read_answer('{"level": "high", "danger_object_ids": "' + "9" * 5000 + ' and 1"}', TASK, "stop")
    assert r.assessment.level == "high" and r.assessment.danger_object_ids == [1]


def test_more_risk_types_than_the_model_allows_are_trimmed_not_rejected():
    """RiskAssessment takes at most 5; a model listing 6 gave a usable answer (the first 3 are kept)."""
    r = read_answer('{"level": "high", "risk_types": ["a", "b", "c", "d", "e", "f"], "description": "x", '
                    '"confidence": 0.9, "danger_object_ids": [0]}', TASK, "stop")
    assert r.assessment.level == "high" and r.assessment.risk_types == ["a", "b", "c"] and r.rules == ()
    r = read_answer('{"risk_level": "high", "risk_types": "a, b, c, d, e, f"}', TASK, "stop")
    assert r.assessment.risk_types == ["a", "b", "c"] and set(r.rules) == {"synonym_keys", "risk_types_text"}
