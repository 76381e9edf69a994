"""The incident board (hazardctl.incidents): aggregation, lifecycle and dedup with a fake clock."""

from __future__ import annotations

import pytest

from hazardctl.incidents import BoardConfig, IncidentBoard, RecentResults, SeenIds, incident_id, result_summary
from hazardctl.synthetic import risk_result

T0 = 1_700_000_000.0


def board(**kw) -> IncidentBoard:
    return IncidentBoard(BoardConfig(**{"quiet_period_s": 30.0, "group_ttl_s": 60.0, **kw}))


def kinds(events) -> list[tuple[str, str]]:
    return [(e.kind, e.action) for e in events]


def incident_events(events) -> list:
    return [e for e in events if e.kind == "incident"]


def test_frame_groups_merge_into_camera_view_with_max_level():
    b = board()
    b.apply(risk_result("cam-1", "g1", 1, T0, level="low"), T0 + 1)
    b.apply(risk_result("cam-1", "g2", 1, T0, level="high"), T0 + 1)
    b.apply(risk_result("cam-1", "g3", 1, T0, level="none"), T0 + 1)
    view = b.cameras["cam-1"].as_dict()
    assert view["level"] == "high"
    assert [g["group_id"] for g in view["groups"]] == ["g2", "g1", "g3"]  # most dangerous first
    assert view["groups"][0]["risk_types"] == ["vehicle-pedestrian conflict"]
    assert view["open_incidents"] == 1


def test_first_result_of_a_camera_is_announced_even_when_failed():
    b = board()
    applied = b.apply(risk_result("cam-9", "g1", 1, T0, status="failed"), T0 + 1)
    assert applied.outcome == "failed"
    assert kinds(applied.events) == [("camera", "update")]
    assert b.cameras["cam-9"].failed == 1


def test_failed_result_keeps_the_last_judgement():
    b = board()
    b.apply(risk_result("cam-1", "g1", 1, T0, level="high"), T0 + 1)
    applied = b.apply(risk_result("cam-1", "g1", 2, T0 + 1, status="stale"), T0 + 2)
    assert applied.outcome == "failed" and applied.events == []
    assert b.cameras["cam-1"].level == "high"


def test_older_result_never_overwrites_newer_state_of_its_group():
    b = board()
    b.apply(risk_result("cam-1", "g1", 5, T0 + 5, level="low"), T0 + 6)
    late = b.apply(risk_result("cam-1", "g1", 4, T0 + 4, level="high"), T0 + 7)
    assert late.outcome == "late" and late.events == []
    assert b.cameras["cam-1"].groups["g1"].level == "low"
    assert not b.open


def test_another_groups_older_frame_still_applies():
    """Results of one camera interleave across groups (concurrent LLM calls): order is per group."""
    b = board()
    b.apply(risk_result("cam-1", "g1", 5, T0 + 5, level="low"), T0 + 6)
    applied = b.apply(risk_result("cam-1", "g2", 4, T0 + 4, level="high"), T0 + 7)
    assert applied.outcome == "applied"
    assert b.cameras["cam-1"].level == "high"
    assert b.cameras["cam-1"].frame_id == 5  # the camera's newest frame stays the newest


def test_result_older_than_group_ttl_is_late():
    b = board(group_ttl_s=60)
    applied = b.apply(risk_result("cam-1", "g1", 1, T0, level="high"), T0 + 61)
    assert applied.outcome == "late"
    assert not b.open and not b.cameras["cam-1"].groups


def test_incident_new_update_end_with_fake_clock():
    b = board(quiet_period_s=30)
    new = b.apply(risk_result("cam-1", "g1", 1, T0, level="medium", risk_types=["tailgating"]), T0 + 1.5)
    (ev,) = incident_events(new.events)
    assert ev.action == "new"
    inc_id = ev.body["incident_id"]
    assert inc_id == incident_id("cam-1", "g1", ev.body["task_id"])
    assert ev.body["crop_jpeg_b64"]

    up = b.apply(risk_result("cam-1", "g1", 2, T0 + 2, level="high"), T0 + 3.5)
    (ev,) = incident_events(up.events)
    assert (ev.action, ev.body["incident_id"], ev.body["level"], ev.body["peak_level"]) == ("update", inc_id, "high", "high")

    down = b.apply(risk_result("cam-1", "g1", 3, T0 + 4, level="low"), T0 + 5.5)  # below min: still open
    (ev,) = incident_events(down.events)
    assert (ev.action, ev.body["level"], ev.body["peak_level"], ev.body["state"]) == ("update", "low", "high", "open")

    assert incident_events(b.tick(T0 + 2 + 29.9)) == []  # last hot result at T0+2
    tick = b.tick(T0 + 2 + 30)
    ended = incident_events(tick)
    assert [(e.action, e.body["incident_id"], e.body["state"]) for e in ended] == [("end", inc_id, "ended")]
    assert ended[0].body["ended_at"] == T0 + 32
    assert not b.open and b.cameras["cam-1"].open_incidents == 0
    assert [e.body["open_incidents"] for e in tick if e.kind == "camera"] == [0]  # the tile follows
    assert b.tick(T0 + 33) == []  # ended once, never again


def test_low_results_do_not_keep_an_incident_open():
    b = board(quiet_period_s=10)
    b.apply(risk_result("cam-1", "g1", 1, T0, level="high"), T0)
    for i in range(2, 8):
        b.apply(risk_result("cam-1", "g1", i, T0 + i, level="low"), T0 + i)
    assert [e.action for e in incident_events(b.tick(T0 + 10))] == ["end"]


def test_update_that_changes_nothing_visible_is_not_sent_but_state_is_fresh():
    b = board()
    b.apply(risk_result("cam-1", "g1", 1, T0, level="high"), T0)
    same = b.apply(risk_result("cam-1", "g1", 2, T0 + 1, level="high", crop_b64="AAAA"), T0 + 1)
    assert same.outcome == "applied" and same.events == []
    inc = b.open[("cam-1", "g1")]
    assert inc.frame_id == 2 and inc.crop_jpeg_b64 == "AAAA" and inc.last_hot_at == T0 + 1


def test_duplicate_task_id_never_produces_a_second_event():
    b = board()
    r = risk_result("cam-1", "g1", 1, T0, level="high")
    first = b.apply(r, T0)
    assert ("incident", "new") in kinds(first.events)
    again = b.apply(r.model_copy(update={"level": "low"}), T0 + 1)  # same task id, even with other content
    assert again.outcome == "duplicate" and again.events == []
    assert b.open[("cam-1", "g1")].level == "high"


def test_quiet_incident_then_new_one_gets_a_new_id():
    b = board(quiet_period_s=5)
    first = incident_events(b.apply(risk_result("cam-1", "g1", 1, T0), T0).events)[0].body["incident_id"]
    b.tick(T0 + 5)
    second = incident_events(b.apply(risk_result("cam-1", "g1", 9, T0 + 9), T0 + 9).events)[0]
    assert second.action == "new" and second.body["incident_id"] != first


def test_result_too_old_to_open_an_incident():
    b = board(quiet_period_s=30, group_ttl_s=120)
    applied = b.apply(risk_result("cam-1", "g1", 1, T0, level="high"), T0 + 31)
    assert applied.outcome == "applied" and incident_events(applied.events) == []
    assert b.cameras["cam-1"].level == "high"  # still the group's latest judgement


def test_future_frame_time_is_clamped_to_now():
    b = board(quiet_period_s=10)
    b.apply(risk_result("cam-1", "g1", 1, T0 + 3600, level="high"), T0)  # camera clock an hour ahead
    assert [e.action for e in incident_events(b.tick(T0 + 10))] == ["end"]


def test_silent_groups_leave_the_view_and_camera_event_is_sent():
    b = board(quiet_period_s=5, group_ttl_s=20)
    b.apply(risk_result("cam-1", "g1", 1, T0, level="low"), T0)
    assert b.tick(T0 + 19) == []
    events = b.tick(T0 + 20)
    assert kinds(events) == [("camera", "update")]
    assert events[0].body["groups"] == [] and events[0].body["level"] == "none"


def test_long_silent_camera_is_forgotten():
    b = board(quiet_period_s=5, group_ttl_s=10, camera_ttl_s=100)
    b.apply(risk_result("cam-1", "g1", 1, T0, level="low"), T0)
    b.tick(T0 + 10)
    assert kinds(b.tick(T0 + 100)) == [("camera", "removed")]
    assert "cam-1" not in b.cameras


def test_replay_with_record_times_rebuilds_the_same_incident_id():
    """A restart replays recent results with their own timestamps: same incidents, same ids."""
    results = [risk_result("cam-1", "g1", i, T0 + i, level="high" if i % 3 else "medium") for i in range(10)]
    live = board()
    ids = set()
    for r in results:
        for e in incident_events(live.apply(r, r.frame_ts + 1.5).events):
            ids.add(e.body["incident_id"])
    replayed = board()
    for r in results:
        replayed.apply(r, r.frame_ts + 1.5)
    replayed.tick(T0 + 20)
    assert {i.incident_id for i in replayed.open.values()} == ids
    # ... and the redelivered records are duplicates now
    assert all(replayed.apply(r, T0 + 21).outcome == "duplicate" for r in results)


def test_snapshot_filters_by_camera():
    b = board()
    b.apply(risk_result("cam-1", "g1", 1, T0), T0)
    b.apply(risk_result("cam-2", "g1", 1, T0), T0)
    snap = b.snapshot(frozenset({"cam-2"}))
    assert [c["camera_id"] for c in snap["cameras"]] == ["cam-2"]
    assert [i["camera_id"] for i in snap["incidents"]] == ["cam-2"]
    assert len(b.snapshot()["incidents"]) == 2
    b.tick(T0 + 60)
    assert [i["camera_id"] for i in b.snapshot(frozenset({"cam-2"}))["ended"]] == ["cam-2"]
    assert len(b.snapshot(ended=1)["ended"]) == 1 and b.snapshot()["incidents"] == []


def test_incident_listing_and_lookup():
    b = board(quiet_period_s=5)
    a = incident_events(b.apply(risk_result("cam-1", "g1", 1, T0), T0).events)[0].body["incident_id"]
    b.tick(T0 + 5)
    c = incident_events(b.apply(risk_result("cam-2", "g1", 6, T0 + 6), T0 + 6).events)[0].body["incident_id"]
    assert [i.incident_id for i in b.incidents(open_only=True)] == [c]
    assert [i.incident_id for i in b.incidents()] == [c, a]
    assert [i.incident_id for i in b.incidents(camera_id="cam-1")] == [a]
    assert b.find_incident(a).ended_at == T0 + 5 and b.find_incident("nope") is None


def test_seen_ids_are_bounded_lru():
    seen = SeenIds(2)
    assert not seen.check_and_add("a") and not seen.check_and_add("b")
    assert seen.check_and_add("a")  # refreshes a
    assert not seen.check_and_add("c")  # evicts b
    assert len(seen) == 2 and seen.check_and_add("a") and not seen.check_and_add("b")


def test_recent_results_cache_is_bounded_and_has_no_crops():
    cache = RecentResults(3)
    for i in range(5):
        r = risk_result(f"cam-{i % 2}", "g1", i, T0 + i)
        cache.add(result_summary(r, "applied", T0 + i))
    assert len(cache) == 3
    assert [x["frame_id"] for x in cache.latest()] == [4, 3, 2]
    assert [x["frame_id"] for x in cache.latest("cam-0", limit=5)] == [4, 2]
    assert "crop_jpeg_b64" not in cache.latest()[0]


def test_config_is_validated():
    with pytest.raises(ValueError):
        BoardConfig(min_level="severe")
    with pytest.raises(ValueError):
        BoardConfig(quiet_period_s=0)


def test_hot_result_after_quiet_ends_the_old_incident_before_the_tick_runs():
    """The lifecycle depends only on a group's own results, not on when the tick happens to run."""
    b = board(quiet_period_s=10)
    first = incident_events(b.apply(risk_result("cam-1", "g1", 1, T0), T0).events)[0].body["incident_id"]
    events = incident_events(b.apply(risk_result("cam-1", "g1", 2, T0 + 12), T0 + 12).events)
    assert [(e.action, e.body["incident_id"] == first) for e in events] == [("end", True), ("new", False)]
    assert events[0].body["ended_at"] == T0 + 10
    assert b.cameras["cam-1"].open_incidents == 1


def test_a_failed_result_does_not_hide_a_later_ok_result_of_the_same_task():
    """A scheduler restart may assess a task that had failed before: the ok result must apply."""
    from hazardctl.incidents import IncidentBoard
    from hazardctl.synthetic import risk_result

    board = IncidentBoard()
    failed = risk_result("cam-1", "g1", 5, 100.0, status="failed")
    ok = risk_result("cam-1", "g1", 5, 100.0, level="high")
    assert failed.task_id == ok.task_id
    board.apply(failed, 101.0)
    applied = board.apply(ok, 102.0)
    assert applied.outcome != "duplicate"
    assert board.apply(ok, 103.0).outcome == "duplicate", "the same ok result twice is still a duplicate"
    assert any(i.level == "high" for i in board.open.values())


def test_unchanged_results_are_refreshed_now_and_then_not_per_result():
    """Same level every frame: no event per result, but the camera and incident are re-sent every
    refresh_s so a client sees the frame and result count move (a silent camera stays still)."""
    from hazardctl.incidents import BoardConfig, IncidentBoard
    from hazardctl.synthetic import risk_result

    board = IncidentBoard(BoardConfig(refresh_s=5.0))
    first = board.apply(risk_result("cam-1", "g1", 0, 100.0, level="high"), 100.0)
    assert {(e.kind, e.action) for e in first.events} == {("incident", "new"), ("camera", "update")}
    for f in range(1, 8):
        assert board.apply(risk_result("cam-1", "g1", f, 100.0 + f * 0.5, level="high"), 100.0 + f * 0.5).events == []
    assert board.tick(103.0) == [], "not yet: less than refresh_s since the first unsent result"
    events = board.tick(106.0)
    assert {(e.kind, e.action) for e in events} == {("incident", "update"), ("camera", "update")}
    cam = next(e.body for e in events if e.kind == "camera")
    inc = next(e.body for e in events if e.kind == "incident")
    assert cam["frame_id"] == 7 and cam["results"] == 8 and inc["results"] == 8
    assert board.tick(112.0) == [], "nothing new since: nothing re-sent"


# ---- operators' actions and restore (issue 18) -----------------------------------------------------


def test_ack_keeps_an_incident_open_and_resolve_ends_it_so_a_flare_up_opens_a_new_one():
    b = board()
    b.apply(risk_result("cam-1", "g1", 1, T0, level="high"), T0)
    (inc,) = b.open.values()
    got, events = b.act(inc.incident_id, "ack", T0 + 2)
    assert got is inc and kinds(events) == [("incident", "ack")]
    assert (inc.disposition, inc.acked_at, inc.is_open) == ("acked", T0 + 2, True)
    b.act(inc.incident_id, "ack", T0 + 3)
    assert inc.acked_at == T0 + 2  # the first ack's time is kept
    _, events = b.act(inc.incident_id, "resolve", T0 + 4)
    assert kinds(events) == [("incident", "resolve"), ("camera", "update")]
    assert (inc.disposition, inc.ended_at, inc.resolved_at) == ("resolved", T0 + 4, T0 + 4)
    assert not b.open and b.cameras["cam-1"].open_incidents == 0 and b.ended[-1] is inc
    b.act(inc.incident_id, "ack", T0 + 5)
    assert inc.disposition == "resolved"  # an ack never overrides a resolve
    # still hot a second later: the same group opens a new incident with its own id
    applied = b.apply(risk_result("cam-1", "g1", 2, T0 + 5, level="high"), T0 + 5)
    assert ("incident", "new") in kinds(applied.events)
    assert applied.incident is not None and applied.incident.incident_id != inc.incident_id
    assert b.act("inc-unknown", "ack", T0 + 6) == (None, [])


def test_false_positive_of_an_ended_incident_labels_it_without_reopening():
    b = board()
    b.apply(risk_result("cam-1", "g1", 1, T0, level="high"), T0)
    b.tick(T0 + 31)
    (inc,) = b.ended
    _, events = b.act(inc.incident_id, "false_positive", T0 + 100)
    assert kinds(events) == [("incident", "false_positive")]
    assert (inc.disposition, inc.ended_at) == ("false_positive", T0 + 30)  # it ended when it went quiet


def test_applied_names_the_incident_each_result_went_into():
    b = board()
    first = b.apply(risk_result("cam-1", "g1", 1, T0, level="high"), T0)
    calm = b.apply(risk_result("cam-1", "g1", 2, T0 + 1, level="high"), T0 + 1)  # nothing visible changed
    other = b.apply(risk_result("cam-1", "g2", 1, T0 + 1, level="low"), T0 + 1)  # no incident
    assert first.incident is calm.incident is not None and calm.events == []
    assert calm.incident.results == 2 and other.incident is None


def test_restore_puts_stored_incidents_back_with_their_ids():
    b = board()
    b.apply(risk_result("cam-1", "g1", 1, T0, level="high"), T0)
    b.apply(risk_result("cam-2", "g1", 1, T0, level="medium"), T0)
    b.tick(T0 + 31)
    b.apply(risk_result("cam-1", "g1", 2, T0 + 40, level="high"), T0 + 40)
    stored_open = [type(i).from_dict(i.as_dict(crop=False)) for i in b.open.values()]
    stored_ended = [type(i).from_dict(i.as_dict(crop=False)) for i in b.ended]
    fresh = board()
    fresh.restore(stored_open, stored_ended)
    assert {i.incident_id for i in fresh.open.values()} == {i.incident_id for i in b.open.values()}
    assert [i.incident_id for i in fresh.ended] == [i.incident_id for i in b.ended]
    assert fresh.cameras["cam-1"].open_incidents == 1 and fresh.cameras["cam-1"].level == "high"
    # the next result of the group continues the restored incident
    applied = fresh.apply(risk_result("cam-1", "g1", 3, T0 + 45, level="medium"), T0 + 45)
    assert applied.incident.incident_id == stored_open[0].incident_id and applied.incident.results == 2
    assert kinds(applied.events)[0] == ("incident", "update")
