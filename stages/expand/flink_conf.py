"""`config/flink.yaml`: the Flink engine's settings (validated), shared by the CLI and the job.

Imports only pydantic and yaml, so both the main venv (CLI, preflight) and `.venv-flink` (the job)
read the same file the same way. Gate settings are the local engine's (`ExpandConfig`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
    refresh_interval_s: float = Field(10.0, ge=0)
    ttl_s: float = Field(30.0, gt=0)
    min_iou: float = Field(0.5, ge=0, le=1)
    deadline_s: float = Field(10.0, gt=0)
    state_ttl_s: float = Field(120.0, gt=0)
    """processing-time TTL of a group's keyed state (bounds memory); keep it above ttl_s"""


class FlinkSettings(_Strict):
    parallelism: Parallelism = Parallelism()
    checkpoints: Checkpoints = Checkpoints()
    restart: Restart = Restart()
    gate: Gate = Gate()
    python_mode: Literal["process", "thread"] = "process"
    """process: one Python worker process per slot (real parallelism); thread: embedded, faster at 1"""
    connector_jar: str = ".cache/flink/lib/flink-sql-connector-kafka-5.0.0-2.2.jar"
    adapters_jar: str = ".cache/flink/lib/hazardctl-flink.jar"

    def jars(self) -> list[Path]:
        return [(ROOT / j) if not Path(j).is_absolute() else Path(j) for j in (self.connector_jar, self.adapters_jar)]


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
