"""API keys: the YAML configuration of the key pool, and the encrypted file that protects it (§6, §9).

A key's secret is a pydantic `SecretStr` from the moment it is parsed, so no repr, log line,
validation error or metric can show it; only `LLMKey.secret()` reveals it, to the HTTP client.
The file is plain YAML (secrets as `${ENV_VAR}` references) or the same YAML encrypted with
`hazardctl keys-encrypt` (Fernet; key derived with scrypt from a passphrase). Both load through
`load_keys`, which either returns a whole, validated configuration or raises one `ConfigError` line.
"""

from __future__ import annotations

import base64
import getpass
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from hazardctl.config import expand_env
from hazardctl.errors import ConfigError
from hazardctl.keypool import AccountLimits, KeyLimits, PoolPolicy, account_warnings

DASHSCOPE_BASE_URL = "https://dashscope.aliyuncs.com/compatible-mode/v1"
DEFAULT_MODEL = "qwen-vl-plus"
PASSPHRASE_ENV = "HAZARDCTL_KEYS_PASSPHRASE"
KEYS_ENV = "HAZARDCTL_KEYS"

Strategy = Literal["round_robin", "least_loaded", "priority", "weighted"]


class LLMKey(BaseModel):
    """One API key and the limits its provider enforces (we pace below them, never into a 429)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                      description="shown in logs, metrics and results instead of the secret")
    api_key: SecretStr = Field(description="the secret: a literal, a ${ENV_VAR} reference, or from the encrypted file")
    qps_limit: float = Field(default=5.0, gt=0, le=10_000, description="requests per second the provider allows")
    rpm_limit: int | None = Field(default=None, gt=0, description="requests per minute (sliding 60 s window)")
    priority: int = Field(default=0, description="strategy 'priority': lower numbers are used first")
    weight: float = Field(default=1.0, gt=0, description="strategy 'weighted': share of the traffic")
    model: str = Field(default=DEFAULT_MODEL, min_length=1)
    base_url: str = Field(default=DASHSCOPE_BASE_URL, pattern=r"^https?://")
    timeout: float = Field(default=30.0, gt=0, description="seconds for one HTTP call (capped by the task deadline)")
    max_in_flight: int | None = Field(default=None, gt=0,
                                      description="concurrent requests on this key; default: 4 s worth of qps_limit")
    burst: float = Field(default=1.0, ge=1.0, description="token-bucket capacity; 1 = evenly spaced sends")
    tpm_limit: int | None = Field(default=None, gt=0, description="tokens per minute (image patches + text + max_tokens)")
    account: str | None = Field(default=None, description="the `accounts:` entry whose limits this key shares")
    response_format: Literal["none", "json_object", "json_schema"] = Field(
        default="none", description="structured output asked of the provider; sent only when not 'none' (issue 12)")

    @field_validator("api_key")
    @classmethod
    def _not_blank(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("is empty")
        return v

    def secret(self) -> str:
        return self.api_key.get_secret_value()

    @property
    def in_flight_cap(self) -> int:
        return self.max_in_flight or max(4, math.ceil(self.qps_limit * 4))

    def limits(self) -> KeyLimits:
        """What the pool needs to know: limits and a name, never the secret."""
        return KeyLimits(name=self.name, qps=self.qps_limit, rpm=self.rpm_limit, priority=self.priority,
                         weight=self.weight, max_in_flight=self.in_flight_cap, burst=self.burst,
                         tpm=self.tpm_limit, account=self.account)


class Account(BaseModel):
    """Limits a provider counts per account, summed over all of its keys (DashScope does)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    qps: float | None = Field(default=None, gt=0, le=100_000, description="requests per second, all keys together")
    rpm: int | None = Field(default=None, gt=0, description="requests per minute, all keys together")
    tpm: int | None = Field(default=None, gt=0, description="tokens per minute, all keys together")


class Variant(BaseModel):
    """One way of asking (issue 22): a model at a base URL, a prompt, a language and a response format,
    served by some of the pool's keys. Unset fields keep what each key says (model, base_url,
    response_format) or what the stage says (language)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(default=None, min_length=1, description="default: each key's `model`")
    base_url: str | None = Field(default=None, pattern=r"^https?://", description="default: each key's `base_url`")
    prompt_version: Literal["motion", "plain"] = Field(
        default="motion", description="motion: the motion prompt when the task carries motion (today's); plain: never")
    language: Literal["en", "zh"] | None = Field(default=None, description="default: the file's `language`")
    response_format: Literal["none", "json_object", "json_schema"] | None = Field(
        default=None, description="default: each key's `response_format`")
    keys: list[str] | None = Field(default=None, description="names of the keys that serve it; default: all keys")


class Routes(BaseModel):
    """Which variant judges which camera: a share of *cameras* per variant, sticky by a stable hash of
    the camera id (`hazardctl.routing`); the default takes every camera no share takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str = Field(description="the variant of every camera not taken by a share")
    shares: dict[str, float] = Field(default_factory=dict,
                                     description="variant -> percent of cameras; together at most 100")


class Shadow(BaseModel):
    """A candidate variant that also judges a share of tasks, from spare key capacity only; its answers
    go to `schedule --shadow-out`, never to operators."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    variant: str
    share: float = Field(gt=0, le=100, description="percent of tasks (by a stable hash of the task id)")
    keep_ready: float = Field(default=0.5, ge=0, le=1, description=(
        "share of the pool's keys that must stay ready after a shadow request takes one (at least one): "
        "the reserve for a burst of tasks; higher delays tasks less and answers fewer shadows"))


#: the variant of a keys file without `variants:`: each key's own model, base URL and response format
DEFAULT_VARIANT = "default"


class KeysConfig(BaseModel):
    """The whole `api_keys.yaml`."""

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = "round_robin"
    max_retry_per_key: int = Field(default=3, ge=1, description="consecutive failures that cool a key")
    default_cooldown: float = Field(default=30.0, gt=0, description="seconds; 429 without Retry-After, failure streak")
    reprobe_interval: float = Field(default=300.0, gt=0, description="seconds between probes of a disabled (401/403) key")
    max_attempts: int = Field(default=4, ge=1, description="LLM calls one task may make (all keys together)")
    language: Literal["en", "zh"] = Field(default="en", description="language of the prompt, risk types and description")
    bad_answer_warn: float = Field(default=0.2, gt=0, le=1,
                                   description="WARNING when a model's unusable answers exceed this share of its last 50")
    jitter_allowance_ms: float = Field(default=40.0, ge=0, le=1000, description=(
        "how much two requests' travel times may differ; each qps/tpm limit is spread over 1 s + this "
        "(costs J/(1+J) of the throughput: 40 ms -> 3.8 %)"))
    rate_limit_cooldown: float = Field(default=1.0, gt=0, description="seconds; a 429 without Retry-After (doubles while repeated)")
    slow_start: float = Field(default=0.3, gt=0, le=1, description="share of its rate an idle key starts at (1 = off)")
    slow_start_s: float = Field(default=2.0, ge=0, le=60, description="seconds of the ramp from slow_start to the full rate")
    accounts: dict[str, Account] = Field(default_factory=dict, description="name -> limits shared by the keys that name it")
    keys: list[LLMKey] = Field(default_factory=list)
    variants: dict[str, Variant] = Field(default_factory=dict, description="name -> a way of asking (issue 22)")
    routes: Routes | None = Field(default=None, description="share of cameras per variant; default: the only variant")
    shadow: Shadow | None = Field(default=None, description="a candidate variant judging a share of tasks aside")

    @model_validator(mode="after")
    def _unique_names(self) -> "KeysConfig":
        seen: set[str] = set()
        for k in self.keys:
            if k.name in seen:
                raise ValueError(f"key {k.name!r}: name is used twice")
            if k.account is not None and k.account not in self.accounts:
                raise ValueError(f"key {k.name!r}: account {k.account!r} is not in accounts:")
            seen.add(k.name)
        self._check_variants(seen)
        return self

    def _check_variants(self, key_names: set[str]) -> None:
        """Bad routes are refused whole, one line each (issue 22): an unknown variant, shares over 100 %,
        a variant (above all the shadow) without keys."""
        known = set(self.variants) or {DEFAULT_VARIANT}
        for name, v in self.variants.items():
            unknown = [k for k in v.keys or [] if k not in key_names]
            if unknown:
                raise ValueError(f"variant {name!r}: key {unknown[0]!r} is not in keys:")
        if self.routes is not None:
            r = self.routes
            for name in [r.default, *r.shares]:
                if name not in known:
                    raise ValueError(f"routes: unknown variant {name!r} (variants: {', '.join(sorted(known))})")
            if r.default in r.shares:
                raise ValueError(f"routes: the default {r.default!r} takes the rest; give it no share")
            if any(v < 0 for v in r.shares.values()):
                raise ValueError("routes: a share is negative")
            total = sum(r.shares.values())
            if total > 100 + 1e-9:
                raise ValueError(f"routes: shares add up to {total:g} %, more than 100")
        elif len(self.variants) > 1:
            raise ValueError(f"variants: {len(self.variants)} variants but no routes: say which is the default")
        if self.shadow is not None:
            s = self.shadow
            if s.variant not in known:
                raise ValueError(f"shadow: unknown variant {s.variant!r} (variants: {', '.join(sorted(known))})")
        for name in self.used_variants():
            if self.keys and not self.variant_keys(name):
                what = "shadow variant" if self.shadow is not None and name == self.shadow.variant else "variant"
                raise ValueError(f"{what} {name!r} has no keys")

    # -- variants -----------------------------------------------------------------------------------
    def default_variant(self) -> str:
        if self.routes is not None:
            return self.routes.default
        return next(iter(self.variants), DEFAULT_VARIANT)

    def used_variants(self) -> list[str]:
        """The default, the routed and the shadow variants, in that order, each once."""
        names = [self.default_variant(), *(self.routes.shares if self.routes else ()),
                 *([self.shadow.variant] if self.shadow else [])]
        return list(dict.fromkeys(names))

    def variant(self, name: str) -> Variant:
        return self.variants.get(name) or Variant()

    def variant_keys(self, name: str) -> list[str]:
        """Names of the keys that serve the variant (all keys unless it names some)."""
        wanted = self.variant(name).keys
        return [k.name for k in self.keys if wanted is None or k.name in wanted]

    def policy(self) -> PoolPolicy:
        return PoolPolicy(strategy=self.strategy, max_retry_per_key=self.max_retry_per_key,
                          default_cooldown=self.default_cooldown, reprobe_interval=self.reprobe_interval,
                          jitter_allowance=self.jitter_allowance_ms / 1000.0,
                          rate_limit_cooldown=self.rate_limit_cooldown, slow_start=self.slow_start,
                          ramp_s=self.slow_start_s)

    def account_limits(self) -> list[AccountLimits]:
        return [AccountLimits(name, a.qps, a.rpm, a.tpm) for name, a in self.accounts.items()]

    def account_warnings(self) -> list[str]:
        """Accounts whose keys together claim more than the account allows (10 keys != 10x there)."""
        return account_warnings([k.limits() for k in self.keys], self.account_limits())

    def shard(self, index: int, count: int) -> "KeysConfig":
        """Keys whose position % count == index: disjoint budgets for several scheduler instances."""
        if count < 1 or not 0 <= index < count:
            raise ConfigError(f"--shard {index}/{count}: need 0 <= I < N")
        part = self.model_copy(update={"keys": [k for i, k in enumerate(self.keys) if i % count == index]})
        for name in part.used_variants():  # a variant may have no key in this shard
            if part.keys and not part.variant_keys(name):
                raise ConfigError(f"--shard {index}/{count}: variant {name!r} has no keys in this shard")
        return part


# ---------------------------------------------------------------------------------------------
# validation errors: name the key and the field, never the value
# ---------------------------------------------------------------------------------------------

def describe_keys_error(err: ValidationError, data: Any, where: str) -> str:
    """`file: key 'name' (keys[2]).field: message` — pydantic's input value is never included."""
    first = err.errors()[0]
    loc = list(first["loc"])
    if len(loc) >= 2 and loc[0] == "keys" and isinstance(loc[1], int):
        idx = loc[1]
        name = None
        try:
            name = data["keys"][idx].get("name")
        except (TypeError, KeyError, IndexError, AttributeError):
            pass
        who = f"key {name!r} (keys[{idx}])" if isinstance(name, str) else f"keys[{idx}]"
        field = ".".join(str(p) for p in loc[2:])
        path = f"{who}.{field}" if field else who
    else:
        path = ".".join(str(p) for p in loc) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {path}: {msg}{more}"


def parse_keys(data: Any, where: str) -> KeysConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with 'keys:'")
    expanded = expand_env(data, where=where)
    try:
        return KeysConfig.model_validate(expanded)
    except ValidationError as e:
        raise ConfigError(describe_keys_error(e, expanded, where)) from None


def _safe_yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}:{at} invalid YAML: {getattr(e, 'problem', e)}") from None


def load_keys(path: str | Path, passphrase: str | None = None) -> KeysConfig:
    """Plain or encrypted keys file → validated config. All or nothing: a bad file raises ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: file not found")
    raw = p.read_bytes()
    if is_encrypted(raw):
        text = decrypt_keys(raw, passphrase or read_passphrase(confirm=False), str(p))
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: not UTF-8 text and not a hazardctl encrypted keys file") from None
    return parse_keys(_safe_yaml(text, str(p)), str(p))


# ---------------------------------------------------------------------------------------------
# the encrypted file: one JSON header line (format, scrypt parameters, salt), then a Fernet token
# ---------------------------------------------------------------------------------------------

MAGIC = b'{"format": "hazardctl-keys-encrypted"'
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1  # ~32 MiB, ~0.1 s: cheap for us, costly to brute-force


def is_encrypted(raw: bytes) -> bool:
    return raw.startswith(MAGIC)


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return base64.urlsafe_b64encode(Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8")))


def encrypt_keys(plaintext: str, passphrase: str) -> bytes:
    """The encrypted file's bytes. Fernet authenticates, so any tampering is detected on load."""
    from cryptography.fernet import Fernet

    if not passphrase:
        raise ConfigError("the passphrase is empty")
    salt = os.urandom(16)
    header = {"format": "hazardctl-keys-encrypted", "version": 1, "kdf": "scrypt",
              "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": base64.b64encode(salt).decode()}
    token = Fernet(_derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)).encrypt(plaintext.encode("utf-8"))
    return json.dumps(header).encode() + b"\n" + token + b"\n"


def decrypt_keys(raw: bytes, passphrase: str, where: str) -> str:
    from cryptography.fernet import Fernet, InvalidToken

    head, _, token = raw.partition(b"\n")
    try:
        header = json.loads(head)
        salt = base64.b64decode(header["salt"], validate=True)
        n, r, p = int(header["n"]), int(header["r"]), int(header["p"])
        if header.get("version") != 1 or header.get("kdf") != "scrypt" or not (2 <= n <= 2**20 and r <= 64 and p <= 16):
            raise ValueError
        key = _derive(passphrase, salt, n, r, p)
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{where}: damaged header: not a valid hazardctl encrypted keys file") from None
    try:
        return Fernet(key).decrypt(token.strip()).decode("utf-8")
    except (InvalidToken, UnicodeDecodeError):
        raise ConfigError(f"{where}: cannot decrypt: wrong passphrase, or the file was modified") from None


def read_passphrase(confirm: bool) -> str:
    """From $HAZARDCTL_KEYS_PASSPHRASE, else a prompt on the terminal (twice when encrypting)."""
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env
    if not sys.stdin.isatty():
        raise ConfigError(f"no passphrase: set {PASSPHRASE_ENV} or run on a terminal to be prompted")
    first = getpass.getpass("Passphrase for the keys file: ")
    if confirm and getpass.getpass("Repeat the passphrase: ") != first:
        raise ConfigError("the passphrases do not match")
    if not first:
        raise ConfigError("the passphrase is empty")
    return first


def encrypt_file(src: str | Path, dst: str | Path, passphrase: str | None = None, resolve_env: bool = False) -> int:
    """`hazardctl keys-encrypt`: validate `src`, write it encrypted to `dst` (mode 0600). Returns the key count.

    With `resolve_env`, `${VAR}` references are replaced by their values first, so the encrypted
    file holds the secrets themselves and the variables are no longer needed at run time.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ConfigError(f"{src}: file not found")
    if src.resolve() == dst.resolve():
        raise ConfigError(f"{dst}: the output must not overwrite the input")
    raw = src.read_bytes()
    if is_encrypted(raw):
        raise ConfigError(f"{src}: already encrypted")
    text = raw.decode("utf-8", errors="strict")
    data = _safe_yaml(text, str(src))
    if resolve_env:
        cfg = parse_keys(data, str(src))  # fails on an unset variable
        text = yaml.safe_dump(expand_env(data, where=str(src)), sort_keys=False)
    else:
        cfg = parse_keys(_placeholders(data), str(src))  # validate the shape; variables resolve at load
    payload = encrypt_keys(text, passphrase or read_passphrase(confirm=True))
    tmp = dst.with_name(dst.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
    os.replace(tmp, dst)
    return len(cfg.keys)


def _placeholders(value: Any) -> Any:
    """Replace unset `${VAR}` references by a dummy so the file's structure can be validated."""
    if isinstance(value, str):
        from hazardctl.config import _ENV_REF

        return _ENV_REF.sub(lambda m: os.environ.get(m.group(1), m.group(2) or "placeholder"), value)
    if isinstance(value, dict):
        return {k: _placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_placeholders(v) for v in value]
    return value
