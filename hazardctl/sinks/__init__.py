"""Alert sinks: incident events out to the systems operators run (webhook, MQTT, Kafka), through an outbox.

    consume's incident events → Router (min level, per-camera cooldown, seq per incident)
      → outbox rows in the incident store (durable) → each sink, in order per incident,
        retried with backoff, dead-lettered after N attempts

The pure rules are in `outbox.py`; the store table in `outbox_store.py`; the thread that runs the
deliveries (never the WebSocket loop) in `dispatcher.py`; one client per kind of receiver in
`webhook.py`, `mqtt.py`, `kafka.py`. Every sink receives the same JSON document per event (see
`encode_event`), with the idempotency key `incident_id:seq`.
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass
from typing import Protocol

import orjson

from hazardctl.errors import ConfigError
from hazardctl.sinks.outbox import Outgoing, Pending

SCHEMES = ("webhook:", "mqtt://", "mqtts://", "kafka://")


class SinkError(Exception):
    """One delivery attempt failed; `permanent` when the receiver refused the event for good."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class Sink(Protocol):
    name: str
    """how the sink appears in logs, metrics and dead letters: never a secret, never a query string"""

    async def start(self) -> None: ...

    async def deliver(self, entry: Pending) -> None:
        """Deliver one event; raises SinkError when it did not arrive (confirmed by the receiver)."""

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SinkSpec:
    kind: str  # webhook | mqtt | kafka
    target: str  # the URL (webhook, mqtt) or the topic (kafka)
    name: str


def parse_sink(spec: str) -> SinkSpec:
    """`webhook:https://…`, `mqtt://host:port/prefix` (mqtts:// for TLS), `kafka://topic` → SinkSpec."""
    spec = spec.strip()
    if spec.startswith("webhook:"):
        url = spec[len("webhook:"):]
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ConfigError(f"--sink {safe_name(spec)!r}: expected webhook:https://host/path")
        if u.username or u.password:
            raise ConfigError("--sink webhook: credentials in the URL are not allowed (they would be logged); "
                              "the receiver checks X-Hazardctl-Signature instead")
        return SinkSpec("webhook", url, f"webhook:{u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)}")
    if spec.startswith(("mqtt://", "mqtts://")):
        u = urllib.parse.urlsplit(spec)
        if not u.hostname:
            raise ConfigError(f"--sink {safe_name(spec)!r}: expected mqtt://host:port/topic-prefix")
        if u.username or u.password:
            raise ConfigError("--sink mqtt: credentials in the URL are not allowed (they would be logged); "
                              "set HAZARDCTL_MQTT_USERNAME and HAZARDCTL_MQTT_PASSWORD")
        try:
            u.port
        except ValueError:
            raise ConfigError(f"--sink {safe_name(spec)!r}: bad port") from None
        return SinkSpec("mqtt", spec, f"mqtt:{u.hostname}:{u.port or (8883 if u.scheme == 'mqtts' else 1883)}")
    if spec.startswith("kafka://"):
        topic = spec[len("kafka://"):].strip("/")
        if not topic:
            raise ConfigError("--sink kafka://TOPIC: the topic is missing")
        return SinkSpec("kafka", topic, f"kafka:{topic}")
    raise ConfigError(f"--sink {safe_name(spec)!r}: expected webhook:https://…, mqtt://host:port/prefix or kafka://topic")


def safe_name(spec: str) -> str:
    """A sink spec for an error line: no userinfo, no query string, no fragment (they may hold tokens)."""
    head, sep, url = spec.partition(":") if spec.startswith("webhook:") else ("", "", spec)
    u = urllib.parse.urlsplit(url)
    host = u.hostname or ""
    netloc = f"{host}:{u.port}" if u.port else host
    clean = urllib.parse.urlunsplit((u.scheme, netloc, u.path, "", ""))
    return f"{head}{sep}{clean}"


def encode_event(out: Outgoing, now: float | None = None) -> bytes:
    """The document every sink receives for one event (the crop is left out: receivers fetch evidence)."""
    body = {k: v for k, v in out.body.items() if k != "crop_jpeg_b64"}
    return orjson.dumps({"type": "incident", "event": out.action, "idempotency_key": out.key,
                         "incident_id": out.incident_id, "seq": out.seq, "camera_id": out.camera_id,
                         "ts": time.time() if now is None else now, "incident": body})


def make_sink(spec: SinkSpec, settings: "SinkSettings") -> Sink:
    if spec.kind == "webhook":
        from hazardctl.sinks.webhook import WebhookSink

        return WebhookSink(spec, secret=settings.secret, timeout_s=settings.timeout_s, ca_file=settings.ca_file)
    if spec.kind == "mqtt":
        from hazardctl.sinks.mqtt import MqttSink

        return MqttSink(spec, timeout_s=settings.timeout_s, ca_file=settings.ca_file)
    from hazardctl.sinks.kafka import KafkaSink

    return KafkaSink(spec, settings.endpoints, timeout_s=settings.timeout_s)


@dataclass(frozen=True)
class SinkSettings:
    secret: bytes | None = None
    """HMAC key of the webhook signature (from --sink-secret-file or HAZARDCTL_SINK_SECRET)"""
    timeout_s: float = 5.0
    """one delivery attempt waits at most this long for the receiver's confirmation"""
    ca_file: str | None = None
    """extra CA certificates to trust for https webhooks and mqtts (the system's are trusted too)"""
    endpoints: object = None
    """hazardctl.transports.Endpoints, for kafka:// sinks"""

    def __repr__(self) -> str:  # never print the secret
        return f"SinkSettings(secret={'set' if self.secret else 'unset'}, timeout_s={self.timeout_s}, ca_file={self.ca_file!r})"
