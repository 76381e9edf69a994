"""Configuration of the LLM simulator: its keys and accounts (limits, faults) and how it answers.

Loaded from YAML (`config/llm_sim.yaml`) or built from the `hazardctl llm-sim` flags; flags that
were given override the file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from hazardctl.config import load_model, parse_model
from hazardctl.errors import ConfigError
from tools.llm_sim.answers import AnswerMix, Fault, Latency, parse_fault_flag
from tools.llm_sim.limits import LimiterModel, Limits
from tools.llm_sim.refusals import ErrorStyle

#: The fault name that puts a key's account in arrears (handled here, not in `answers`).
BILLING = "billing"


class UnknownKey(ConfigError):
    """A key name the simulator was not configured with."""


class SimKey(BaseModel):
    """One API key the simulator accepts, with its server-side limits and an optional fault."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    api_key: str = Field(min_length=1, repr=False, description="the Bearer secret (fake in the simulator)")
    qps: float = Field(5.0, gt=0, description="requests per second (under the configured limiter model)")
    rpm: int | None = Field(None, ge=1, description="requests per minute")
    tps: int | None = Field(None, ge=1, description="tokens per second")
    tpm: int | None = Field(None, ge=1, description="tokens per minute")
    account: str | None = Field(None, description="the account (of `accounts`) whose limits this key shares")
    fault: Fault | None = None
    billing: bool = Field(False, description="answer every request as an account in arrears (insufficient quota)")

    @field_validator("fault", mode="before")
    @classmethod
    def _fault_shorthand(cls, v: Any) -> Any:
        return {"kind": v} if isinstance(v, str) else v

    @property
    def limits(self) -> Limits:
        return Limits(self.qps, self.rpm, self.tps, self.tpm)


class SimAccount(BaseModel):
    """Limits shared by every key that names this account (summed over its keys, like DashScope)."""

    model_config = ConfigDict(extra="forbid")

    qps: float | None = Field(None, gt=0)
    rpm: int | None = Field(None, ge=1)
    tps: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)

    @property
    def limits(self) -> Limits:
        return Limits(self.qps, self.rpm, self.tps, self.tpm)


class SimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[SimKey] = Field(min_length=1)
    accounts: dict[str, SimAccount] = Field(default_factory=dict)
    limiter: LimiterModel = Field("token-bucket", description="how every qps/rpm/tps/tpm limit is enforced")
    surge: bool = Field(False, description="refuse a key or account going from idle to full rate within a second")
    surge_floor: float = Field(0.5, gt=0, le=1, description="share of the per-second limit always allowed in a second")
    surge_growth: float = Field(2.0, ge=1, description="a second may hold this many times the previous one")
    jitter_ms: float = Field(0.0, ge=0, le=10_000, description="each request reaches the limiter 0..jitter_ms late")
    retry_after: bool = Field(True, description="send Retry-After / retry-after-ms with a 429")
    errors: ErrorStyle = Field("dashscope", description="error bodies as dashscope or openai sends them")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Prometheus /metrics port (llm-sim command)")
    requests_log: int = Field(500, ge=0, le=100_000, description="requests kept for GET /requests")
    latency: str = Field("uniform:1.0:2.0", description="fixed:S | uniform:MIN:MAX | lognormal:MEDIAN:P95")
    answer_mix: str = Field("strict:1", description="how answers are written, e.g. strict:0.7,fenced:0.1,zh:0.2 "
                            "(variants in tools/llm_sim/answers.py VARIANTS; issue 12)")
    model: str = "qwen-vl-plus"
    seed: int = Field(1, ge=0, le=2**63 - 1,
                      description="seeds latencies, jitter, faults; part of the answer hash (8 bytes)")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535, description="0: an ephemeral port")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    tolerance_s: float = Field(
        0.0, ge=0.0, le=1.0,
        description="accept a request this much earlier than the limits allow (network jitter); 0 = exact")

    @field_validator("latency", "answer_mix")
    @classmethod
    def _spec(cls, v: str, info: ValidationInfo) -> str:
        """Parsed once here, so a bad spec is the config's one-line error; kept in its normal form."""
        parse = Latency.parse if info.field_name == "latency" else AnswerMix.parse
        try:
            return str(parse(v))
        except ConfigError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _unique(self) -> "SimConfig":
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise ValueError("key names must be unique")
        if len({k.api_key for k in self.keys}) != len(self.keys):
            raise ValueError("api keys must be unique")
        for k in self.keys:
            if k.account is not None and k.account not in self.accounts:
                raise ValueError(f"key {k.name}: account {k.account!r} is not in accounts "
                                 f"({', '.join(self.accounts) or 'none'})")
        return self

    def key(self, name: str) -> SimKey:
        for k in self.keys:
            if k.name == name:
                return k
        raise UnknownKey(f"no simulated key named {name!r}; known: {', '.join(k.name for k in self.keys)}")


def generated_keys(n: int, qps: float = 5.0, rpm: int | None = None, tps: int | None = None,
                   tpm: int | None = None) -> list[SimKey]:
    """`sim-key-01..NN` with secrets `sim-secret-01..NN` (obviously fake, safe to print in docs)."""
    if n < 1:
        raise ConfigError(f"--keys {n}: need at least one key")
    width = max(2, len(str(n)))
    return [SimKey(name=f"sim-key-{i:0{width}d}", api_key=f"sim-secret-{i:0{width}d}", qps=qps, rpm=rpm, tps=tps,
                   tpm=tpm) for i in range(1, n + 1)]


def grouped_accounts(keys: list[SimKey], per_account: int, limits: SimAccount) -> dict[str, SimAccount]:
    """Put the keys, in order, into accounts `acct-01..` of `per_account` keys each, all with `limits`."""
    if per_account < 1:
        raise ConfigError(f"--keys-per-account {per_account}: need at least 1")
    n = math.ceil(len(keys) / per_account)
    width = max(2, len(str(n)))
    names = [f"acct-{i:0{width}d}" for i in range(1, n + 1)]
    for i, k in enumerate(keys):
        k.account = names[i // per_account]
    return {name: limits.model_copy() for name in names}


def build_config(
    config: str | Path | None = None,
    *,
    keys: int | None = None,
    qps: float | None = None,
    rpm: int | None = None,
    tps: int | None = None,
    tpm: int | None = None,
    keys_per_account: int | None = None,
    account_qps: float | None = None,
    account_rpm: int | None = None,
    account_tps: int | None = None,
    account_tpm: int | None = None,
    limiter: str | None = None,
    surge: bool | None = None,
    jitter_ms: float | None = None,
    retry_after: bool | None = None,
    errors: str | None = None,
    billing: list[str] = (),  # type: ignore[assignment]
    metrics_port: int | None = None,
    latency: str | None = None,
    faults: list[str] = (),  # type: ignore[assignment]
    seed: int | None = None,
    host: str | None = None,
    port: int | None = None,
    model: str | None = None,
    answer_mix: str | None = None,
) -> SimConfig:
    """The CLI's config: the YAML file (or 10 generated keys), then each flag that was given."""
    data: dict[str, Any] = load_model(SimConfig, config).model_dump() if config else {}
    where = str(config) if config else "llm-sim flags"
    if keys is not None or not data:
        data["keys"] = [k.model_dump() for k in generated_keys(keys or 10, qps or 5.0, rpm, tps, tpm)]
    for k in data["keys"]:
        for field, value in (("qps", qps), ("rpm", rpm), ("tps", tps), ("tpm", tpm)):
            if value is not None:
                k[field] = value
    account_limits = {"qps": account_qps, "rpm": account_rpm, "tps": account_tps, "tpm": account_tpm}
    if keys_per_account is not None or any(v is not None for v in account_limits.values()):
        sim_keys = [SimKey.model_validate(k) for k in data["keys"]]
        limits = parse_model(SimAccount, {f: v for f, v in account_limits.items() if v is not None}, where)
        accounts = grouped_accounts(sim_keys, keys_per_account or len(sim_keys), limits)
        data["keys"] = [k.model_dump() for k in sim_keys]
        data["accounts"] = {n: a.model_dump() for n, a in accounts.items()}
    for flag, value in (("latency", latency), ("answer_mix", answer_mix), ("seed", seed), ("host", host), ("port", port), ("model", model),
                        ("limiter", limiter), ("surge", surge), ("jitter_ms", jitter_ms),
                        ("retry_after", retry_after), ("errors", errors), ("metrics_port", metrics_port)):
        if value is not None:
            data[flag] = value
    cfg = parse_model(SimConfig, data, where)
    for name in billing:
        cfg.key(name).billing = True
    for text in faults:
        name, _, kind = text.partition("=")
        if kind.strip() == BILLING:
            cfg.key(name.strip()).billing = True
            continue
        name, fault = parse_fault_flag(text)
        cfg.key(name).fault = fault
    return cfg
