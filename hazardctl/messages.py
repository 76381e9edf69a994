"""Message contracts between stages (spec §3).

Every message is a pydantic v2 model with a `schema_version`, snake_case fields and a `times`
record of the stages it passed, so end-to-end latency can be split by stage. Validation happens at
the edges (a stage's input); inside a stage the hot path builds outputs without re-validating.
All timestamps are Unix epoch seconds (float).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

#: Namespace for deterministic task ids; changing it would change every task id.
TASK_ID_NAMESPACE = uuid.UUID("6f1c2a7e-4b1d-4e55-9a39-2f0b1c7d9e10")

BBox = Annotated[
    tuple[float, float, float, float],
    Field(description="x1, y1, x2, y2 in frame pixels"),
]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
RiskLevel = Literal["none", "low", "medium", "high"]
RISK_LEVELS: tuple[RiskLevel, ...] = ("none", "low", "medium", "high")
#: why expand sent a task, most urgent first (schedule serves and sheds in this order)
TaskReason = Literal["suspect", "new", "changed", "refresh"]


class Message(BaseModel):
    """Base for all wire messages: strict about unknown fields so drift is caught at the edge."""

    model_config = ConfigDict(extra="forbid", frozen=False, ser_json_inf_nan="null", allow_inf_nan=False)


class StageTimes(Message):
    """When a message passed each stage; a stage fills its own field and copies the rest."""

    capture: float | None = None
    detect: float | None = None
    published: float | None = None
    expand: float | None = None
    dequeue: float | None = None
    llm_start: float | None = Field(default=None, description="the HTTP exchange of the attempt that answered")
    llm_end: float | None = None
    llm_attempts: list[tuple[float, float]] | None = Field(
        default=None, description="every attempt's HTTP exchange (start, end), the answering one last; earlier "
                                  "ones are retry time, not our overhead")
    result: float | None = None
    alert: float | None = None


class DetectorInfo(Message):
    model: str
    version: str = ""


class Motion(Message):
    """How a tracked object moves, estimated from its recent boxes (hazardctl/kinematics.py).

    Image pixels and seconds (capture times, never frame counts); optional on the wire so older
    producers and consumers keep working.
    """

    vx: float = Field(description="px/s, + is right")
    vy: float = Field(description="px/s, + is down")
    speed: float = Field(ge=0.0, description="px/s")
    heading_deg: float = Field(ge=-180.0, le=180.0, description="atan2(vy, vx) in degrees: 0 right, 90 down")
    stopped_s: float = Field(ge=0.0, description="how long it has been stopped; 0 while it moves")
    samples: int = Field(ge=1, description="boxes behind the estimate")
    speed_kmh: float | None = Field(default=None, ge=0.0,
                                    description="ground speed, km/h; only on a calibrated camera (issue 19)")


class DetectedObject(Message):
    object_id: int = Field(ge=0, description="index of the object within its frame")
    class_name: str
    class_id: int = Field(ge=0)
    confidence: Probability
    bbox: BBox
    track_id: int | None = None
    motion: Motion | None = Field(default=None, description="kinematics of its track; None when untracked or new")
    zones: list[str] | None = Field(default=None, description="names of the camera's zones its ground point is in "
                                    "(issue 19); None: the camera has no zones")
    coasted: bool | None = Field(default=None, description="True: the detector missed it on this frame; the box is "
                                 "predicted from its track's motion (seen on the frame before); None: detected")


class SpatialFeatures(Message):
    density_per_10k_px2: float = Field(ge=0.0)
    mean_spacing: float = Field(ge=0.0)
    min_spacing: float = Field(ge=0.0)
    vehicle_count: int = Field(ge=0)
    pedestrian_count: int = Field(ge=0)
    min_pedestrian_vehicle_distance: float | None = None


PairKind = Literal["vehicle-pedestrian", "vehicle-cyclist", "vehicle-vehicle"]


class PairCue(Message):
    """One pair of road users under constant-velocity prediction (hazardctl/cues.py)."""

    kind: PairKind
    object_ids: tuple[int, int] = Field(description="the pair's object ids, vehicle first")
    gap: float = Field(ge=0.0, description="edge gap between the two boxes now, px")
    closing_speed: float = Field(description="px/s at which the gap shrinks (negative: opening)")
    ttc_s: float | None = Field(default=None, ge=0.0, description="time until the gap reaches 0; None: no contact")
    min_gap: float = Field(ge=0.0, description="smallest predicted gap within the horizon, px")
    min_gap_in_s: float = Field(ge=0.0, description="when that smallest gap is reached, s from now")
    size: float = Field(gt=0.0, description="the pair's scale: mean box diagonal, px")
    gap_m: float | None = Field(default=None, ge=0.0, description="ground distance between the two road users' "
                                "ground points, metres; only on a calibrated camera (issue 19)")


class GroupCues(Message):
    """The group's worst motion cues; the gate reads them and decides, it never measures."""

    conflict_possible: bool = Field(
        description="a vehicle with a pedestrian, cyclist or another vehicle in closing motion; False: calm")
    min_ttc_s: float | None = Field(default=None, ge=0.0)
    max_closing_speed: float | None = Field(default=None, description="px/s")
    min_gap_ratio: float | None = Field(default=None, ge=0.0,
                                        description="smallest predicted gap within the horizon / the pair's size")
    pair: PairCue | None = Field(default=None, description="the worst pair (lowest TTC, else smallest gap ratio)")
    flags: list[str] = Field(default_factory=list, description="named boolean cues, e.g. zone cues")


class GroupFrame(Message):
    """An earlier look at the group's region (issue 19.4): the model sees motion, not one still."""

    offset_s: float = Field(le=0.0, description="capture time relative to the task's frame, s (e.g. -2.0)")
    kind: Literal["crop", "context"] = Field(description="crop: the group's region; context: the whole frame, small")
    jpeg_b64: str
    size: tuple[int, int] = Field(description="width, height")


class Group(Message):
    """Road users close together; `group_id` is stable across frames for the same physical group."""

    group_id: str = Field(min_length=1, max_length=128)
    member_ids: list[int] = Field(min_length=1)
    bbox: BBox
    classes: list[str]
    mean_confidence: Probability
    features: SpatialFeatures
    crop_jpeg_b64: str | None = Field(default=None, description="JPEG crop, base64, carried once")
    crop_size: tuple[int, int] | None = Field(default=None, description="crop width, height")
    cues: GroupCues | None = Field(default=None, description="motion cues; None without tracking")
    zones: list[str] | None = Field(default=None, description="zones its members are in (issue 19); None: no zones")
    frames: list[GroupFrame] | None = Field(
        default=None, description="earlier crops of the same region (oldest first) and an optional whole-frame "
        "thumbnail, for `suspect` and `new` tasks only; the crop above is the latest frame")


class DetectionResult(Message):
    schema_version: Literal[1] = SCHEMA_VERSION
    message_id: str = Field(min_length=1, max_length=128)
    camera_id: str = Field(min_length=1, max_length=128)
    frame_id: int = Field(ge=0)
    frame_ts: float = Field(description="capture time of the frame")
    frame_width: int = Field(gt=0)
    frame_height: int = Field(gt=0)
    detector: DetectorInfo
    objects: list[DetectedObject] = Field(default_factory=list)
    groups: list[Group] = Field(default_factory=list)
    times: StageTimes = Field(default_factory=StageTimes)


class AssessmentTask(Message):
    """One group to assess; the id is deterministic so a redelivered detection is idempotent."""

    schema_version: Literal[1] = SCHEMA_VERSION
    task_id: str
    detection_id: str
    camera_id: str
    frame_id: int
    frame_ts: float
    frame_width: int
    frame_height: int
    group: Group
    objects: list[DetectedObject] = Field(description="the group's members, for the prompt")
    reason: TaskReason = Field(
        description="why the gate sent it; schedule ranks suspect > new > changed > refresh")
    deadline: float = Field(description="after this time the task is stale and is not assessed")
    times: StageTimes = Field(default_factory=StageTimes)


class RiskAssessment(Message):
    """What the LLM must answer: one strict JSON object (validated, retried once if malformed)."""

    model_config = ConfigDict(extra="ignore")

    level: RiskLevel
    risk_types: list[str] = Field(default_factory=list, max_length=5)
    description: str = ""
    confidence: Probability = 0.5
    danger_object_ids: list[int] = Field(default_factory=list)


class RiskAssessmentResult(Message):
    schema_version: Literal[1] = SCHEMA_VERSION
    task_id: str
    detection_id: str
    camera_id: str
    group_id: str
    frame_id: int
    frame_ts: float
    status: Literal["ok", "failed", "stale"]
    level: RiskLevel | None = None
    risk_types: list[str] = Field(default_factory=list)
    description: str = ""
    confidence: Probability | None = None
    danger_object_ids: list[int] = Field(default_factory=list)
    key_name: str | None = Field(default=None, description="name of the API key used, never the secret")
    model: str | None = None
    prompt_version: str | None = Field(default=None, description="short hash of the prompt template, language included")
    answer_normalized: list[str] = Field(
        default_factory=list, description="rules the tolerant reader needed to read the answer; empty: strict")
    attempts: int = Field(default=0, ge=0)
    error_class: str | None = None
    crop_jpeg_b64: str | None = Field(default=None, description="the assessed crop, for operators")
    frames: list[GroupFrame] | None = Field(
        default=None, description="the task's other images the model saw with the crop (the group's earlier crops, "
        "a thumbnail; oldest first): kept as evidence with it")
    times: StageTimes = Field(default_factory=StageTimes)
    variant: str | None = Field(default=None, description="the schedule variant that judged it (issue 22)")
    tokens: int | None = Field(default=None, ge=0, description="tokens the provider counted for the last call")


class DeadLetter(Message):
    """An input a stage could not handle: kept whole, with where it came from and why."""

    schema_version: Literal[1] = SCHEMA_VERSION
    stage: str
    reason: str
    error_class: str
    payload: str = Field(description="the original payload (UTF-8, or base64 when not text)")
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    source: str = Field(description="e.g. 'stdin', 'file:x.jsonl' or 'kafka:topic'")
    line: int | None = None
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    attempts: int = 0
    last_error: str | None = None
    ts: float


MESSAGE_MODELS: dict[str, type[Message]] = {
    "detection-result": DetectionResult,
    "assessment-task": AssessmentTask,
    "risk-assessment-result": RiskAssessmentResult,
    "dead-letter": DeadLetter,
    "risk-assessment": RiskAssessment,
}  # + "camera-status" and "incident-action", registered below their classes


def task_id_for(detection_id: str, group_id: str) -> str:
    """Deterministic task id (a UUIDv5): redelivery of the same detection yields the same id."""
    digest = hashlib.sha1(_NS_BYTES + f"{detection_id}\x1f{group_id}".encode()).digest()
    h = bytearray(digest[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


_NS_BYTES = TASK_ID_NAMESPACE.bytes


#: a camera's health as detect sees it: frozen = the same frame again and again, blank = black/uniform frames
CameraHealthState = Literal["live", "stale", "frozen", "blank", "ended"]


class CameraStatus(Message):
    """A camera's health from detect (issue 18.6): sent on every change of state and as a heartbeat.

    It travels on its own topic (`detect --status-out`, e.g. kafka://camera-status), keyed by camera
    id, never on detection-results: expand would dead-letter it there (it is not a detection).
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    type: Literal["camera-status"] = "camera-status"
    camera_id: str = Field(min_length=1, max_length=128)
    state: CameraHealthState
    previous: CameraHealthState | None = Field(default=None, description="the state before; None for a heartbeat")
    reason: str = Field(default="", max_length=500)
    since: float = Field(description="when the camera entered this state")
    ts: float = Field(description="when this status was sent")
    last_frame_ts: float | None = Field(default=None, description="capture time of the last usable frame")
    reconnects: int = Field(default=0, ge=0)
    heartbeat_s: float | None = Field(default=None, gt=0, description="detect re-sends the status this often; "
                                      "a camera unheard of for 3× this is reported as not reporting")
    snapshot_jpeg_b64: str | None = Field(default=None, description="a small recent frame with the camera's zones, "
                                          "lanes and detections drawn on it (hazardctl/scene_draw.py), every "
                                          "`detect --snapshot-every` s; the page shows it")
    snapshot_size: tuple[int, int] | None = Field(default=None, description="the snapshot's width, height")
    snapshot_ts: float | None = Field(default=None, description="capture time of the snapshot's frame")


MESSAGE_MODELS["camera-status"] = CameraStatus


class IncidentAction(Message):
    """An operator's ack / resolve / false positive, shared by the consume instance that took it with
    the others (`consume --actions`, e.g. kafka://incident-actions, keyed by camera id), so every
    instance's clients see it and every instance's store records it."""

    schema_version: Literal[1] = SCHEMA_VERSION
    type: Literal["incident-action"] = "incident-action"
    incident_id: str = Field(min_length=1, max_length=128)
    camera_id: str = Field(min_length=1, max_length=128)
    action: Literal["ack", "resolve", "false_positive"]
    note: str | None = Field(default=None, max_length=2000)
    actor: str | None = Field(default=None, max_length=64, description="who, as the operator gave it")
    at: float = Field(description="when the operator acted (the instance that took it)")
    origin: str = Field(min_length=1, max_length=128, description="the consume instance that took it")


MESSAGE_MODELS["incident-action"] = IncidentAction
