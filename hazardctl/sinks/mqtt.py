"""MQTT sink (paho-mqtt 2.x): one QoS 1 message per event on `<prefix>/<camera_id>/incident`.

An attempt is delivered when the broker's PUBACK arrives; while the client is not connected an
attempt fails at once (the outbox retries it), so nothing piles up in paho's own queue. paho
reconnects by itself with a capped backoff. Like the webhook, QoS 1 is at-least-once: a receiver
drops a repeated `idempotency_key`. `mqtts://` uses TLS (system CAs plus `ca_file`); a username
and password come from HAZARDCTL_MQTT_USERNAME / HAZARDCTL_MQTT_PASSWORD, never from the URL.

paho calls back from its network thread while holding its own locks: callbacks only hand the
news to the event loop (`call_soon_threadsafe`), so no lock of ours is ever taken there.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
import uuid

import paho.mqtt.client as paho

from hazardctl.sinks import SinkError, SinkSpec
from hazardctl.sinks.outbox import Pending


def topic_for(prefix: str, camera_id: str) -> str:
    """`<prefix>/<camera>/incident`; MQTT wildcards and separators in a camera id are replaced."""
    safe = "".join("_" if ch in "+#/\x00" else ch for ch in camera_id)
    return f"{prefix}/{safe}/incident"


class MqttSink:
    def __init__(self, spec: SinkSpec, *, timeout_s: float = 5.0, ca_file: str | None = None,
                 client_id: str | None = None):
        u = urllib.parse.urlsplit(spec.target)
        self.name = spec.name
        self.host = u.hostname or "127.0.0.1"
        self.tls = u.scheme == "mqtts"
        self.port = u.port or (8883 if self.tls else 1883)
        self.prefix = u.path.strip("/") or "hazardctl"
        self.timeout_s = timeout_s
        self._ca_file = ca_file
        self._client_id = client_id or f"hazardctl-consume-{uuid.uuid4().hex[:8]}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[int, asyncio.Future] = {}
        self.connected = False
        self.last_error: str | None = None
        self._client: paho.Client | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=paho.MQTTv311,
                        clean_session=True)
        if self.tls:
            c.tls_set(ca_certs=self._ca_file)
        user = os.environ.get("HAZARDCTL_MQTT_USERNAME")
        if user:
            c.username_pw_set(user, os.environ.get("HAZARDCTL_MQTT_PASSWORD"))
        c.reconnect_delay_set(min_delay=1, max_delay=10)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self._client = c
        c.connect_async(self.host, self.port, keepalive=15)
        c.loop_start()

    # ---- paho's network thread: hand over to the loop, nothing else ----
    def _on_connect(self, _c, _u, _flags, reason_code, _props) -> None:
        self._loop.call_soon_threadsafe(self._connected, not reason_code.is_failure, str(reason_code))

    def _on_disconnect(self, _c, _u, _flags, reason_code, _props) -> None:
        self._loop.call_soon_threadsafe(self._connected, False, f"disconnected ({reason_code})")

    def _on_publish(self, _c, _u, mid, reason_code, _props) -> None:
        self._loop.call_soon_threadsafe(self._acked, mid, str(reason_code) if reason_code.is_failure else None)

    # ---- the event loop ----
    def _connected(self, up: bool, why: str) -> None:
        self.connected = up
        if not up:
            self.last_error = why
            waiting, self._waiting = self._waiting, {}
            for fut in waiting.values():  # their PUBACK will not come on this connection: retry them
                if not fut.done():
                    fut.set_exception(SinkError(f"broker {why} before PUBACK"))

    def _acked(self, mid: int, failure: str | None) -> None:
        fut = self._waiting.pop(mid, None)
        if fut is not None and not fut.done():
            if failure:
                fut.set_exception(SinkError(f"broker refused: {failure}"))
            else:
                fut.set_result(None)

    async def deliver(self, entry: Pending) -> None:
        if self._client is None:
            raise SinkError("not started")
        if not self.connected:
            raise SinkError(f"not connected to {self.host}:{self.port}"
                            + (f" ({self.last_error})" if self.last_error else ""))
        fut = self._loop.create_future()
        info = self._client.publish(topic_for(self.prefix, entry.camera_id), entry.payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise SinkError(f"publish failed ({paho.error_string(info.rc)})")
        self._waiting[info.mid] = fut  # the PUBACK's callback runs on this loop, after this line
        try:
            await asyncio.wait_for(fut, self.timeout_s)
        except asyncio.TimeoutError:
            self._waiting.pop(info.mid, None)
            raise SinkError(f"no PUBACK within {self.timeout_s:g}s") from None

    async def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
