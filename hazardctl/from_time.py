"""`--from-time ISO8601|-2h`: the point in time a stage's Kafka input is rewound to (issue 22). Pure.

An ISO 8601 time (`2026-12-07T01:00:00Z`, `2026-12-07 01:00+08:00`; without a zone: UTC) or a
duration back from now (`-90s`, `-15m`, `-2h`, `-1d`, `-1h30m`). A time in the future, or one older
than the topic keeps (retention.ms), is refused with one line: it would silently read nothing, or
less than asked.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from hazardctl.errors import ConfigError

_AGO = re.compile(r"^-(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
#: clocks differ a little between this host and the broker: "now" is not in the future
FUTURE_SLACK_S = 5.0


def parse_from_time(text: str, now: float) -> float:
    """Unix seconds of `text`, or ConfigError naming what is wrong."""
    t = text.strip()
    m = _AGO.match(t)
    if m and any(m.groups()):
        d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        ts = now - (d * 86400 + h * 3600 + mi * 60 + s)
    else:
        try:
            when = datetime.fromisoformat(t.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ConfigError(f"--from-time {text!r}: expected ISO 8601 (2026-12-07T01:00:00Z) or a duration "
                              "back from now (-2h, -15m, -1h30m)") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        ts = when.timestamp()
    if ts > now + FUTURE_SLACK_S:
        raise ConfigError(f"--from-time {text!r} is in the future ({_iso(ts)}; now {_iso(now)})")
    return ts


def check_retention(text: str, ts: float, now: float, topic: str, retention_ms: int | None) -> None:
    """ConfigError when `ts` is older than what `topic` keeps (None or < 0: kept forever)."""
    if retention_ms is None or retention_ms < 0:
        return
    oldest = now - retention_ms / 1000.0
    if ts < oldest:
        raise ConfigError(f"--from-time {text!r} ({_iso(ts)}) is before what topic {topic} keeps "
                          f"(retention.ms={retention_ms}: nothing older than {_iso(oldest)})")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
