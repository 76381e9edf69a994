"""Configuration files: YAML → pydantic models, `${ENV_VAR}` references, environment overrides.

Errors name the file and the field, in one line, so the CLI can print them as they are.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from hazardctl.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
CONFIG_DIR = Path(os.environ.get("HAZARDCTL_CONFIG_DIR", "config"))


def expand_env(value: Any, *, where: str, field: str = "") -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string of a parsed YAML tree."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{where}: {field or '(top level)'}: environment variable {name} is not set")

        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, where=where, field=f"{field}.{k}" if field else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, where=where, field=f"{field}.{i}" if field else str(i)) for i, v in enumerate(value)]
    return value


def describe_validation_error(err: ValidationError, where: str) -> str:
    """First problem of a pydantic error as `file: field.path: message` (one line)."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {loc}: {first['msg']}{more}"


def load_yaml(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: file not found")
    try:
        return yaml.safe_load(p.read_text()) or {}
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read ({getattr(e, 'strerror', None) or type(e).__name__})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}:{at} invalid YAML: {getattr(e, 'problem', e)}") from None


def parse_model(model: type[M], data: Any, where: str) -> M:
    try:
        return model.model_validate(expand_env(data, where=where))
    except ValidationError as e:
        raise ConfigError(describe_validation_error(e, where)) from None


def load_model(model: type[M], path: str | Path) -> M:
    return parse_model(model, load_yaml(path), str(path))


class KafkaSettings(BaseModel):
    """How to reach Kafka. Only librdkafka property names are accepted in the overrides."""

    model_config = ConfigDict(extra="forbid")

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "hazardctl"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    producer: dict[str, Any] = Field(default_factory=dict, description="extra librdkafka producer settings")
    consumer: dict[str, Any] = Field(default_factory=dict, description="extra librdkafka consumer settings")

    def common(self) -> dict[str, Any]:
        """librdkafka settings shared by producer, consumer and admin client."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol.lower(),
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        return conf


#: Environment variables that override the Kafka config file (12-factor style).
KAFKA_ENV = {
    "HAZARDCTL_KAFKA_BOOTSTRAP": "bootstrap_servers",
    "HAZARDCTL_KAFKA_CLIENT_ID": "client_id",
    "HAZARDCTL_KAFKA_SECURITY_PROTOCOL": "security_protocol",
    "HAZARDCTL_KAFKA_SASL_MECHANISM": "sasl_mechanism",
    "HAZARDCTL_KAFKA_SASL_USERNAME": "sasl_username",
    "HAZARDCTL_KAFKA_SASL_PASSWORD": "sasl_password",
    "HAZARDCTL_KAFKA_SSL_CA": "ssl_ca_location",
}


def load_kafka_settings(path: str | Path | None = None) -> KafkaSettings:
    """`config/kafka.yaml` (or `path`, or $HAZARDCTL_KAFKA_CONFIG) plus env overrides."""
    path = path or os.environ.get("HAZARDCTL_KAFKA_CONFIG")
    default = CONFIG_DIR / "kafka.yaml"
    data: dict[str, Any] = {}
    where = "kafka settings"
    if path:
        data, where = load_yaml(path), str(path)
    elif default.is_file():
        data, where = load_yaml(default), str(default)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: (top level): expected a mapping of settings, got {type(data).__name__}")
    data = dict(data)
    for env, field in KAFKA_ENV.items():
        if os.environ.get(env):
            data[field] = os.environ[env]
    return parse_model(KafkaSettings, data, where)
