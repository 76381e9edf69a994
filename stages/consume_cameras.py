"""consume's camera-health input (`--camera-status`): detect's CameraStatus messages → CameraWatch.

A thread of its own polls the input (a Kafka consumer must stay on one thread, and a poll must never
block the event loop) and hands valid statuses to the loop, which applies them to the
`CameraWatch` (hazardctl/camera_watch.py) and pushes the `camera` incidents like any other. A bad
message is a dead letter on consume's dead-letter output. Offsets are marked done as soon as a
status is handed over: a status lost in a crash is repaired by the next heartbeat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pydantic import ValidationError

from hazardctl import metrics
from hazardctl.deadletter import BadInput, dead_letter
from hazardctl.messages import CameraStatus

log = logging.getLogger("hazardctl.consume")
STAGE = "consume"


def parse_status(value: bytes) -> CameraStatus:
    if not value.strip():
        raise BadInput("empty line", "empty")
    try:
        return CameraStatus.model_validate_json(value)
    except ValidationError as e:
        raise BadInput.from_validation(e, "camera status") from None


class CameraStatusPump:
    def __init__(self, input_, dlq, deliver: Callable[[list[CameraStatus]], None]):
        self.input, self.dlq, self.deliver = input_, dlq, deliver
        self.received = 0
        self.dead_letters = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="consume-camera-status", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        inp = self.input
        try:
            while not self._stop.is_set():
                records = inp.poll(0.1, 500)
                if not records:
                    if inp.exhausted:
                        break
                    continue
                batch = []
                for r in records:
                    try:
                        batch.append(parse_status(r.value))
                    except BadInput as e:
                        self.dead_letters += 1
                        metrics.DEAD_LETTERS.labels(STAGE, e.error_class).inc()
                        self.dlq.send(dead_letter(r, STAGE, e.reason, e.error_class).model_dump_json().encode(), r.key)
                    inp.done(r)
                if batch:
                    self.received += len(batch)
                    self.deliver(batch)
                self.dlq.poll(0)
        except Exception:  # noqa: BLE001 — camera health is a side input: log it, the stage goes on
            log.exception("consume: camera-status input failed; camera health is no longer updated")
        finally:
            try:
                self.dlq.flush(5.0)
                inp.close()
            except Exception as e:  # noqa: BLE001
                log.warning("consume: closing the camera-status input: %s", e)


def start_camera_status(spec: str, *, endpoints, dlq_spec: str, group_id: str,
                        deliver: Callable[[list[CameraStatus]], None]) -> CameraStatusPump:
    """Open `spec` (a Kafka topic read by `group_id`-camera-status, a file or a pipe) and start the pump."""
    from hazardctl.transports import Endpoints, is_kafka

    endpoints.wait_ready([spec], 30.0)
    own = Endpoints(settings=endpoints.kafka.settings) if is_kafka(spec) or is_kafka(dlq_spec) else endpoints
    pump = CameraStatusPump(own.input(spec, f"{group_id}-camera-status", STAGE), own.output(dlq_spec), deliver)
    pump.start()
    log.info("consume: camera health from %s", spec)
    return pump
