"""Bad input becomes data: a dead-letter record with the payload, the reason and where it was."""

from __future__ import annotations

import base64
import time

from pydantic import ValidationError

from hazardctl.config import describe_validation_error
from hazardctl.messages import DeadLetter
from hazardctl.transports.base import Record


class BadInput(Exception):
    """Raised by a stage's processing for an input that can never succeed (no retry)."""

    def __init__(self, reason: str, error_class: str):
        super().__init__(reason)
        self.reason = reason
        self.error_class = error_class

    @classmethod
    def from_validation(cls, err: ValidationError, what: str) -> "BadInput":
        first = err.errors()[0]
        if first["type"] == "json_invalid":
            return cls(f"malformed JSON: {first['msg']}", "malformed_json")
        if first["loc"] == ("schema_version",):
            return cls(f"unsupported schema_version: {first.get('input')!r}", "schema_version")
        return cls(describe_validation_error(err, f"invalid {what}"), "validation")


def dead_letter(record: Record, stage: str, reason: str, error_class: str, *, attempts: int = 0,
                last_error: str | None = None) -> DeadLetter:
    try:
        payload, encoding = record.value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(record.value).decode("ascii"), "base64"
    return DeadLetter(
        stage=stage,
        reason=reason,
        error_class=error_class,
        payload=payload.rstrip("\n") if encoding == "utf-8" else payload,
        payload_encoding=encoding,
        source=record.source,
        line=record.line,
        partition=record.partition,
        offset=record.offset,
        key=record.key.decode("utf-8", "replace") if record.key else None,
        attempts=attempts,
        last_error=last_error,
        ts=time.time(),
    )
