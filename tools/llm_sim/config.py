"""Configuration of the LLM simulator: its keys (limits, faults) and how it answers.

Loaded from YAML (`config/llm_sim.yaml`) or built from the `hazardctl llm-sim` flags; flags that
were given override the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hazardctl.config import load_model, parse_model
from hazardctl.errors import ConfigError
from tools.llm_sim.answers import Fault, Latency, parse_fault_flag


class UnknownKey(ConfigError):
    """A key name the simulator was not configured with."""


class SimKey(BaseModel):
    """One API key the simulator accepts, with its server-side limits and an optional fault."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    api_key: str = Field(min_length=1, repr=False, description="the Bearer secret (fake in the simulator)")
    qps: float = Field(5.0, gt=0, description="token bucket: capacity qps, refilled qps per second")
    rpm: int | None = Field(None, ge=1, description="at most rpm requests in any sliding 60 s window")
    fault: Fault | None = None

    @field_validator("fault", mode="before")
    @classmethod
    def _fault_shorthand(cls, v: Any) -> Any:
        return {"kind": v} if isinstance(v, str) else v


class SimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[SimKey] = Field(min_length=1)
    latency: str = Field("uniform:1.0:2.0", description="fixed:S | uniform:MIN:MAX | lognormal:MEDIAN:P95")
    model: str = "qwen-vl-plus"
    seed: int = 1
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535, description="0: an ephemeral port")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    tolerance_s: float = Field(
        0.0, ge=0.0, le=1.0,
        description="accept a request this much earlier than the limits allow (network jitter); 0 = exact")

    @field_validator("latency")
    @classmethod
    def _latency(cls, v: str) -> str:
        try:
            return str(Latency.parse(v))
        except ConfigError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _unique(self) -> "SimConfig":
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise ValueError("key names must be unique")
        if len({k.api_key for k in self.keys}) != len(self.keys):
            raise ValueError("api keys must be unique")
        return self

    def key(self, name: str) -> SimKey:
        for k in self.keys:
            if k.name == name:
                return k
        raise UnknownKey(f"no simulated key named {name!r}; known: {', '.join(k.name for k in self.keys)}")


def generated_keys(n: int, qps: float = 5.0, rpm: int | None = None) -> list[SimKey]:
    """`sim-key-01..NN` with secrets `sim-secret-01..NN` (obviously fake, safe to print in docs)."""
    if n < 1:
        raise ConfigError(f"--keys {n}: need at least one key")
    width = max(2, len(str(n)))
    return [SimKey(name=f"sim-key-{i:0{width}d}", api_key=f"sim-secret-{i:0{width}d}", qps=qps, rpm=rpm)
            for i in range(1, n + 1)]


def build_config(
    config: str | Path | None = None,
    *,
    keys: int | None = None,
    qps: float | None = None,
    rpm: int | None = None,
    latency: str | None = None,
    faults: list[str] = (),  # type: ignore[assignment]
    seed: int | None = None,
    host: str | None = None,
    port: int | None = None,
    model: str | None = None,
) -> SimConfig:
    """The CLI's config: the YAML file (or 10 generated keys), then each flag that was given."""
    data: dict[str, Any] = load_model(SimConfig, config).model_dump() if config else {}
    where = str(config) if config else "llm-sim flags"
    if keys is not None or not data:
        data["keys"] = [k.model_dump() for k in generated_keys(keys or 10, qps or 5.0, rpm)]
    for k in data["keys"]:
        if qps is not None:
            k["qps"] = qps
        if rpm is not None:
            k["rpm"] = rpm
    for flag, value in (("latency", latency), ("seed", seed), ("host", host), ("port", port), ("model", model)):
        if value is not None:
            data[flag] = value
    cfg = parse_model(SimConfig, data, where)
    for text in faults:
        name, fault = parse_fault_flag(text)
        cfg.key(name).fault = fault
    return cfg
