"""The outbox rules with a fake clock: routing, numbering, order per incident, backoff, dead letters."""

from __future__ import annotations

import pytest

from hazardctl.sinks import encode_event, parse_sink, safe_name
from hazardctl.errors import ConfigError
from hazardctl.sinks.outbox import OutboxQueue, Pending, RetryPolicy, Route, Router


def inc(inc_id: str, level: str = "high", camera: str = "cam-1", **kw) -> dict:
    return {"incident_id": inc_id, "camera_id": camera, "level": level, "peak_level": kw.pop("peak", level), **kw}


# ---- routing ------------------------------------------------------------------------------------

def test_router_numbers_each_incident_from_one_and_keeps_its_whole_lifecycle():
    r = Router(min_level="medium")
    d1, o1 = r.offer("incident", "new", inc("a"), 0.0)
    d2, o2 = r.offer("incident", "update", inc("a", level="low", peak="high"), 1.0)
    _, b1 = r.offer("incident", "new", inc("b"), 1.5)
    d3, o3 = r.offer("incident", "end", inc("a", level="low", peak="high"), 2.0)
    assert (d1, d2, d3) == ("routed", "routed", "routed")
    assert [o.key for o in (o1, o2, o3)] == ["a:1", "a:2", "a:3"]
    assert b1.key == "b:1"
    assert r.offer("camera", "update", {"camera_id": "cam-1"}, 3.0) == ("not_incident", None)


def test_router_min_level_and_a_later_hotter_event_routes_it():
    r = Router(min_level="high")
    assert r.offer("incident", "new", inc("a", level="medium"), 0.0) == ("below_level", None)
    d, o = r.offer("incident", "update", inc("a", level="high"), 1.0)
    assert d == "routed" and o.seq == 1 and o.action == "update"


def test_router_cooldown_holds_back_a_cameras_next_incident_for_its_whole_life():
    r = Router(min_level="medium", cooldown_s=60.0)
    assert r.offer("incident", "new", inc("a"), 0.0)[0] == "routed"
    assert r.offer("incident", "new", inc("b"), 30.0)[0] == "cooldown"
    assert r.offer("incident", "update", inc("b"), 70.0)[0] == "held_back"  # still held back after the cooldown
    assert r.offer("incident", "new", inc("c", camera="cam-2"), 31.0)[0] == "routed"  # per camera
    assert r.offer("incident", "new", inc("d"), 61.0)[0] == "routed"
    assert r.offer("incident", "end", inc("b"), 80.0)[0] == "held_back"
    assert "b" not in r.routes  # an ended held-back incident is forgotten


def test_camera_health_incidents_route_whatever_the_level_and_cooldown():
    r = Router(min_level="high", cooldown_s=600.0)
    assert r.offer("incident", "new", inc("a"), 0.0)[0] == "routed"
    d, o = r.offer("incident", "new", inc("cam-down", level="none", type="camera"), 1.0)
    assert d == "routed" and o.key == "cam-down:1"


def test_router_restored_route_goes_on_numbering():
    r = Router()
    r.restore("a", Route("cam-1", routed=True, seq=7))
    assert r.offer("incident", "update", inc("a"), 0.0)[1].seq == 8


# ---- the queue ----------------------------------------------------------------------------------

def entry(inc_id: str, seq: int, sink: str = "s", at: float = 0.0) -> Pending:
    return Pending(sink, inc_id, seq, "cam-1", b"{}", created_at=at, next_at=at)


def test_only_the_head_of_an_incident_is_in_flight_and_incidents_do_not_wait_for_each_other():
    q = OutboxQueue(RetryPolicy(base_s=1.0, jitter=0.0))
    for e in (entry("a", 1), entry("a", 2), entry("b", 1)):
        q.add(e)
    due = q.due(0.0)
    assert [e.key for e in due] == ["a:1", "b:1"]
    assert q.due(0.0) == []  # both heads are in flight; a:2 waits for a:1
    q.failed(due[0], 0.0, "HTTP 500")
    assert q.delivered(due[1], 0.0) == []  # one failure among deliveries: a:1 keeps its backoff
    assert q.due(0.5) == []  # a:1 backs off 1 s; a:2 may not overtake it
    assert [e.key for e in q.due(1.0)] == ["a:1"]


def test_backoff_doubles_up_to_the_cap_then_the_event_is_dead():
    policy = RetryPolicy(base_s=1.0, factor=2.0, cap_s=8.0, max_attempts=6, jitter=0.0)
    q = OutboxQueue(policy)
    e = entry("a", 1)
    q.add(e)
    now, waits = 0.0, []
    while True:
        (head,) = q.due(now)
        f = q.failed(head, now, "connection refused")
        if f.dead:
            break
        waits.append(f.retry_at - now)
        now = f.retry_at
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert e.attempts == 6 and e.last_error == "connection refused" and q.pending() == 0


def test_jitter_stays_within_its_band():
    p = RetryPolicy(base_s=10.0, cap_s=100.0, jitter=0.2)
    assert p.delay(1, 0.0) == pytest.approx(8.0) and p.delay(1, 0.999999) == pytest.approx(12.0, rel=1e-4)
    assert p.delay(50, 0.999999) == 100.0  # never above the cap


def test_a_permanent_refusal_is_dead_at_once_and_the_next_event_goes():
    q = OutboxQueue()
    q.add(entry("a", 1))
    q.add(entry("a", 2))
    (head,) = q.due(0.0)
    assert q.failed(head, 0.0, "HTTP 400", permanent=True).dead
    assert [e.key for e in q.due(0.0)] == ["a:2"]


def test_a_sink_back_after_failures_makes_its_whole_backlog_due_at_once():
    q = OutboxQueue(RetryPolicy(base_s=30.0, cap_s=60.0, jitter=0.0))
    for e in (entry("a", 1), entry("b", 1), entry("c", 1, sink="other")):
        q.add(e)
    a1, b1 = q.due(0.0, sink="s")
    q.failed(a1, 0.0, "down")
    q.failed(b1, 5.0, "down")  # two in a row: s is down, probed again at 5 + delay(2) = 65
    other = q.due(0.0, sink="other")
    q.failed(other[0], 10.0, "down")  # due again at 40
    assert q.due(64.0, sink="s") == []
    (probe,) = q.due(65.0, sink="s")  # one probe: the oldest event of s
    assert probe.key == "a:1"
    woken = q.delivered(probe, 65.0)  # the receiver is back
    assert [e.key for e in woken] == []  # b's own retry time (65) has come anyway
    assert [e.key for e in q.due(65.0, sink="s")] == ["b:1"]
    assert [e.key for e in q.due(39.0, sink="other")] == []  # the other sink keeps its own schedule


def test_a_down_sink_is_probed_with_one_event_at_a_time_and_the_others_keep_their_attempts():
    q = OutboxQueue(RetryPolicy(base_s=1.0, factor=2.0, cap_s=8.0, max_attempts=4, jitter=0.0))
    for i in range(10):
        q.add(entry(f"i{i}", 1, at=float(i) / 100))
    now = 0.1
    first = q.due(now)
    assert len(first) == 10  # up: every incident's head goes at once
    for e in first:
        q.failed(e, now, "connection refused")  # the receiver is down
    probes = []
    for _ in range(12):
        nxt = q.next_due()
        batch = q.due(nxt)
        assert len(batch) == 1, batch  # one probe at a time
        probes.append((round(nxt - now, 2), batch[0].key))
        now = nxt
        q.failed(batch[0], now, "connection refused")
    # the oldest event is probed until it is dead (4 attempts), then the next oldest; waits double to the cap
    assert [k for _w, k in probes][:5] == ["i0:1", "i0:1", "i0:1", "i1:1", "i1:1"]
    assert [w for w, _k in probes][:4] == [8.0, 8.0, 8.0, 8.0]  # 10 failures in a row: already at the cap
    assert q.pending() == 10 - 4 and all(q.queues[("s", f"i{i}")][0].attempts == 1 for i in range(5, 10))
    t = q.next_due()
    (probe,) = q.due(t)
    q.delivered(probe, t)  # the receiver is back
    assert not q.down("s") and len(q.due(t)) == len(q.queues) == 5  # i5…i9 at once, not one by one


def test_a_4xx_does_not_mark_the_sink_down():
    q = OutboxQueue(RetryPolicy(base_s=10.0, jitter=0.0))
    for i in range(3):
        q.add(entry(f"i{i}", 1))
    for e in q.due(0.0):
        q.failed(e, 0.0, "HTTP 400", permanent=True)
    assert not q.down("s") and q.pending() == 0


def test_restored_entries_keep_seq_order_whatever_order_they_come_in():
    q = OutboxQueue()
    for s in (3, 1, 2):
        q.add(entry("a", s))
    keys = []
    while q.pending():
        (h,) = q.due(0.0)
        keys.append(h.key)
        q.delivered(h, 0.0)
    assert keys == ["a:1", "a:2", "a:3"]


# ---- specs and the document ---------------------------------------------------------------------

def test_sink_specs_and_names_without_secrets():
    w = parse_sink("webhook:https://tmc.example:8443/hooks/hazard?token=abc")
    assert (w.kind, w.name) == ("webhook", "webhook:tmc.example:8443")
    m = parse_sink("mqtt://broker.local:1884/site-a")
    assert (m.kind, m.name) == ("mqtt", "mqtt:broker.local:1884")
    k = parse_sink("kafka://incidents")
    assert (k.kind, k.target, k.name) == ("kafka", "incidents", "kafka:incidents")
    assert safe_name("webhook:https://tmc.example/h?token=abc") == "webhook:https://tmc.example/h"
    for bad in ("webhook:ftp://x", "mqtt:///nohost", "kafka://", "smtp://x", "webhook:https://u:pw@h/x"):
        with pytest.raises(ConfigError) as e:
            parse_sink(bad)
        assert "pw" not in str(e.value)


def test_event_document_carries_the_idempotency_key_and_never_the_crop():
    import orjson

    _, out = Router().offer("incident", "new", inc("a", crop_jpeg_b64="QUJD"), 0.0)
    doc = orjson.loads(encode_event(out, now=5.0))
    assert doc["idempotency_key"] == "a:1" and doc["seq"] == 1 and doc["event"] == "new" and doc["ts"] == 5.0
    assert doc["incident"]["incident_id"] == "a" and "crop_jpeg_b64" not in doc["incident"]


def test_router_memory_forgets_ended_incidents_before_open_ones():
    r = Router(memory=2)
    r.offer("incident", "new", inc("open-old"), 0.0)
    r.offer("incident", "new", inc("ended"), 1.0)
    r.offer("incident", "end", inc("ended"), 2.0)
    r.offer("incident", "new", inc("open-new"), 3.0)
    assert set(r.routes) == {"open-old", "open-new"}
    assert r.offer("incident", "update", inc("open-old"), 4.0)[1].seq == 2  # still numbered on


def test_pending_counts_per_sink():
    q = OutboxQueue()
    for e in (entry("a", 1), entry("a", 2), entry("b", 1, sink="t")):
        q.add(e)
    assert (q.pending(), q.pending("s"), q.pending("t")) == (3, 2, 1)
    (h, _t) = q.due(0.0)
    q.delivered(h, 0.0)
    assert (q.pending(), q.pending("s")) == (2, 1)


def test_next_due_never_points_at_what_an_attempt_in_flight_holds_back():
    """The dispatcher sleeps until next_due: a time in the past that `due` cannot serve would spin it."""
    q = OutboxQueue(RetryPolicy(base_s=1.0, jitter=0.0))
    for i in range(3):
        q.add(entry(f"i{i}", 1))
    for e in q.due(0.0):
        q.failed(e, 0.0, "down")  # down, probe at 1 + …
    t = q.next_due()
    (probe,) = q.due(t)
    assert q.due(t + 10) == [] and q.next_due() is None  # the probe is in flight: nothing to wake for
    q.failed(probe, t + 0.5, "down")
    assert q.next_due() > t + 0.5
    q2 = OutboxQueue()
    q2.add(entry("a", 1))
    assert q2.next_due(skip=frozenset({"s"})) is None and q2.next_due() == 0.0
