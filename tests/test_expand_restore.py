"""A restarted local expand gets its gate back (stages/expand/restore.py), without Kafka: the shell's
folding of the tasks topic tail and of the processed input tail, as pure functions over bytes.

The reference is one uninterrupted run of the same code (`Expander`). A restart here is: the first
run processed detections [0, k) and its tasks all reached the topic; its committed offset was k - r
(the last r detections are redelivered, as after a kill -9 between delivery and commit); the new run
folds the tasks of the last `tasks_window_s` and the detections [.., k - r) of the last
`sightings_window_s` (event time stands in for Kafka time), then processes [k - r, end).
"""

from __future__ import annotations

import functools
from collections import Counter

import orjson
import pytest

from hazardctl.gating import GateConfig, GroupView
from hazardctl.synthetic import detection
from hazardctl.transports.base import Record
from stages.expand import ExpandConfig, Expander
from stages.expand.restore import Rebuilt, apply_sighting, apply_task, sightings_window_s, tasks_window_s
from tests.flink_util import T0, detections


def run(expander: Expander, items) -> list[dict]:
    out = []
    for _key, value in items:
        out += [orjson.loads(v) for _k, v in expander(Record(value=value))]
    return out


def restarted(items, k: int, redelivered: int, cfg: ExpandConfig, sightings: bool = True):
    """(tasks of the first run, tasks of the second run, what the rebuild read)."""
    first = run(Expander(cfg), items[:k])
    now = orjson.loads(items[k - 1][1])["frame_ts"]
    second, rebuilt = Expander(cfg), Rebuilt()
    for t in first:
        if t["frame_ts"] >= now - tasks_window_s(cfg.gate):
            apply_task(second.gate, orjson.dumps(t), rebuilt)
    if sightings:
        for _key, value in items[: k - redelivered]:
            if orjson.loads(value)["frame_ts"] >= now - sightings_window_s(cfg.gate):
                apply_sighting(second.gate, value, rebuilt)
    return first, run(second, items[k - redelivered:]), rebuilt


def multiset(tasks) -> Counter:
    return Counter((t["task_id"], t["reason"]) for t in tasks)


@functools.lru_cache(maxsize=None)
def fleet() -> list:
    return detections(cameras=6, frames=300, cues=True)  # 150 s: longer than every window


@functools.lru_cache(maxsize=None)
def uninterrupted(mode: str) -> list[dict]:
    return run(Expander(ExpandConfig(GateConfig(mode=mode))), fleet())  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["danger", "classic"])
@pytest.mark.parametrize("k", [37, 700, 1333])
def test_a_restart_sends_exactly_what_an_uninterrupted_run_sends(mode, k):
    cfg = ExpandConfig(GateConfig(mode=mode))  # type: ignore[arg-type]
    items, want = fleet(), uninterrupted(mode)
    first, second, rebuilt = restarted(items, k, redelivered=9, cfg=cfg)
    assert rebuilt.tasks > 0 and rebuilt.skipped == 0
    assert multiset(first + second) == multiset(want), "no task lost, none re-sent, same reasons"
    assert len({t["reason"] for t in want}) >= (4 if mode == "danger" else 3)


def test_the_fold_does_not_depend_on_the_order_partitions_are_read():
    """The replay reads one partition after another: a camera's latest task can be folded in long before
    the sightings of its calm group (seen_ts still at its send, 40 s behind the camera's clock)."""
    cfg = ExpandConfig()
    items = detections(cameras=12, frames=100, cues=True)
    want = run(Expander(cfg), items)
    k, r = len(items) - 12 * 5, 12 * 2
    first = run(Expander(cfg), items[:k])
    by_camera = lambda rows, cam: [x for x in rows if x[0] == cam]  # noqa: E731
    second, out = Expander(cfg), Rebuilt()
    cams = sorted({key for key, _v in items})
    for cam in cams:  # all tasks first, camera by camera (partition by partition)
        for t in first:
            if t["camera_id"].encode() == cam:
                apply_task(second.gate, orjson.dumps(t), out)
    for cam in reversed(cams):  # then the input, in another partition order
        for _key, value in by_camera(items[: k - r], cam):
            apply_sighting(second.gate, value, out)
    assert out.tasks + 3 * out.sightings > 2 * second.gate.sweep_every, "enough restores to sweep if folding swept"
    assert multiset(first + run(second, items[k - r:])) == multiset(want)


@pytest.mark.parametrize("k", [90, 333])
def test_a_restart_keeps_the_memory_of_assessed_road_users(k):
    """Calm regroupings (new ids, same walkers) are held across a restart as they are without one: the
    tasks' objects give back which tracks were assessed when."""
    from tests.flink_util import regrouping

    cfg = ExpandConfig()
    items = regrouping(cameras=3, frames=200)
    want = run(Expander(cfg), items)
    first, second, _ = restarted(items, k, redelivered=4, cfg=cfg)
    assert multiset(first + second) == multiset(want)
    assert len(want) < 3 * 100 * 0.1, "≤ 0.1 calls per camera-second (the classic gate: ~0.5)"


def test_a_calm_group_sent_50s_ago_and_seen_since_is_not_new_after_a_restart():
    """TTL is about sightings: the tasks say when it was sent, the processed detections when it was seen."""
    cfg = ExpandConfig()
    items = detections(cameras=1, frames=200, cues=True)  # cam-000: g1 calm, new at frame 0 (T0), 100 s
    k = 101  # restart at 50 s
    want = run(Expander(cfg), items)
    calm = [(t["frame_id"], t["reason"]) for t in want if t["group"]["group_id"] == "cam-000-g1"]
    assert calm == [(0, "new"), (164, "refresh")], "on its grid: the calm refresh at 82 s"
    first, second, _ = restarted(items, k, redelivered=3, cfg=cfg)
    assert not [t for t in second if t["group"]["group_id"] == "cam-000-g1" and t["reason"] == "new"]
    assert multiset(first + second) == multiset(want)
    # without the sightings the same restart forgets it after the TTL: held a while (its road users were
    # assessed within the calm refresh), then re-sent as new at 60 s instead of refreshed at 82 s
    _, blind, _ = restarted(items, k, redelivered=3, cfg=cfg, sightings=False)
    assert [(t["frame_id"], t["reason"]) for t in blind if t["group"]["group_id"] == "cam-000-g1"] == [(121, "new")]


def test_a_suspect_group_keeps_its_cooldown_across_a_restart():
    cfg = ExpandConfig()
    items = detections(cameras=1, frames=40, cues=True)  # cam-000 g2: suspect at frame 10, worse at 13, 15
    want = run(Expander(cfg), items)
    for k in (11, 12, 14):  # restarts inside the cooldown
        first, second, _ = restarted(items, k, redelivered=1, cfg=cfg)
        assert multiset(first + second) == multiset(want), k
    assert [t["frame_id"] for t in want if t["reason"] == "suspect"] == [10, 13, 15, 30, 33, 35]


def test_what_the_rebuild_cannot_read_is_skipped_and_counted():
    gate = Expander().gate
    out = Rebuilt()
    for bad in (b"", b"not json", b'{"camera_id": "c"}', b'{"camera_id": "c", "group": {"group_id": 3}, "frame_ts": "x"}'):
        apply_task(gate, bad, out)
    apply_sighting(gate, b'{"groups": 1}', out)
    assert (out.tasks, out.skipped, len(gate)) == (0, 5, 0)


def test_sightings_only_keep_known_groups_alive_and_never_move_time_back():
    cfg = ExpandConfig()
    exp = Expander(cfg)
    d = detection("cam-1", 0, T0, groups=2)
    tasks = run(exp, [(b"", d.model_dump_json().encode())])
    fresh, out = Expander(cfg), Rebuilt()
    for t in tasks:
        apply_task(fresh.gate, orjson.dumps(t), out)
    later = detection("cam-1", 40, T0 + 20, groups=3)
    apply_sighting(fresh.gate, later.model_dump_json().encode(), out)
    apply_sighting(fresh.gate, d.model_dump_json().encode(), out)  # an older frame read after it
    assert fresh.gate.entry("cam-1", "cam-1-g1").seen_ts == T0 + 20
    assert fresh.gate.entry("cam-1", "cam-1-g3") is None, "never sent: nothing to keep alive"
    assert isinstance(fresh.gate.entry("cam-1", "cam-1-g1").sent, GroupView)


def test_the_tasks_window_covers_the_longest_gap_between_two_sends():
    g = GateConfig()
    assert tasks_window_s(g) >= 1.5 * g.calm_refresh_s and tasks_window_s(g) >= g.ttl_s
    assert tasks_window_s(GateConfig(mode="classic")) >= max(g.ttl_s, g.refresh_interval_s)
    assert sightings_window_s(g) >= g.ttl_s
