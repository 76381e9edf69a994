"""Message contracts (spec §3): round trips, validation at the edge, task ids, JSON Schema export.

The hypothesis strategies are derived from the models' own fields and constraints (`from_model`),
so a field added to a model is exercised without touching this file, and a field of a type the
derivation does not know fails loudly instead of being skipped.
"""

from __future__ import annotations

import json
import subprocess
import types
import typing
import uuid

import annotated_types as at
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from hazardctl.deadletter import BadInput
from hazardctl.messages import (
    MESSAGE_MODELS,
    TASK_ID_NAMESPACE,
    AssessmentTask,
    CameraStatus,
    DeadLetter,
    DetectionResult,
    Group,
    IncidentAction,
    RiskAssessment,
    RiskAssessmentResult,
    StageTimes,
    task_id_for,
)
from hazardctl.synthetic import detection
from tests.conftest import HAZARDCTL, ROOT

# ---------------------------------------------------------------- strategies derived from the models

INT64 = 2**63 - 1


def _constraints(metadata: list) -> dict:
    out: dict = {}
    for m in metadata:
        if isinstance(m, FieldInfo):
            out.update(_constraints(m.metadata))
        elif isinstance(m, at.Ge):
            out["ge"] = m.ge
        elif isinstance(m, at.Gt):
            out["gt"] = m.gt
        elif isinstance(m, at.Le):
            out["le"] = m.le
        elif isinstance(m, at.Lt):
            out["lt"] = m.lt
        elif isinstance(m, at.MinLen):
            out["min_len"] = m.min_length
        elif isinstance(m, at.MaxLen):
            out["max_len"] = m.max_length
        else:
            raise NotImplementedError(f"constraint {m!r}: teach from_model about it")
    return out


def _for_type(tp, c: dict) -> st.SearchStrategy:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _for_type(args[0], {**c, **_constraints(list(args[1:]))})
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*[_for_type(a, c) for a in args])
    if tp is type(None):
        return st.none()
    if origin is typing.Literal:
        return st.sampled_from(args)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return from_model(tp)
    if tp is bool:
        return st.booleans()
    if tp is int:
        lo = c.get("ge", c["gt"] + 1 if "gt" in c else -INT64)
        return st.integers(min_value=lo, max_value=c.get("le", INT64))
    if tp is float:
        return st.floats(min_value=c.get("ge", c.get("gt")), max_value=c.get("le", c.get("lt")),
                         exclude_min="gt" in c, exclude_max="lt" in c, allow_nan=False, allow_infinity=False)
    if tp is str:
        return st.text(min_size=c.get("min_len", 0), max_size=c.get("max_len", 40))
    if origin is list:
        return st.lists(_for_type(args[0], {}), min_size=c.get("min_len", 0), max_size=min(c.get("max_len", 4), 4))
    if origin is tuple and args and args[-1] is not Ellipsis:
        return st.tuples(*[_for_type(a, {}) for a in args])
    if origin is dict:
        return st.dictionaries(_for_type(args[0], {}), _for_type(args[1], {}), max_size=3)
    raise NotImplementedError(f"no strategy for {tp!r}: teach from_model about it")


_MODEL_STRATEGIES: dict[type, st.SearchStrategy] = {}


def from_model(model: type[BaseModel]) -> st.SearchStrategy:
    """st.builds(model) with a strategy per field from its annotation and constraints."""
    if model not in _MODEL_STRATEGIES:
        kwargs = {}
        for name, f in model.model_fields.items():
            s = _for_type(f.annotation, _constraints(f.metadata))
            kwargs[name] = s if f.is_required() else st.one_of(st.just(f.get_default(call_default_factory=True)), s)
        _MODEL_STRATEGIES[model] = st.builds(model, **kwargs)
    return _MODEL_STRATEGIES[model]


ALL_MODELS = [*MESSAGE_MODELS.values(), StageTimes, Group]
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
def test_every_model_round_trips_through_json(model):
    @FAST
    @given(from_model(model))
    def check(msg):
        wire = msg.model_dump_json()
        assert model.model_validate_json(wire) == msg
        assert model.model_validate(json.loads(wire)) == msg  # a dict from any JSON library works too

    check()


@pytest.mark.parametrize("model", list(MESSAGE_MODELS.values()), ids=lambda m: m.__name__)
def test_serialized_messages_conform_to_the_exported_json_schema(model):
    """What a stage writes validates against what `hazardctl schema` tells other teams to expect."""
    validator = jsonschema.Draft202012Validator(model.model_json_schema(mode="serialization"))

    @FAST
    @given(from_model(model))
    def check(msg):
        validator.validate(json.loads(msg.model_dump_json()))

    check()


def test_synthetic_detection_round_trips_and_keeps_groups_and_times():
    det = detection("cam-01", 7, 1_700_000_000.25, groups=3)
    back = DetectionResult.model_validate_json(det.model_dump_json())
    assert back == det
    assert [g.group_id for g in back.groups] == ["cam-01-g1", "cam-01-g2", "cam-01-g3"]
    assert back.times.capture == 1_700_000_000.25
    assert back.schema_version == 1


# ---------------------------------------------------------------- validation at the edge


def _detection_dict() -> dict:
    return json.loads(detection("cam-01", 1, 1000.0, groups=2).model_dump_json())


def _errors(model, data) -> list[dict]:
    with pytest.raises(ValidationError) as ei:
        model.model_validate_json(json.dumps(data))
    return ei.value.errors()


@pytest.mark.parametrize("field", [n for n, f in DetectionResult.model_fields.items() if f.is_required()])
def test_missing_required_field_is_rejected_and_named(field):
    data = _detection_dict()
    del data[field]
    errs = _errors(DetectionResult, data)
    assert (errs[0]["type"], errs[0]["loc"]) == ("missing", (field,))


@pytest.mark.parametrize(
    "path, value, loc",
    [
        (("frame_id",), "seven", ("frame_id",)),
        (("frame_id",), -1, ("frame_id",)),
        (("camera_id",), 17, ("camera_id",)),
        (("camera_id",), "", ("camera_id",)),
        (("frame_ts",), "yesterday", ("frame_ts",)),
        (("frame_width",), 0, ("frame_width",)),
        (("groups",), {"g1": {}}, ("groups",)),
        (("groups", 0, "bbox"), [1, 2, 3], ("groups", 0, "bbox")),
        (("groups", 0, "member_ids"), [], ("groups", 0, "member_ids")),
        (("groups", 0, "mean_confidence"), 1.5, ("groups", 0, "mean_confidence")),
        (("objects", 0, "confidence"), -0.1, ("objects", 0, "confidence")),
        (("objects", 0, "class_name"), None, ("objects", 0, "class_name")),
    ],
)
def test_wrong_types_and_out_of_range_values_are_rejected_at_their_field(path, value, loc):
    data = _detection_dict()
    target = data
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    errs = _errors(DetectionResult, data)
    assert errs[0]["loc"][: len(loc)] == loc


@pytest.mark.parametrize("where", [(), ("groups", 0), ("objects", 0), ("groups", 0, "features"), ("times",)])
def test_unknown_fields_are_rejected_anywhere_in_the_message(where):
    """Drift between producer and consumer is caught at the edge, not silently dropped."""
    data = _detection_dict()
    target = data
    for p in where:
        target = target[p]
    target["surprise"] = 1
    errs = _errors(DetectionResult, data)
    assert errs[0]["type"] == "extra_forbidden"
    assert errs[0]["loc"] == (*where, "surprise")


@pytest.mark.parametrize("version", [2, 0, "2", None])
def test_wrong_schema_version_is_rejected_with_its_own_error_class(version):
    data = _detection_dict()
    data["schema_version"] = version
    with pytest.raises(ValidationError) as ei:
        DetectionResult.model_validate_json(json.dumps(data))
    bad = BadInput.from_validation(ei.value, "detection result")
    assert bad.error_class == "schema_version"
    assert repr(version) in bad.reason


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_rejected(token):
    """NaN would be written back as null (ser_json_inf_nan) and fail at the next stage instead."""
    wire = json.dumps(_detection_dict()).replace('"frame_ts": 1000.0', f'"frame_ts": {token}')
    assert token in wire
    with pytest.raises(ValidationError) as ei:
        DetectionResult.model_validate_json(wire)
    assert ei.value.errors()[0]["loc"] == ("frame_ts",)


@pytest.mark.parametrize(
    "payload, error_class",
    [
        (b'{"message_id": "x"', "malformed_json"),
        (b"\xff\xfe\x00garbage", "malformed_json"),
        (b"[1, 2, 3]", "validation"),
        (b'"a string"', "validation"),
        (b"null", "validation"),
    ],
)
def test_bad_payloads_map_to_a_dead_letter_error_class(payload, error_class):
    with pytest.raises(ValidationError) as ei:
        DetectionResult.model_validate_json(payload)
    bad = BadInput.from_validation(ei.value, "detection result")
    assert bad.error_class == error_class
    assert "\n" not in bad.reason


def test_risk_assessment_tolerates_extra_llm_fields_but_not_a_bad_level():
    ok = RiskAssessment.model_validate_json('{"level": "high", "risk_types": ["tailgating"], "thoughts": "..."}')
    assert ok.level == "high" and ok.risk_types == ["tailgating"]
    with pytest.raises(ValidationError):
        RiskAssessment.model_validate_json('{"level": "extreme"}')
    with pytest.raises(ValidationError):
        RiskAssessment.model_validate_json('{"level": "low", "confidence": 2}')


def test_result_and_dead_letter_reject_unknown_status_and_encoding():
    with pytest.raises(ValidationError):
        RiskAssessmentResult(task_id="t", detection_id="d", camera_id="c", group_id="g", frame_id=1,
                             frame_ts=1.0, status="maybe")
    with pytest.raises(ValidationError):
        DeadLetter(stage="expand", reason="r", error_class="e", payload="p", payload_encoding="latin-1",
                   source="stdin", ts=1.0)


def test_assessment_task_requires_a_known_reason_and_a_deadline():
    good = AssessmentTask(task_id="t", detection_id="d", camera_id="c", frame_id=1, frame_ts=1.0,
                          frame_width=10, frame_height=10, group=detection("c", 1, 1.0).groups[0],
                          objects=[], reason="new", deadline=11.0)
    data = json.loads(good.model_dump_json())
    assert AssessmentTask.model_validate(data) == good
    for field, value in [("reason", "because"), ("deadline", None)]:
        with pytest.raises(ValidationError):
            AssessmentTask.model_validate({**data, field: value})


# ---------------------------------------------------------------- task ids


def test_task_id_is_the_documented_uuid5():
    """Other engines (Flink) must compute the same id: uuid5(namespace, detection_id US group_id)."""
    tid = task_id_for("cam-01:42", "cam-01-g3")
    assert tid == str(uuid.uuid5(TASK_ID_NAMESPACE, "cam-01:42\x1fcam-01-g3"))
    assert uuid.UUID(tid).version == 5


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1), st.text(min_size=1))
def test_task_id_is_deterministic_and_a_uuid5(detection_id, group_id):
    tid = task_id_for(detection_id, group_id)
    assert tid == task_id_for(detection_id, group_id)
    assert tid == str(uuid.uuid5(TASK_ID_NAMESPACE, f"{detection_id}\x1f{group_id}"))


# no lone surrogates (the JSON parser rejects them at the edge) and no unit separator (see report:
# ids containing "\x1f" could collide, e.g. ("a\x1fb", "c") and ("a", "b\x1fc"))
ids = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x1f"),
              min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(ids, ids, ids, ids)
def test_task_ids_differ_when_detection_or_group_differs(d1, g1, d2, g2):
    if (d1, g1) != (d2, g2):
        assert task_id_for(d1, g1) != task_id_for(d2, g2)


def test_task_ids_do_not_collide_on_concatenation():
    """("ab", "c") and ("a", "bc") are different tasks: the separator must keep them apart."""
    assert task_id_for("ab", "c") != task_id_for("a", "bc")
    fleet = {task_id_for(f"cam-{c}:{f}", f"cam-{c}-g{g}") for c in range(5) for f in range(20) for g in range(5)}
    assert len(fleet) == 500


# ---------------------------------------------------------------- `hazardctl schema`


def _example(name: str) -> dict:
    det = detection("cam-01", 3, 1000.0)
    examples = {
        "detection-result": det,
        "assessment-task": AssessmentTask(task_id=task_id_for(det.message_id, "g"), detection_id=det.message_id,
                                          camera_id="cam-01", frame_id=3, frame_ts=1000.0, frame_width=1280,
                                          frame_height=720, group=det.groups[0], objects=det.objects[:2],
                                          reason="new", deadline=1010.0),
        "risk-assessment-result": RiskAssessmentResult(task_id="t", detection_id="d", camera_id="cam-01",
                                                       group_id="g", frame_id=3, frame_ts=1000.0, status="ok",
                                                       level="low", confidence=0.7, key_name="key-01"),
        "dead-letter": DeadLetter(stage="expand", reason="empty line", error_class="empty", payload="",
                                  source="stdin", line=4, ts=1000.0),
        "risk-assessment": RiskAssessment(level="medium", risk_types=["tailgating"]),
        "camera-status": CameraStatus(camera_id="cam-01", state="stale", previous="live", reason="no frame for 5 s",
                                      since=1000.0, ts=1001.0, heartbeat_s=10.0),
        "incident-action": IncidentAction(incident_id="inc-1", camera_id="cam-01", action="ack", note="on it",
                                          actor="desk 3", at=1002.0, origin="consume-a"),
    }
    return json.loads(examples[name].model_dump_json())


def test_hazardctl_schema_prints_a_valid_json_schema_for_every_message():
    names = list(MESSAGE_MODELS)
    procs = {n: subprocess.Popen([*HAZARDCTL, "schema", n], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for n in names}  # in parallel: each start costs ~0.5 s of imports
    listing = subprocess.run([*HAZARDCTL, "schema"], cwd=ROOT, capture_output=True, timeout=60)
    assert listing.returncode == 0, listing.stderr.decode()
    assert listing.stdout.decode().split() == names
    for name, p in procs.items():
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
        schema = json.loads(out)
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(_example(name), schema, cls=jsonschema.Draft202012Validator)
        if MESSAGE_MODELS[name].model_config.get("extra") == "forbid":  # the schema has teeth
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate({**_example(name), "surprise": 1}, schema, cls=jsonschema.Draft202012Validator)
        required = next(n for n, f in MESSAGE_MODELS[name].model_fields.items() if f.is_required())
        with pytest.raises(jsonschema.ValidationError):  # and a missing required field fails
            jsonschema.validate({k: v for k, v in _example(name).items() if k != required}, schema,
                                cls=jsonschema.Draft202012Validator)


def test_hazardctl_schema_unknown_name_is_one_line_and_exit_2():
    r = subprocess.run([*HAZARDCTL, "schema", "no-such-message"], cwd=ROOT, capture_output=True, timeout=60)
    assert r.returncode == 2
    err = r.stderr.decode().strip()
    assert "no-such-message" in err and "detection-result" in err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
