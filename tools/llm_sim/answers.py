"""What the simulated vision LLM says, how long it takes, and which faults it injects.

Pure logic (no HTTP, no clock): the answer is a deterministic function of the request (a hash of
its images and prompt, plus the seed), so a run is reproducible; latencies and fault coin flips
come from a seeded `random.Random` passed in.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from hazardctl.errors import ConfigError

# --------------------------------------------------------------------------------------- latency

#: z-score of the 95th percentile of a standard normal distribution.
_Z95 = 1.6448536269514722


@dataclass(frozen=True)
class Latency:
    """A latency distribution parsed from `fixed:S`, `uniform:MIN:MAX` or `lognormal:MEDIAN:P95`."""

    kind: Literal["fixed", "uniform", "lognormal"]
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> "Latency":
        parts = spec.strip().split(":")
        try:
            nums = [float(p) for p in parts[1:]]
        except ValueError:
            nums = []
        kind = parts[0]
        ok = (
            (kind == "fixed" and len(nums) == 1 and nums[0] >= 0)
            or (kind == "uniform" and len(nums) == 2 and 0 <= nums[0] <= nums[1])
            or (kind == "lognormal" and len(nums) == 2 and 0 < nums[0] <= nums[1])
        )
        if not ok:
            raise ConfigError(
                f"latency {spec!r}: expected fixed:S, uniform:MIN:MAX (MIN<=MAX) or lognormal:MEDIAN:P95 (0<MEDIAN<=P95)"
            )
        return cls(kind, nums[0], nums[1] if len(nums) > 1 else 0.0)  # type: ignore[arg-type]

    @property
    def sigma(self) -> float:
        """Lognormal shape: p95 = median · exp(1.645 σ)."""
        return math.log(self.b / self.a) / _Z95 if self.kind == "lognormal" else 0.0

    def sample(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        return self.a * math.exp(self.sigma * rng.gauss(0.0, 1.0))

    def __str__(self) -> str:
        nums = [self.a] if self.kind == "fixed" else [self.a, self.b]
        return ":".join([self.kind, *(f"{n:g}" for n in nums)])


# ---------------------------------------------------------------------------------------- faults

FaultKind = Literal[
    "unauthorized", "rate_limit_storm", "server_error_burst", "timeout", "malformed", "latency_spike"
]
FAULT_KINDS: tuple[str, ...] = FaultKind.__args__  # type: ignore[attr-defined]


class Fault(BaseModel):
    """One injected fault of a key; the parameters that do not apply to its kind are ignored."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    retry_after: float = Field(5.0, gt=0, description="rate_limit_storm: the Retry-After it announces (s)")
    count: int | None = Field(None, ge=1, description="server_error_burst: fail the next COUNT requests")
    probability: float | None = Field(
        None, ge=0.0, le=1.0,
        description="server_error_burst (when no count), malformed, latency_spike: chance per request (default 1)")
    seconds: float = Field(60.0, ge=0, description="timeout: hang this long before answering")
    extra_s: float = Field(5.0, ge=0, description="latency_spike: seconds added to the answer's latency")


@dataclass
class Decision:
    """What a fault does to one request: answer a status, hang, add latency, or spoil the content."""

    status: int | None = None
    retry_after: float | None = None
    hang_s: float = 0.0
    extra_s: float = 0.0
    malformed: bool = False
    clear: bool = False  # the fault is used up (a counted burst) and should be removed


_5XX = (500, 502, 503)


def decide(fault: Fault | None, stage: Literal["auth", "limit", "answer"], rng: random.Random) -> Decision | None:
    """The fault's effect at one point of handling a request (before auth, rate limit, or answer).

    `unauthorized` acts at auth (a revoked key); `rate_limit_storm` replaces the rate limiter (no
    token is spent); the others act on a request the limiter admitted.
    """
    if fault is None:
        return None
    k = fault.kind
    if stage == "auth":
        return Decision(status=401) if k == "unauthorized" else None
    if stage == "limit":
        return Decision(status=429, retry_after=fault.retry_after) if k == "rate_limit_storm" else None
    p = 1.0 if fault.probability is None else fault.probability
    if k == "server_error_burst":
        if fault.count is not None:
            fault.count -= 1
            return Decision(status=rng.choice(_5XX), clear=fault.count <= 0)
        return Decision(status=rng.choice(_5XX)) if rng.random() < p else None
    if k == "timeout":
        return Decision(hang_s=fault.seconds)
    if k == "malformed":
        return Decision(malformed=True) if rng.random() < p else None
    if k == "latency_spike":
        return Decision(extra_s=fault.extra_s) if rng.random() < p else None
    return None


def parse_fault_flag(text: str) -> tuple[str, Fault]:
    """`NAME=KIND[,param=value...]` (the CLI's --fault) → (key name, Fault)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise ConfigError(f"--fault {text!r}: expected KEY_NAME=FAULT[,param=value...], e.g. sim-key-03=unauthorized")
    kind, *params = rest.split(",")
    data: dict[str, object] = {"kind": kind}
    for p in params:
        k, sep, v = p.partition("=")
        if not sep:
            raise ConfigError(f"--fault {text!r}: parameter {p!r} is not param=value")
        data[k.strip()] = v.strip()
    return name, make_fault(data, where=f"--fault {text}")


def make_fault(data: dict, where: str) -> Fault:
    from pydantic import ValidationError

    from hazardctl.config import describe_validation_error

    if data.get("kind") not in FAULT_KINDS:
        raise ConfigError(f"{where}: unknown fault {data.get('kind')!r}; one of: {', '.join(FAULT_KINDS)}")
    try:
        return Fault.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(e, where)) from None


# --------------------------------------------------------------------------------------- answers

_LEVELS = (("none", 0.42), ("low", 0.33), ("medium", 0.17), ("high", 0.08))
_PEDESTRIAN_RISKS = ("vehicle-pedestrian conflict", "pedestrian in roadway", "jaywalking")
_VEHICLE_RISKS = (
    "tailgating", "abrupt lane change", "wrong-way driving", "red-light running",
    "emergency lane use", "unsafe merge", "speeding in queue",
)
_CALM = ("normal traffic flow", "ordinary congestion", "vehicles stopped in queue", "uncertain scene")
_DESCRIPTIONS = {
    "none": "Road users are close together but moving normally; no hazard is visible.",
    "low": "Dense traffic with small gaps; {risk} is possible but nobody is in immediate danger.",
    "medium": "{risk} observed: a road user is closer than is safe; worth an operator's attention.",
    "high": "{risk}: a collision looks imminent unless someone brakes or swerves now.",
}
_OBJECT_ID = re.compile(r"(?:object_id|\bid)\W{0,3}(\d{1,4})\b", re.IGNORECASE)
#: COCO classes of vulnerable road users as they appear in an object list (not the word
#: "pedestrian", which prompts use in their instructions whatever the scene holds).
_VULNERABLE = re.compile(r"\b(?:person|bicycle)\b", re.IGNORECASE)


def request_digest(images: list[str], prompt: str, seed: int) -> bytes:
    """The fingerprint an answer is derived from: same crop + prompt + seed → same answer."""
    h = hashlib.blake2b(digest_size=32)
    h.update(seed.to_bytes(8, "little", signed=True))
    for img in images:
        h.update(img.encode("utf-8", "replace"))
        h.update(b"\x00")
    h.update(prompt.encode("utf-8", "replace"))
    return h.digest()


def _unit(digest: bytes, i: int) -> float:
    """A number in [0, 1) from two bytes of the digest."""
    return int.from_bytes(digest[2 * i: 2 * i + 2], "big") / 65536.0


_CJK = re.compile(r"[\u4e00-\u9fff]")
_RISKS_ZH = {
    "vehicle-pedestrian conflict": "人车冲突", "pedestrian in roadway": "行人进入车道", "jaywalking": "行人横穿马路",
    "tailgating": "跟车过近", "abrupt lane change": "突然变道", "wrong-way driving": "逆行",
    "red-light running": "闯红灯", "emergency lane use": "占用应急车道", "unsafe merge": "危险并线",
    "speeding in queue": "排队中超速", "normal traffic flow": "正常通行", "ordinary congestion": "普通拥堵",
    "vehicles stopped in queue": "车辆排队停驶", "uncertain scene": "场景不确定",
}
_DESCRIPTIONS_ZH = {
    "none": "道路使用者距离较近但通行正常，未见危险。",
    "low": "车流密集、间距较小，可能出现{risk}，但暂无人处于直接危险中。",
    "medium": "观察到{risk}：有道路使用者距离过近，值得值班人员关注。",
    "high": "{risk}：除非有人立即刹车或避让，碰撞即将发生。",
}


def assessment(digest: bytes, prompt: str) -> dict:
    """A plausible RiskAssessment (most groups none/low, some medium/high) as a dict; risk types and
    description in Chinese when the prompt is (the JSON keys and level values stay as asked)."""
    body = _assessment_en(digest, prompt)
    if _CJK.search(prompt):
        body["risk_types"] = [_RISKS_ZH.get(r, r) for r in body["risk_types"]]
        body["description"] = _DESCRIPTIONS_ZH[body["level"]].format(risk=body["risk_types"][0])
    return body


def _assessment_en(digest: bytes, prompt: str) -> dict:
    u = _unit(digest, 0)
    level = "high"
    for name, share in _LEVELS:
        if u < share:
            level = name
            break
        u -= share
    pool = _VEHICLE_RISKS + (_PEDESTRIAN_RISKS if _VULNERABLE.search(prompt) else ())
    if level == "none":
        pool = _CALM
    n = 1 + int(_unit(digest, 1) * 3)
    start = int(_unit(digest, 2) * len(pool))
    risk_types = list(dict.fromkeys(pool[(start + 3 * i) % len(pool)] for i in range(n)))
    ids = sorted({int(m) for m in _OBJECT_ID.findall(prompt)}) or [0, 1]
    danger: list[int] = []
    if level in ("medium", "high"):
        first = int(_unit(digest, 3) * len(ids))
        danger = sorted({ids[first], ids[(first + 1) % len(ids)]})
    confidence = round(0.55 + 0.4 * _unit(digest, 4), 2)
    return {
        "level": level,
        "risk_types": risk_types,
        "description": _DESCRIPTIONS[level].format(risk=risk_types[0].capitalize()),
        "confidence": confidence,
        "danger_object_ids": danger,
    }


def answer_content(digest: bytes, prompt: str, malformed: bool = False) -> str:
    """The assistant message content: one strict JSON object, or (malformed) something that is not."""
    body = assessment(digest, prompt)
    if not malformed:
        return orjson.dumps(body).decode()
    if digest[10] % 2:
        return "Sure! Here is my assessment: {level: " + body["level"] + ", risk_types: [" + body["risk_types"][0]
    body.pop("level")
    return orjson.dumps(body).decode()


# ------------------------------------------------------------------------ answer variants (issue 12)
#
# How real vision models drift from the asked format. Each variant rewrites the strict assessment
# the way some model or provider does; `READABLE` ones must still be read by hazardctl's tolerant
# reader (`hazardctl.answers`) as the same level, the others must be rejected. The corpus in
# tests/data/answers/ holds fixed examples of the same variants.

_ZH_LEVEL = {"none": "无", "low": "低", "medium": "中", "high": "高"}
_SCORE = {"none": 0.1, "low": 0.3, "medium": 0.55, "high": 0.85}
_GARBAGE = (
    "The image shows several vehicles on a road. Traffic appears to be moving. Let me know if you need more.",
    "level high risk tailgating confidence 0.9",
    "ERROR: image could not be processed",
    "<html><body>Service temporarily unavailable</body></html>",
)


def _v_strict(b: dict, d: bytes) -> tuple[str, str]:
    return orjson.dumps(b).decode(), "stop"


def _v_fenced(b: dict, d: bytes) -> tuple[str, str]:
    return "```json\n" + orjson.dumps(b, option=orjson.OPT_INDENT_2).decode() + "\n```", "stop"


def _v_prose(b: dict, d: bytes) -> tuple[str, str]:
    return ("Here is my assessment of the scene:\n" + orjson.dumps(b).decode()
            + "\nLet me know if you need anything else."), "stop"


def _v_think(b: dict, d: bytes) -> tuple[str, str]:
    return ("<think>\nThe crop shows the listed road users. I should check the distances {first} and the"
            " lanes before deciding on a level.\n</think>\n\n" + orjson.dumps(b).decode()), "stop"


def _v_synonyms(b: dict, d: bytes) -> tuple[str, str]:
    return orjson.dumps({"risk_level": b["level"], "risk_type": b["risk_types"], "reason": b["description"],
                         "certainty": b["confidence"], "danger_ids": b["danger_object_ids"]}).decode(), "stop"


def _v_camel(b: dict, d: bytes) -> tuple[str, str]:
    return orjson.dumps({"riskLevel": b["level"].upper(), "riskTypes": ", ".join(b["risk_types"]),
                         "description": b["description"], "confidence": f"{round(b['confidence'] * 100)}%",
                         "dangerObjectIds": [str(i) for i in b["danger_object_ids"]]}).decode(), "stop"


def _v_zh(b: dict, d: bytes) -> tuple[str, str]:
    return orjson.dumps({"风险等级": _ZH_LEVEL[b["level"]], "风险类型": b["risk_types"], "描述": b["description"],
                         "置信度": b["confidence"], "危险对象": b["danger_object_ids"]}).decode(), "stop"


def _v_numbers(b: dict, d: bytes) -> tuple[str, str]:
    return orjson.dumps({**b, "level": ("none", "low", "medium", "high").index(b["level"])}).decode(), "stop"


def _v_score(b: dict, d: bytes) -> tuple[str, str]:
    body = {k: v for k, v in b.items() if k != "level"}
    return orjson.dumps({"risk_score": _SCORE[b["level"]], **body}).decode(), "stop"


def _v_relaxed(b: dict, d: bytes) -> tuple[str, str]:
    types = ", ".join(f"'{t}'" for t in b["risk_types"])
    ids = ", ".join(str(i) for i in b["danger_object_ids"])
    desc = b["description"].replace("'", "")
    return (f"{{'level': '{b['level']}', 'risk_types': [{types},], 'description': '{desc}', "
            f"'confidence': {b['confidence']}, 'danger_object_ids': [{ids}],}}"), "stop"


def _v_list(b: dict, d: bytes) -> tuple[str, str]:
    return orjson.dumps([b]).decode(), "stop"


def _v_nested(b: dict, d: bytes) -> tuple[str, str]:
    return orjson.dumps({"assessment": b}).decode(), "stop"


def _v_garbage(b: dict, d: bytes) -> tuple[str, str]:
    return _GARBAGE[d[12] % len(_GARBAGE)], "stop"


def _v_truncated(b: dict, d: bytes) -> tuple[str, str]:
    text = orjson.dumps(b).decode()
    return text[: max(12, len(text) // 2)], "length"


def _v_refusal(b: dict, d: bytes) -> tuple[str, str]:
    return "I'm sorry, but I can't help with assessing this image.", "stop"


def _v_empty(b: dict, d: bytes) -> tuple[str, str]:
    return "", "stop"


def _v_no_level(b: dict, d: bytes) -> tuple[str, str]:
    return orjson.dumps({k: v for k, v in b.items() if k != "level"}).decode(), "stop"


def _v_ambiguous(b: dict, d: bytes) -> tuple[str, str]:
    other = "high" if b["level"] != "high" else "none"
    return orjson.dumps(b).decode() + "\n" + orjson.dumps({**b, "level": other}).decode(), "stop"


VARIANTS = {
    "strict": _v_strict, "fenced": _v_fenced, "prose": _v_prose, "think": _v_think, "synonyms": _v_synonyms,
    "camel": _v_camel, "zh": _v_zh, "numbers": _v_numbers, "score": _v_score, "relaxed": _v_relaxed,
    "list": _v_list, "nested": _v_nested,
    "garbage": _v_garbage, "truncated": _v_truncated, "refusal": _v_refusal, "empty": _v_empty,
    "no_level": _v_no_level, "ambiguous": _v_ambiguous,
}
#: variants the tolerant reader reads (as the same level); the others it must reject
READABLE = ("strict", "fenced", "prose", "think", "synonyms", "camel", "zh", "numbers", "score", "relaxed", "list",
            "nested")


def answer_variant(digest: bytes, prompt: str, variant: str) -> tuple[str, str]:
    """(content, finish_reason) of the assessment for this request, written the `variant` way."""
    body = assessment(digest, prompt)
    return VARIANTS[variant](body, digest)


@dataclass(frozen=True)
class AnswerMix:
    """`strict:0.7,fenced:0.1,zh:0.2`: the share of answers written each way (normalised to 1)."""

    weights: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, spec: str) -> "AnswerMix":
        out: dict[str, float] = {}
        for part in (p.strip() for p in spec.split(",")):
            name, _, w = part.partition(":")
            name = name.strip()
            if name not in VARIANTS:
                raise ConfigError(f"answer mix {spec!r}: unknown variant {name!r}; one of: {', '.join(VARIANTS)}")
            try:
                weight = float(w) if w.strip() else 1.0
            except ValueError:
                weight = -1.0
            if not (weight >= 0 and math.isfinite(weight)):
                raise ConfigError(f"answer mix {spec!r}: {part!r} needs a share >= 0, e.g. {name}:0.1")
            out[name] = out.get(name, 0.0) + weight
        total = sum(out.values())
        if total <= 0:
            raise ConfigError(f"answer mix {spec!r}: the shares add up to 0")
        return cls(tuple((n, w / total) for n, w in out.items() if w > 0))

    @property
    def only_strict(self) -> bool:
        return self.weights == (("strict", 1.0),)

    def draw(self, rng: random.Random) -> str:
        """One variant; strict-only draws nothing (so the default keeps the seeded sequence as it was)."""
        if self.only_strict:
            return "strict"
        u = rng.random()
        for name, w in self.weights:
            if u < w:
                return name
            u -= w
        return self.weights[-1][0]

    def __str__(self) -> str:
        return ",".join(f"{n}:{w:g}" for n, w in self.weights)
