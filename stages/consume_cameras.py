"""consume's side inputs: detect's camera health (`--camera-status`) and other instances' operator
actions (`--actions`, stages.consume_shared_actions) — each a topic read on a thread of its own.

A Kafka consumer must stay on one thread and a poll must never block the event loop, so a
`SideInputPump` polls its input and hands valid messages to the loop (which applies camera statuses
to the `CameraWatch`, hazardctl/camera_watch.py, and pushes the `camera` incidents like any other). A
bad message is a dead letter on consume's dead-letter output. Offsets are marked done as soon as a
message is handed over: a status lost in a crash is repaired by the next heartbeat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from hazardctl import metrics
from hazardctl.deadletter import BadInput, dead_letter
from hazardctl.messages import CameraStatus

log = logging.getLogger("hazardctl.consume")
STAGE = "consume"


def parser(model: type[BaseModel], what: str) -> Callable[[bytes], Any]:
    """bytes → a validated `model`, or BadInput (a dead letter)."""
    def parse(value: bytes):
        if not value.strip():
            raise BadInput("empty line", "empty")
        try:
            return model.model_validate_json(value)
        except ValidationError as e:
            raise BadInput.from_validation(e, what) from None
    return parse


parse_status = parser(CameraStatus, "camera status")


class SideInputPump:
    def __init__(self, input_, dlq, deliver: Callable[[list], None], parse: Callable[[bytes], Any] = parse_status,
                 what: str = "camera-status"):
        self.input, self.dlq, self.deliver, self.parse, self.what = input_, dlq, deliver, parse, what
        self.received = 0
        self.dead_letters = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"consume-{what}", daemon=True)

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
                        batch.append(self.parse(r.value))
                    except BadInput as e:
                        self.dead_letters += 1
                        metrics.DEAD_LETTERS.labels(STAGE, e.error_class).inc()
                        self.dlq.send(dead_letter(r, STAGE, e.reason, e.error_class).model_dump_json().encode(), r.key)
                    inp.done(r)
                if batch:
                    self.received += len(batch)
                    self.deliver(batch)
                self.dlq.poll(0)
        except Exception:  # noqa: BLE001 — a side input: log it, the stage goes on
            log.exception("consume: %s input failed; it is no longer read", self.what)
        finally:
            try:
                self.dlq.flush(5.0)
                inp.close()
            except Exception as e:  # noqa: BLE001
                log.warning("consume: closing the %s input: %s", self.what, e)


def start_side_input(spec: str, *, endpoints, dlq_spec: str, group_id: str, deliver: Callable[[list], None],
                     parse: Callable[[bytes], Any] = parse_status, what: str = "camera-status") -> SideInputPump:
    """Open `spec` (a Kafka topic read by `group_id`-`what`, a file or a pipe) and start the pump."""
    from hazardctl.transports import Endpoints, is_kafka

    endpoints.wait_ready([spec], 30.0)
    own = Endpoints(settings=endpoints.kafka.settings) if is_kafka(spec) or is_kafka(dlq_spec) else endpoints
    pump = SideInputPump(own.input(spec, f"{group_id}-{what}", STAGE), own.output(dlq_spec), deliver, parse, what)
    pump.start()
    log.info("consume: %s from %s", what, spec)
    return pump


def start_camera_status(spec: str, *, endpoints, dlq_spec: str, group_id: str,
                        deliver: Callable[[list[CameraStatus]], None]) -> SideInputPump:
    return start_side_input(spec, endpoints=endpoints, dlq_spec=dlq_spec, group_id=group_id, deliver=deliver)
