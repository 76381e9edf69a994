"""`config/flink.yaml`: the Flink engine's settings (validated), shared by the CLI and the job.

Imports only pydantic and yaml, so both the main venv (CLI, preflight) and `.venv-flink` (the job)
read the same file the same way. Gate settings are the local engine's (`ExpandConfig`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = ROOT / "config" / "flink.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Parallelism(_Strict):
    source: int = Field(1, ge=1)
    process: int = Field(1, ge=1)
    sink: int = Field(1, ge=1)


class Checkpoints(_Strict):
    interval_s: float = Field(5.0, gt=0)
    dir: str = ".cache/flink/checkpoints"
    """relative to the repository root unless absolute"""
    timeout_s: float = Field(60.0, gt=0)

    def uri(self) -> str:
        p = Path(self.dir)
        return (p if p.is_absolute() else ROOT / p).resolve().as_uri()


class Restart(_Strict):
    attempts: int = Field(100, ge=0)
    delay_s: float = Field(2.0, ge=0)


class Gate(_Strict):
    """The gate's settings (`hazardctl.gating.GateConfig`, where each is explained) plus the job's own."""

    mode: Literal["danger", "classic"] = "danger"
    refresh_interval_s: float = Field(10.0, ge=0)
    ttl_s: float = Field(30.0, gt=0)
    min_iou: float = Field(0.5, ge=0, le=1)
    calm_refresh_s: float = Field(60.0, ge=0)
    calm_regroup: bool = True
    calm_regroup_share: float = Field(0.5, ge=0, le=1)
    suspect_ttc_s: float = Field(1.5, ge=0)
    suspect_gap_ratio: float = Field(0.25, ge=0)
    suspect_flags: tuple[str, ...] = ("*",)
    suspect_worse: float = Field(0.6, ge=0, le=1)
    suspect_cooldown_s: float = Field(5.0, ge=0)
    deadline_s: float = Field(10.0, gt=0)
    state_ttl_s: float = Field(120.0, gt=0)
    """processing-time TTL of a group's keyed state (bounds memory); keep it above ttl_s"""

    @field_validator("suspect_flags", mode="before")
    @classmethod
    def _comma_list(cls, v):
        """`--set gate.suspect_flags=a,b` (and the CLI's --suspect-flags) arrive as one string."""
        return tuple(f.strip() for f in v.split(",") if f.strip()) if isinstance(v, str) else v

    def gate_config(self):
        from hazardctl.gating import GateConfig

        return GateConfig(**self.model_dump(exclude={"deadline_s", "state_ttl_s"}))


class Latency(_Strict):
    """What holds a record back inside the job (Flink's defaults favour throughput: 100 ms, 1000 ms, 5 ms)."""

    buffer_timeout_ms: int = Field(5, ge=0)
    """execution.buffer-timeout.interval: network buffers (source → gate exchange) are flushed at least
    this often (0: after every record, at a throughput cost)"""
    bundle_time_ms: int = Field(5, ge=1)
    """python.fn-execution.bundle.time: the Python worker finishes a bundle (hands results back) at least
    this often"""
    bundle_size: int = Field(1000, ge=1)
    """python.fn-execution.bundle.size: ... or after this many records, whichever comes first"""
    sink_linger_ms: int = Field(1, ge=0)
    """the KafkaSink producer's linger.ms (the local engine's librdkafka producer uses 1)"""

    def flink_options(self) -> dict[str, str]:
        return {"execution.buffer-timeout.interval": f"{self.buffer_timeout_ms} ms",
                "python.fn-execution.bundle.time": str(self.bundle_time_ms),
                "python.fn-execution.bundle.size": str(self.bundle_size)}


class FlinkSettings(_Strict):
    parallelism: Parallelism = Parallelism()
    checkpoints: Checkpoints = Checkpoints()
    restart: Restart = Restart()
    gate: Gate = Gate()
    latency: Latency = Latency()
    python_mode: Literal["process", "thread"] = "thread"
    """thread: the gate runs inside the TaskManager JVM (PEMJA), one call per record, no gRPC bundles and no
    Python worker process; one GIL per JVM, so one slot per TaskManager and parallelism = TaskManagers.
    process: one Python worker process per slot (gRPC bundles; several slots of one TaskManager run in
    parallel). docs/flink.md has both modes' figures."""
    connector_jar: str = ".cache/flink/lib/flink-sql-connector-kafka-5.0.0-2.2.jar"
    adapters_jar: str = ".cache/flink/lib/hazardctl-flink.jar"

    def jars(self) -> list[Path]:
        return [(ROOT / j) if not Path(j).is_absolute() else Path(j) for j in (self.connector_jar, self.adapters_jar)]


#: the Kafka classes inside flink-sql-connector-kafka are shaded under this prefix (JAAS needs the real name)
SHADED_KAFKA = "org.apache.flink.kafka.shaded.org.apache.kafka"
LOGIN_MODULES = {"PLAIN": "common.security.plain.PlainLoginModule",
                 "SCRAM-SHA-256": "common.security.scram.ScramLoginModule",
                 "SCRAM-SHA-512": "common.security.scram.ScramLoginModule"}


def java_kafka_props(kafka) -> dict[str, str]:
    """hazardctl's Kafka settings (`hazardctl.config.KafkaSettings`: security protocol, SASL mechanism,
    user, password, CA file) as the Java client's properties, for the job's KafkaSource and KafkaSinks.

    The result holds the password (in `sasl.jaas.config`): never print it; see `redacted`."""
    props: dict[str, str] = {}
    if kafka.security_protocol != "PLAINTEXT":
        props["security.protocol"] = kafka.security_protocol
    if kafka.sasl_mechanism:
        props["sasl.mechanism"] = kafka.sasl_mechanism
        if kafka.sasl_username is not None or kafka.sasl_password is not None:
            def q(v: str) -> str:
                return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

            secret = kafka.sasl_password.get_secret_value() if kafka.sasl_password is not None else ""
            module = f"{SHADED_KAFKA}.{LOGIN_MODULES[kafka.sasl_mechanism]}"
            props["sasl.jaas.config"] = (f"{module} required username={q(kafka.sasl_username or '')} "
                                         f"password={q(secret)};")
    if kafka.ssl_ca_location:
        props["ssl.truststore.type"] = "PEM"
        props["ssl.truststore.location"] = str(kafka.ssl_ca_location)
    return props


def redacted(props: dict[str, str]) -> dict[str, str]:
    """`props` fit to print: the JAAS line (it holds the password) and anything named *password* hidden."""
    return {k: ("<redacted>" if k == "sasl.jaas.config" or "password" in k else v) for k, v in props.items()}


def with_overrides(settings: FlinkSettings, items: list[str]) -> FlinkSettings:
    """`settings` with SECTION.KEY=VALUE overrides applied and validated (the job's `--set`, and how the
    CLI's gate flags reach both engines); a bad value raises ValueError with one line."""
    if not items:
        return settings
    data = settings.model_dump()
    for item in items:
        path, _, value = item.partition("=")
        *parents, leaf = path.split(".")
        node = data
        for p in parents:
            node = node[p]
        node[leaf] = value
    try:
        return FlinkSettings.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        raise ValueError(f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}") from None


def load(path: str | Path | None = None) -> FlinkSettings:
    """Settings from YAML (default config/flink.yaml); a bad file raises ValueError with one line."""
    import yaml

    p = Path(path) if path else DEFAULT_PATH
    if not p.is_file():
        raise ValueError(f"{p}: file not found")
    try:
        return FlinkSettings.model_validate(yaml.safe_load(p.read_text()) or {})
    except ValidationError as e:
        first = e.errors()[0]
        raise ValueError(f"{p}: {'.'.join(str(x) for x in first['loc'])}: {first['msg']}") from None
