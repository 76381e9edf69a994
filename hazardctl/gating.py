"""Which groups deserve an LLM call (spec §5) — pure logic, shared by the local and Flink engines.

Danger decides before the clock does (mode `danger`, the default):
- `suspect`: a motion cue crosses its threshold (time to collision, predicted smallest gap, a named
  flag) — sent at once whatever the refresh says, then at most once per `suspect_cooldown_s` unless
  a cue gets markedly worse; while that cooldown runs the group is held whatever else changed;
- *calm* groups (cues present, no possible conflict) are sent when new, then only on the calm
  refresh: membership, class or geometry churn in a calm group is not a reason;
- other groups (conflict possible but no cue crossed, or no cues at all: no tracking) are sent when
  new, when they change (members, classes, box IoU) or on the refresh;
- refreshes fall on a per-group grid offset by a phase hashed from the group id, so groups first sent
  in the same second (a restart, a burst of new groups) never refresh in step.
Mode `classic` is the gate before motion cues (new / changed / refresh every `refresh_interval_s`
from the last send), kept so benchmarks can set it beside the new one in the same run.

Time is the frame's capture time (event time), passed in, so both engines and replays decide
identically; `decide` is a pure function and `GateEntry` plain data (in Flink state as JSON lists:
`entry_to_state`; rebuilt from the tasks topic on a local restart: `entry_from_task`).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any, Literal, NamedTuple

from hazardctl.messages import BBox

Reason = Literal["suspect", "new", "changed", "refresh"]
#: why a group was not sent (the `reason` label of hazardctl_suppressed_groups_total)
Held = Literal["calm", "unchanged", "cooldown", "stale-replay"]
HELD: tuple[Held, ...] = ("calm", "unchanged", "cooldown", "stale-replay")
GateMode = Literal["danger", "classic"]


@dataclass(frozen=True, slots=True)
class GateConfig:
    refresh_interval_s: float = 10.0
    """re-assess an unchanged group this often (the scene may have become dangerous)"""
    ttl_s: float = 30.0
    """forget a group not seen for this long; it is `new` when it reappears"""
    min_iou: float = 0.5
    """union box IoU with the last sent box below this counts as a significant change"""
    mode: GateMode = "danger"
    """`classic`: the gate before motion cues (no suspect, no calm, no phase), for side-by-side benchmarks"""
    calm_refresh_s: float = 60.0
    """re-assess a calm group (no possible conflict) this often: the LLM has nothing to find in a crowd on a plaza"""
    calm_regroup: bool = True
    """a *new* calm group whose road users were assessed (in other groups of the camera) within
    calm_refresh_s is held: walkers drifting in and out of linking distance form new group ids"""
    calm_regroup_share: float = 0.5
    """... when at least this share of its road users were (1.0: all; an untracked one never was): a
    walker the LLM has not seen, met by one it has, waits until that one's assessment is calm_refresh_s
    old, so it too is looked at within about one calm refresh (bench-gate: the crowd's `new` 124 → 65)"""
    suspect_ttc_s: float = 1.5
    """time to collision at or below this is suspect (the traffic-safety literature's 1.5 s near-miss line)"""
    suspect_gap_ratio: float = 0.25
    """predicted smallest gap within the horizon below this × the pair's size is suspect (they will nearly touch)"""
    suspect_flags: tuple[str, ...] = ("*",)
    """flags (zone cues) that are suspect by themselves; "*": any flag the cues carry"""
    suspect_worse: float = 0.6
    """a suspect cue fell below this × its value at the last suspect send: markedly worse, send again now"""
    suspect_cooldown_s: float = 5.0
    """a group that stays suspect is re-sent at most this often (the last answer is that fresh)"""


@dataclass(frozen=True, slots=True)
class Cues:
    """The gate's copy of a group's motion cues (`messages.GroupCues`), hashable and cheap to pickle."""

    conflict_possible: bool
    min_ttc_s: float | None = None
    min_gap_ratio: float | None = None
    max_closing_speed: float | None = None
    flags: tuple[str, ...] = ()


def _setstate(self, state) -> None:
    """Unpickle state written before a field was added (a Flink savepoint of an older job): the
    missing trailing fields take their defaults."""
    for i, f in enumerate(fields(self)):
        object.__setattr__(self, f.name, state[i] if i < len(state) else f.default)


@dataclass(frozen=True, slots=True)
class GroupView:
    """What the gate compares: member identities (track ids when known), classes, union box, cues."""

    members: tuple
    """track ids of the tracked members (empty without tracking)"""
    classes: tuple[str, ...]
    bbox: BBox
    untracked: int = 0
    """members without a track id (a newcomer before its second frame, a low-confidence box)"""
    cues: Cues | None = None
    """motion cues; None without tracking (the group is gated as before cues existed)"""
    phase: float = 0.0
    """where in [0, 1) of each refresh interval this group's refreshes fall (`phase_of(group_id)`)"""
    regrouped: bool = False
    """every member was assessed within calm_refresh_s in some group of the camera (`Assessed.mark`,
    set by the gate's holder, which keeps the camera's track memory; the view builder cannot know)"""

    __setstate__ = _setstate


@dataclass(frozen=True, slots=True)
class GateEntry:
    sent: GroupView
    sent_ts: float
    seen_ts: float
    """the last frame that showed the group (the TTL counts from here: it is about sightings)"""
    suspect_ts: float | None = None
    """when the last `suspect` was sent (the cooldown counts from here)"""
    suspect_cues: Cues | None = None
    """the cues of that send (`markedly worse` compares with them)"""

    __setstate__ = _setstate


class Decision(NamedTuple):
    reason: Reason | None
    """why to send, or None: suppressed"""
    entry: GateEntry | None
    """the group's new state; None: keep none (a calm regrouping held before it was ever sent)"""
    held: Held | None = None
    """why it was suppressed (None when sent)"""


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


def changed(view: GroupView, sent: GroupView, cfg: GateConfig) -> bool:
    return not same_members(view, sent) or view.classes != sent.classes or iou(view.bbox, sent.bbox) < cfg.min_iou


# ---- building the view (the one place: expand's tasks.group_view and the loadtest's prediction) ----


@functools.lru_cache(maxsize=1 << 16)  # a group is seen on every frame: hash it once
def phase_of(group_id: str) -> float:
    """A stable fraction in [0, 1) from the group id (not Python's salted hash(): every process and
    both engines must agree)."""
    return int.from_bytes(hashlib.blake2b(group_id.encode(), digest_size=8).digest(), "big") / 2.0**64


def _finite(x: Any, floor: float | None = 0.0) -> float | None:
    """A cue value the gate can use: a finite number (not below `floor`), else None (ignored)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return None if floor is not None and x < floor else float(x)


def cues_of(c: Any) -> Cues | None:
    """The gate's cues from a `messages.GroupCues`, the same as plain JSON (a dict), or None.

    Values that are not finite or are negative (where they cannot be) are ignored, never trusted: a
    broken estimate must not raise a `suspect` storm (the message model already refuses them at the
    edge; the loadtest's JSON path is not validated)."""
    if c is None:
        return None
    get = c.get if isinstance(c, dict) else (lambda k, d=None: getattr(c, k, d))
    flags = get("flags") or ()
    return Cues(conflict_possible=bool(get("conflict_possible", False)),
                min_ttc_s=_finite(get("min_ttc_s")), min_gap_ratio=_finite(get("min_gap_ratio")),
                max_closing_speed=_finite(get("max_closing_speed"), floor=None),
                flags=tuple(sorted(str(f) for f in flags)))


def view_of(group_id: str, member_ids, classes, bbox, tracks: dict[int, int | None], cues: Any) -> GroupView:
    """Members as their known track ids plus a count of untracked ones (see `same_members`); without
    tracking that is just the member count. `cues`: a GroupCues, its JSON dict, or None."""
    ids = [tracks.get(m) for m in member_ids]
    known = tuple(sorted(t for t in ids if t is not None))
    return GroupView(members=known, untracked=len(ids) - len(known), classes=tuple(sorted(classes)),
                     bbox=tuple(bbox), cues=cues_of(cues), phase=phase_of(group_id))


def view_of_json(group: dict, tracks: dict[int, int | None]) -> GroupView:
    """`view_of` for one group of a detection result as parsed JSON (the loadtest's prediction, the
    restart rebuild from the tasks topic)."""
    return view_of(group["group_id"], group["member_ids"], group["classes"], group["bbox"], tracks, group.get("cues"))


# ---- the decision ----------------------------------------------------------------------------------


def suspect(c: Cues | None, cfg: GateConfig) -> bool:
    """A cue crossed its threshold."""
    if c is None:
        return False
    if c.flags and ("*" in cfg.suspect_flags or any(f in cfg.suspect_flags for f in c.flags)):
        return True
    if c.min_ttc_s is not None and c.min_ttc_s <= cfg.suspect_ttc_s:
        return True
    return c.conflict_possible and c.min_gap_ratio is not None and c.min_gap_ratio < cfg.suspect_gap_ratio


def worse(now: Cues, then: Cues | None, cfg: GateConfig) -> bool:
    """Markedly worse than at the last suspect send: a cue crossed that had not, a new flag, or the
    TTC or gap ratio fell below `suspect_worse` × its value then."""
    if then is None:
        return True
    if set(now.flags) - set(then.flags):
        return True
    k = cfg.suspect_worse
    for x, was, line in ((now.min_ttc_s, then.min_ttc_s, cfg.suspect_ttc_s),
                         (now.min_gap_ratio, then.min_gap_ratio, cfg.suspect_gap_ratio)):
        if x is None:
            continue
        if was is None or was > line:  # this cue had not crossed then
            if x <= line:
                return True
        elif x < k * was:
            return True
    return False


def refresh_due(sent_ts: float, ts: float, interval: float, phase: float) -> bool:
    """The first point of the group's grid ((n + phase) × interval) at least half an interval after
    the last send has passed: steady refreshes come every `interval`, the first one after a send
    within [½, 1½) of it, and groups sent together spread over the interval by their phases."""
    if interval <= 0:
        return True
    n = math.ceil((sent_ts + interval / 2) / interval - phase)
    return ts >= (n + phase) * interval


def decide(entry: GateEntry | None, view: GroupView, ts: float, cfg: GateConfig) -> Decision:
    """(why to send or None, the new state, why held). State is unchanged for a stale replay."""
    if cfg.mode == "classic":
        return _classic(entry, view, ts, cfg)
    hot = suspect(view.cues, cfg)
    calm = view.cues is not None and not view.cues.conflict_possible and not hot
    if entry is None or ts - entry.seen_ts > cfg.ttl_s:
        if hot:
            return Decision("suspect", GateEntry(view, ts, ts, ts, view.cues))
        if calm and view.regrouped and cfg.calm_regroup:
            # no state kept: held while its road users' last assessment is fresh, `new` once it is not
            # (the calm refresh), decided again on every frame from the camera's track memory alone
            return Decision(None, None, "calm")
        return Decision("new", GateEntry(view, ts, ts))
    if ts <= entry.sent_ts:  # a redelivered or out-of-order frame: already covered
        return Decision(None, entry, "stale-replay")
    cooling = entry.suspect_ts is not None and ts - entry.suspect_ts < cfg.suspect_cooldown_s
    if hot and (not cooling or worse(view.cues, entry.suspect_cues, cfg)):  # type: ignore[arg-type]
        return Decision("suspect", GateEntry(view, ts, ts, ts, view.cues))
    held = GateEntry(entry.sent, entry.sent_ts, max(ts, entry.seen_ts), entry.suspect_ts, entry.suspect_cues)
    if cooling:  # assessed as suspect moments ago: whatever else changed can wait for the cooldown
        return Decision(None, held, "cooldown")
    sent = GateEntry(view, ts, ts, entry.suspect_ts, entry.suspect_cues)
    if calm:
        if refresh_due(entry.sent_ts, ts, cfg.calm_refresh_s, view.phase):
            return Decision("refresh", sent)
        return Decision(None, held, "calm")
    if changed(view, entry.sent, cfg):
        return Decision("changed", sent)
    if refresh_due(entry.sent_ts, ts, cfg.refresh_interval_s, view.phase):
        return Decision("refresh", sent)
    return Decision(None, held, "unchanged")


def _classic(entry: GateEntry | None, view: GroupView, ts: float, cfg: GateConfig) -> Decision:
    """The gate as it was before motion cues: cues and phase are ignored."""
    if entry is None or ts - entry.seen_ts > cfg.ttl_s:
        return Decision("new", GateEntry(view, ts, ts))
    if ts <= entry.sent_ts:
        return Decision(None, entry, "stale-replay")
    if changed(view, entry.sent, cfg):
        return Decision("changed", GateEntry(view, ts, ts))
    if ts - entry.sent_ts >= cfg.refresh_interval_s:
        return Decision("refresh", GateEntry(view, ts, ts))
    return Decision(None, GateEntry(entry.sent, entry.sent_ts, max(ts, entry.seen_ts)), "unchanged")


# ---- rebuilding the state after a restart ------------------------------------------------------------


def entry_from_task(task: dict, before: GateEntry | None) -> GateEntry:
    """The gate entry a sent task proves (tasks carry the group view they were sent for), applied on
    top of the entry of the same group's earlier tasks. Tasks are applied in their topic's order (one
    camera is on one partition, so in send order); `seen_ts` is the send time here, later sightings
    come from `seen`."""
    g, ts = task["group"], float(task["frame_ts"])
    tracks = {o["object_id"]: o.get("track_id") for o in task.get("objects", ())}
    view = view_of_json(g, tracks)
    if before is not None and ts <= before.sent_ts:
        return before  # a duplicate (at-least-once) or older task
    reason = task.get("reason")
    if reason == "suspect":
        s_ts, s_cues = ts, view.cues
    elif reason == "new" or before is None:  # a first sight (or one after the TTL) starts afresh
        s_ts, s_cues = None, None
    else:
        s_ts, s_cues = before.suspect_ts, before.suspect_cues
    return GateEntry(view, ts, max(ts, before.seen_ts if before else ts), s_ts, s_cues)


def entry_to_state(e: GateEntry) -> list:
    """`e` as plain JSON-able lists (the Flink job's compact keyed state: orjson instead of pickled
    dataclasses, ~10x cheaper to write and read); `entry_from_state` reads it back. Every number in it
    is finite (the detections' JSON and `cues_of` admit no other), so JSON round-trips it exactly."""
    v = e.sent
    return [[list(v.members), list(v.classes), list(v.bbox), v.untracked, _cues_to_state(v.cues), v.phase,
             v.regrouped], e.sent_ts, e.seen_ts, e.suspect_ts, _cues_to_state(e.suspect_cues)]


def entry_from_state(s: list) -> GateEntry:
    v = s[0]
    view = GroupView(tuple(v[0]), tuple(v[1]), tuple(v[2]), v[3], _cues_from_state(v[4]), v[5], v[6])
    return GateEntry(view, s[1], s[2], s[3], _cues_from_state(s[4]))


def _cues_to_state(c: Cues | None) -> list | None:
    return None if c is None else [c.conflict_possible, c.min_ttc_s, c.min_gap_ratio, c.max_closing_speed,
                                   list(c.flags)]


def _cues_from_state(s: list | None) -> Cues | None:
    return None if s is None else Cues(s[0], s[1], s[2], s[3], tuple(s[4]))


def seen(entry: GateEntry, ts: float) -> GateEntry:
    """`entry` with a sighting at `ts` (a frame that showed the group and was suppressed)."""
    if ts <= entry.seen_ts:
        return entry
    return GateEntry(entry.sent, entry.sent_ts, ts, entry.suspect_ts, entry.suspect_cues)


class Assessed:
    """One camera's track memory: track id → when a task holding it was last sent. Lets the gate see a
    new calm group made of road users the LLM has just looked at in other groups (`calm_regroup`)."""

    __slots__ = ("last",)

    def __init__(self, last: dict[int, float] | None = None):
        self.last: dict[int, float] = last if last is not None else {}

    def mark(self, view: GroupView, ts: float, cfg: GateConfig) -> GroupView:
        """`view` with `regrouped` set when it qualifies (a calm view, every member tracked and assessed
        within calm_refresh_s); only then does `decide` care."""
        if (cfg.mode != "danger" or not cfg.calm_regroup or view.cues is None or view.cues.conflict_possible
                or not view.members):
            return view
        last, horizon = self.last, ts - cfg.calm_refresh_s
        fresh = sum(last.get(t, -math.inf) >= horizon for t in view.members)
        if fresh >= cfg.calm_regroup_share * (len(view.members) + view.untracked) - 1e-9:
            return GroupView(view.members, view.classes, view.bbox, view.untracked, view.cues, view.phase, True)
        return view

    def sent(self, view: GroupView, ts: float) -> None:
        last = self.last
        for t in view.members:
            if last.get(t, -math.inf) < ts:
                last[t] = ts

    def bounded(self, now_ts: float, cfg: GateConfig) -> dict[int, float]:
        """The memory without tracks assessed longer than calm_refresh_s before `now_ts` (no rule reads them)."""
        horizon = now_ts - cfg.calm_refresh_s
        self.last = {t: x for t, x in self.last.items() if x >= horizon}
        return self.last


class GroupGate:
    """In-memory gate state keyed by (camera, group id) with TTL eviction (the local engine)."""

    def __init__(self, cfg: GateConfig = GateConfig()):
        self.cfg = cfg
        self._state: dict[tuple[str, str], GateEntry] = {}
        self._watermark: dict[str, float] = {}  # per camera: one camera's clock never evicts another's groups
        self._assessed: dict[str, Assessed] = {}
        self._checks = 0
        self.held: Counter[str] = Counter()
        """suppressed groups by why (`Held`)"""

    @property
    def suppressed(self) -> int:
        return sum(self.held.values())

    def assessed(self, camera_id: str) -> Assessed:
        a = self._assessed.get(camera_id)
        if a is None:
            a = self._assessed[camera_id] = Assessed()
        return a

    def check(self, camera_id: str, group_id: str, view: GroupView, ts: float) -> Reason | None:
        key = (camera_id, group_id)
        memory = self.assessed(camera_id)
        reason, entry, held = decide(self._state.get(key), memory.mark(view, ts, self.cfg), ts, self.cfg)
        if entry is None:
            self._state.pop(key, None)
        else:
            self._state[key] = entry
        if reason is not None:
            memory.sent(view, ts)
        if held is not None:
            self.held[held] += 1
        self._watermark[camera_id] = ts  # the camera's clock as it is now (also if it stepped back)
        self._tick()
        return reason

    def restore(self, camera_id: str, group_id: str, entry: GateEntry) -> None:
        """Put back an entry rebuilt from the output (a restart); the camera's clock moves to it.

        Never sweeps: the rebuild reads partitions one after another, so a camera's clock (from its
        latest task) can be ahead of sightings of its groups not folded in yet."""
        self._state[(camera_id, group_id)] = entry
        self._watermark[camera_id] = max(self._watermark.get(camera_id, entry.seen_ts), entry.seen_ts)

    def entry(self, camera_id: str, group_id: str) -> GateEntry | None:
        return self._state.get((camera_id, group_id))

    #: sweep after this many checks at least, and at least half the state's size (amortised O(1); not the
    #: whole size: a camera whose every group is new on every frame grows the state as fast as it checks)
    sweep_every = 1000

    def _tick(self) -> None:
        self._checks += 1
        if self._checks >= self.sweep_every and 2 * self._checks >= len(self._state):
            self._sweep()

    def _sweep(self) -> None:
        """Drop groups their camera has not shown for ttl_s of its own event time (bounded memory)."""
        self._checks = 0
        ttl, marks = self.cfg.ttl_s, self._watermark
        self._state = {k: e for k, e in self._state.items() if marks[k[0]] - e.seen_ts <= ttl}
        for cam, memory in self._assessed.items():
            memory.bounded(marks.get(cam, -math.inf), self.cfg)

    def __len__(self) -> int:
        return len(self._state)
