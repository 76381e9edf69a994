"""Kafka sink: one record per event on a topic (e.g. `incidents`), keyed by camera id, through
hazardctl/transports (acks=all, idempotent producer, delivery reports checked).

It uses a producer of its own: the stage's shared producer serves its delivery callbacks on the
input thread, and this one's must run on the sink's loop. An attempt is delivered when the broker
confirms the record. It waits for librdkafka's own verdict (which retries by itself until
message.timeout.ms) rather than a shorter timeout of ours: giving up earlier would leave the record
queued in the producer and send it twice.
"""

from __future__ import annotations

import asyncio

from hazardctl.sinks import SinkError, SinkSpec
from hazardctl.sinks.outbox import Pending


class KafkaSink:
    def __init__(self, spec: SinkSpec, endpoints, *, timeout_s: float = 5.0):
        from hazardctl.transports import Endpoints

        if endpoints is None:
            raise SinkError("kafka sink without Kafka settings")
        self.name = spec.name
        self.topic = spec.target
        settings = endpoints.kafka.settings
        self._endpoints = Endpoints(settings=settings)  # its own producer (see above)
        from hazardctl.transports.kafka import PRODUCER_DEFAULTS

        queued_ms = float(settings.producer.get("message.timeout.ms", PRODUCER_DEFAULTS["message.timeout.ms"]))
        self.timeout_s = max(timeout_s, queued_ms / 1000.0 + 5.0)
        self._output = None
        self._poller: asyncio.Task | None = None

    async def start(self) -> None:
        self._output = self._endpoints.output(f"kafka://{self.topic}")
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:  # delivery reports are served here, on the loop's thread
            self._output.poll(0)
            await asyncio.sleep(0.01)

    async def deliver(self, entry: Pending) -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def delivered(err: Exception | None) -> None:
            if not fut.done():
                fut.set_exception(SinkError(str(err))) if err else fut.set_result(None)

        self._output.send(entry.payload, entry.camera_id.encode(), delivered)
        try:
            await asyncio.wait_for(fut, self.timeout_s)
        except asyncio.TimeoutError:
            raise SinkError(f"not confirmed by the broker within {self.timeout_s:g}s") from None

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self._output is not None:
            self._output.flush(5.0)
