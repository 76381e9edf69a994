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


def assessment(digest: bytes, prompt: str) -> dict:
    """A plausible RiskAssessment (most groups none/low, some medium/high) as a dict."""
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
