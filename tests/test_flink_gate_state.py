"""The Flink job's gate state (stages/expand/flink_job.CameraGates) without Flink: one JSON value per
key, the same decisions as the local engine's gate, bounded like it; an older job's pickled value loads."""

from __future__ import annotations

import pickle

import orjson

from hazardctl.gating import GateConfig, GateEntry, entry_from_state
from hazardctl.synthetic import detection
from stages.expand.flink_job import CameraGates
from stages.expand.tasks import ExpandConfig, expand, parse
from tests.flink_util import detections, expected_tasks


def run(items, cfg=ExpandConfig(), state_ttl_s=120.0, now=lambda i: 1000.0 + i, states=None):
    """What the Gate does per record, the state value round-tripping through pickle like Flink's
    (Types.PICKLED_BYTE_ARRAY); returns the tasks and each key's value as decoded JSON."""
    gates, states, out = CameraGates(cfg.gate, state_ttl_s), dict(states or {}), {}
    for i, (key, value) in enumerate(items):
        det, raw = parse(value)
        blob = states.get(key)
        cams = gates.load(pickle.loads(blob) if blob else None, det.camera_id)
        for t in expand(det, raw, gates, cfg, now(i)):
            out[t["task_id"]] = orjson.loads(orjson.dumps(t))
        states[key] = pickle.dumps(gates.store(cams, det.camera_id, det.frame_ts, now(i)))
    return out, {k: orjson.loads(pickle.loads(v)) for k, v in states.items()}


def test_same_decisions_as_the_local_gate():
    items = detections(cameras=6, frames=120)
    got, _ = run(items)
    want = expected_tasks(items)
    assert {i: t["reason"] for i, t in got.items()} == {i: t["reason"] for i, t in want.items()}
    assert {t["reason"] for t in got.values()} == {"new", "changed", "refresh"}


def test_same_decisions_as_the_local_gate_with_motion_cues():
    """Suspect (with its cooldown and `worse`) and calm groups survive the pickled state like the rest."""
    items = detections(cameras=6, frames=160, cues=True)
    got, states = run(items)
    want = expected_tasks(items)
    assert {i: t["reason"] for i, t in got.items()} == {i: t["reason"] for i, t in want.items()}
    assert {t["reason"] for t in got.values()} == {"suspect", "new", "changed", "refresh"}
    entry = entry_from_state(states[b"cam-000"]["cam-000"][1]["cam-000-g2"])
    assert entry.suspect_ts is not None and entry.suspect_cues.min_ttc_s is not None, "suspect memory is in the state"
    calm = [t for t in got.values() if t["group"]["group_id"].endswith("-g1") and int(t["camera_id"][-3:]) % 3 != 2]
    assert {t["reason"] for t in calm} == {"new", "refresh"}, "a calm group: new, then only the calm refresh"
    assert len(calm) <= 4 * 2, "4 calm groups × (new + at most one calm refresh in 80 s)"
    untracked = [t for t in got.values() if t["group"]["group_id"].endswith("-g1") and t not in calm]
    assert "changed" in {t["reason"] for t in untracked}, "the same group without cues: its drift is a change"


def test_calm_regroupings_are_held_the_same_from_the_pickled_state():
    from tests.flink_util import regrouping

    items = regrouping(cameras=3, frames=200)
    got, states = run(items)
    want = expected_tasks(items)
    assert {i: t["reason"] for i, t in got.items()} == {i: t["reason"] for i, t in want.items()}
    assert len(got) < 3 * 100 * 0.1, "the regroupings were held"
    slot = states[b"crowd-00"]["crowd-00"]
    memory = dict(slot[2])
    assert len(slot) == 3 and memory, "the camera's track memory is in the state"
    assert all(isinstance(t, int) for t in memory), "track ids stay ints through JSON"
    assert max(memory.values()) - min(memory.values()) <= ExpandConfig().gate.calm_refresh_s, "and bounded"


def test_state_of_an_older_job_without_track_memory_still_loads():
    gates = CameraGates(ExpandConfig().gate, 120.0)
    gates.load({"cam": [1000.0, {}]}, "cam")
    assert gates.assessed.last == {}


def test_a_value_written_by_an_older_job_restores_its_gate():
    """A savepoint of the job before the JSON state holds pickled dicts of GateEntry objects: the job
    reads them, so a restart from one sends the same tasks as an uninterrupted run (no `new` again)."""
    items = detections(cameras=4, frames=120, cues=True)
    first, second = items[: len(items) // 2], items[len(items) // 2:]
    got1, states = run(first)
    old = {key: pickle.dumps({c: [v[0], {g: entry_from_state(e) for g, e in v[1].items()}, dict(v[2])]
                              for c, v in value.items()}) for key, value in states.items()}
    assert isinstance(next(iter(pickle.loads(old[b"cam-000"])["cam-000"][1].values())), GateEntry)
    got2, _ = run(second, now=lambda i: 1000.0 + len(first) + i, states=old)
    want = expected_tasks(items)
    assert {i: t["reason"] for i, t in {**got1, **got2}.items()} == {i: t["reason"] for i, t in want.items()}
    assert "new" not in {t["reason"] for t in got2.values()}


def test_classic_mode_ignores_the_cues():
    items = detections(cameras=3, frames=60, cues=True)
    cfg = ExpandConfig(GateConfig(mode="classic"))
    got, _ = run(items, cfg)
    assert {i: t["reason"] for i, t in got.items()} == {
        i: t["reason"] for i, t in expected_tasks(detections(cameras=3, frames=60), cfg).items()}
    assert "suspect" not in {t["reason"] for t in got.values()}


def test_groups_not_seen_for_ttl_are_dropped():
    cfg = ExpandConfig(GateConfig(ttl_s=5.0))
    # every frame shows a group id never seen before (group ids are not stable): the value stays bounded
    items = []
    for f in range(200):
        d = detection("cam-1", f, 1_800_000_000.0 + f, groups=1)
        d.groups[0].group_id = f"cam-1-g{f}"
        items.append((b"cam-1", d.model_dump_json().encode()))
    _, states = run(items, cfg)
    groups = states[b"cam-1"]["cam-1"][1]
    assert 1 <= len(groups) <= 6, len(groups)


def test_a_shared_key_drops_silent_cameras():
    # two cameras under one Kafka key (a producer keying by site): both gated correctly, and a camera
    # not written for state_ttl_s (processing time) leaves the value
    a = [(b"site", detection("cam-a", f, 1_800_000_000.0 + f).model_dump_json().encode()) for f in range(3)]
    b = [(b"site", detection("cam-b", f, 1_800_000_000.0 + f).model_dump_json().encode()) for f in range(20)]
    got, states = run(a + b, state_ttl_s=10.0, now=lambda i: 1000.0 + i)
    assert {t["camera_id"] for t in got.values() if t["reason"] == "new"} == {"cam-a", "cam-b"}
    assert set(states[b"site"]) == {"cam-b"}
