"""Which groups deserve an LLM call (spec §5) — pure logic, shared by the local and Flink engines.

A group is sent when it is first seen, when it changes significantly (members, classes, geometry),
or when its last assessment is older than the refresh interval; otherwise it is suppressed. Time is
the frame's capture time (event time), passed in, so both engines and replays decide identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hazardctl.messages import BBox

Reason = Literal["new", "changed", "refresh"]


@dataclass(frozen=True, slots=True)
class GateConfig:
    refresh_interval_s: float = 10.0
    """re-assess an unchanged group this often (the scene may have become dangerous)"""
    ttl_s: float = 30.0
    """forget a group not seen for this long; it is `new` when it reappears"""
    min_iou: float = 0.5
    """union box IoU with the last sent box below this counts as a significant change"""


@dataclass(frozen=True, slots=True)
class GroupView:
    """What the gate compares: member identities (track ids when known), classes, union box."""

    members: tuple
    """track ids of the tracked members (empty without tracking)"""
    classes: tuple[str, ...]
    bbox: BBox
    untracked: int = 0
    """members without a track id (a newcomer before its second frame, a low-confidence box)"""


@dataclass(frozen=True, slots=True)
class GateEntry:
    sent: GroupView
    sent_ts: float
    seen_ts: float


def iou(a: BBox, b: BBox) -> float:
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def same_members(a: GroupView, b: GroupView) -> bool:
    """Same number of members, and every track id one view lacks may be one of the other's untracked
    members: a member gaining or losing its id is not a change, a swap of tracked members is."""
    if len(a.members) + a.untracked != len(b.members) + b.untracked:
        return False
    sa, sb = set(a.members), set(b.members)
    return len(sa - sb) <= b.untracked and len(sb - sa) <= a.untracked


def decide(entry: GateEntry | None, view: GroupView, ts: float, cfg: GateConfig) -> tuple[Reason | None, GateEntry | None]:
    """(why to send or None to suppress, the new state). State is unchanged for a stale replay."""
    if entry is None or ts - entry.seen_ts > cfg.ttl_s:
        return "new", GateEntry(view, ts, ts)
    if ts <= entry.sent_ts:  # a redelivered or out-of-order frame: already covered
        return None, entry
    if not same_members(view, entry.sent) or view.classes != entry.sent.classes or iou(view.bbox, entry.sent.bbox) < cfg.min_iou:
        return "changed", GateEntry(view, ts, ts)
    if ts - entry.sent_ts >= cfg.refresh_interval_s:
        return "refresh", GateEntry(view, ts, ts)
    return None, GateEntry(entry.sent, entry.sent_ts, max(ts, entry.seen_ts))


class GroupGate:
    """In-memory gate state keyed by (camera, group id) with TTL eviction (the local engine)."""

    def __init__(self, cfg: GateConfig = GateConfig()):
        self.cfg = cfg
        self._state: dict[tuple[str, str], GateEntry] = {}
        self._watermark: dict[str, float] = {}  # per camera: one camera's clock never evicts another's groups
        self._checks = 0
        self.suppressed = 0

    def check(self, camera_id: str, group_id: str, view: GroupView, ts: float) -> Reason | None:
        key = (camera_id, group_id)
        reason, entry = decide(self._state.get(key), view, ts, self.cfg)
        self._state[key] = entry
        if reason is None:
            self.suppressed += 1
        self._watermark[camera_id] = ts  # the camera's clock as it is now (also if it stepped back)
        self._checks += 1
        if self._checks >= self.sweep_every and self._checks >= len(self._state):
            self._sweep()
        return reason

    #: sweep after this many checks at least (and never more often than once per state size)
    sweep_every = 1000

    def _sweep(self) -> None:
        """Drop groups their camera has not shown for ttl_s of its own event time (bounded memory)."""
        self._checks = 0
        ttl, marks = self.cfg.ttl_s, self._watermark
        self._state = {k: e for k, e in self._state.items() if marks[k[0]] - e.seen_ts <= ttl}

    def __len__(self) -> int:
        return len(self._state)
