"""Operators' actions shared between consume instances (`consume --actions kafka://incident-actions`).

Several consume instances (one per host behind a load balancer, each reading every result with a
group of its own) each hold the whole board, but an ack taken on one was seen only by that one's
clients. Now the instance that takes an action also publishes it (`IncidentAction`, keyed by camera
id); every instance reads the topic with a group of its own (`GROUP-actions`) and applies the other
instances' actions to its board: pushed to its clients and recorded in its store. Action rows are
idempotent (same incident, action and time), so instances sharing one PostgreSQL record it once and
instances with a store each all get it. An action older than `max_age_s` (a new instance reading
the topic's history) is skipped: the store already has it.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable

from hazardctl.messages import IncidentAction
from stages.consume_cameras import SideInputPump, parser, start_side_input

log = logging.getLogger("hazardctl.consume")

parse_action = parser(IncidentAction, "incident action")


def instance_id() -> str:
    """This process among the consume instances: host, pid and a random tail (a restart is a new one)."""
    return f"{socket.gethostname()[:80]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class ActionShare:
    """The sending half (the event loop calls `publish`) and the filter for what the pump brings in."""

    def __init__(self, output, origin: str, max_age_s: float):
        self.output, self.origin, self.max_age_s = output, origin, max_age_s
        self.sent = self.applied = self.too_old = 0

    def publish(self, incident_id: str, camera_id: str, action: str, note: str | None, actor: str | None,
                at: float) -> None:
        msg = IncidentAction(incident_id=incident_id, camera_id=camera_id, action=action, note=note, actor=actor,
                             at=at, origin=self.origin)
        self.output.send(msg.model_dump_json().encode(), camera_id.encode())
        self.output.poll(0)
        self.sent += 1

    def foreign(self, actions: list[IncidentAction], now: float) -> list[IncidentAction]:
        """The other instances' actions that are recent enough to apply (ours were applied when taken)."""
        out = []
        for a in actions:
            if a.origin == self.origin:
                continue
            if now - a.at > self.max_age_s:
                self.too_old += 1
                continue
            out.append(a)
        self.applied += len(out)
        return out

    def close(self, timeout: float = 5.0) -> None:
        left = self.output.flush(timeout)
        if left:
            log.warning("consume: %d shared actions not delivered to the actions topic at stop", left)
        self.output.close()


def start_sharing(spec: str, *, endpoints, dlq_spec: str, group_id: str, deliver: Callable[[list], None],
                  max_age_s: float) -> tuple[ActionShare, SideInputPump]:
    """The actions topic's producer and its reader (group `group_id`-actions: every instance reads all)."""
    from hazardctl.transports import Endpoints

    endpoints.wait_ready([spec], 30.0)
    share = ActionShare(Endpoints(settings=endpoints.kafka.settings).output(spec), instance_id(), max_age_s)
    pump = start_side_input(spec, endpoints=endpoints, dlq_spec=dlq_spec, group_id=group_id, deliver=deliver,
                            parse=parse_action, what="actions")
    log.info("consume: operators' actions shared on %s as %s", spec, share.origin)
    return share, pump
