"""The webhook sink through the dispatcher and the SQLite outbox, against a real HTTP(S) server:
signatures, idempotency keys, a receiver down then back (every event once, in order per incident),
500s, a receiver that hangs, a certificate that does not verify, a restart with events undelivered.
"""

from __future__ import annotations

import logging
import time

import orjson
import pytest

from hazardctl.sinks import SinkSettings, make_sink, parse_sink
from hazardctl.sinks.dispatcher import SinkDispatcher
from hazardctl.sinks.outbox import RetryPolicy, Router
from hazardctl.sinks.outbox_store import OutboxJournal
from hazardctl.store import open_store
from tests.sink_receivers import TestCA, WebhookReceiver, check_exactly_once_in_order, wait_until

SECRET = b"s3cr3t-for-the-signature-only"
FAST = RetryPolicy(base_s=0.05, factor=2.0, cap_s=0.4, max_attempts=200, jitter=0.1)


def incident_events(n_incidents: int, updates: int, prefix: str = "inc") -> list[tuple[str, dict]]:
    """new, `updates` × update, end for each incident, interleaved across incidents."""
    out = []
    for step in range(updates + 2):
        for i in range(n_incidents):
            action = "new" if step == 0 else "end" if step == updates + 1 else "update"
            out.append((action, {"incident_id": f"{prefix}-{i}", "camera_id": f"cam-{i % 3}", "group_id": f"g{i}",
                                 "level": "high", "peak_level": "high", "description": f"step {step}",
                                 "crop_jpeg_b64": "QUJD" * 10}))
    return out


@pytest.fixture
def receiver():
    r = WebhookReceiver(SECRET)
    yield r
    r.close()


def dispatcher_for(url: str, tmp_path, *, policy=FAST, ca_file=None, timeout_s=2.0, journal=True,
                   dead: list | None = None, store_url: str | None = None) -> SinkDispatcher:
    store = open_store(store_url or f"sqlite:///{tmp_path / 'store.db'}") if journal else None
    sink = make_sink(parse_sink(f"webhook:{url}"), SinkSettings(secret=SECRET, timeout_s=timeout_s, ca_file=ca_file))
    d = SinkDispatcher([sink], Router(min_level="medium"), policy=policy,
                       journal=OutboxJournal(store) if store else None,
                       dead_letter=(lambda dl, key: dead.append(dl)) if dead is not None else None)
    d.start()
    return d


def test_signed_events_with_idempotency_keys_and_a_receiver_down_then_back(receiver, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    d = dispatcher_for(receiver.url, tmp_path)
    events = incident_events(6, 4)
    try:
        for action, body in events[:12]:
            d.offer("incident", action, body)
        wait_until(lambda: len(receiver.snapshot()) == 12, 10, "the first 12 events")
        receiver.down()  # connection refused from now on
        for action, body in events[12:30]:
            d.offer("incident", action, body)
            time.sleep(0.02)
        time.sleep(1.0)  # several retries fail meanwhile
        assert len(receiver.snapshot()) == 12
        receiver.up()
        for action, body in events[30:]:
            d.offer("incident", action, body)
        wait_until(lambda: len({r.key for r in receiver.snapshot()}) == len(events), 15, "every event after the outage")
        assert d.pending() == 0
    finally:
        d.stop()
    got = receiver.snapshot()
    counts = check_exactly_once_in_order(got, {f"inc-{i}:{s}" for i in range(6) for s in range(1, 7)})
    assert counts["incidents"] == 6
    docs = [r.doc for r in got]
    assert {doc["event"] for doc in docs} == {"new", "update", "end"}
    assert all("crop_jpeg_b64" not in doc["incident"] for doc in docs)
    assert all(doc["idempotency_key"] == r.key for doc, r in zip(docs, got))
    assert SECRET.decode() not in caplog.text
    assert "failed (cannot connect" in caplog.text  # the outage is logged once, without the secret


def test_500_is_retried_then_dead_lettered_and_kept_as_dead_in_the_store(receiver, tmp_path):
    from sqlalchemy import text

    receiver.mode = "500"
    dead: list = []
    d = dispatcher_for(receiver.url, tmp_path, policy=RetryPolicy(base_s=0.05, cap_s=0.1, max_attempts=3), dead=dead)
    try:
        d.offer("incident", "new", incident_events(1, 0)[0][1])
        wait_until(lambda: dead, 10, "the dead letter")
        assert receiver.requests == 3  # max_attempts, no more
        d.offer("incident", "update", incident_events(1, 1)[1][1])  # the next event of the incident still goes
        receiver.mode = "ok"
        wait_until(lambda: receiver.snapshot(), 10, "the next event")
    finally:
        d.stop()
    (dl,) = dead
    assert dl.stage == "consume" and dl.error_class == "sink_undeliverable" and dl.attempts == 3
    assert dl.last_error == "HTTP 500" and orjson.loads(dl.payload)["idempotency_key"] == "inc-0:1"
    assert [r.key for r in receiver.snapshot()] == ["inc-0:2"]
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    with store.reading() as conn:
        rows = conn.execute(text("SELECT incident_id, seq, state, attempts, last_error FROM sink_outbox")).all()
    assert [tuple(r) for r in rows] == [("inc-0", 1, "dead", 3, "HTTP 500")]


def test_a_4xx_refusal_is_a_dead_letter_at_once(tmp_path):
    from aiohttp import web  # noqa: F401 — aiohttp answers 404 for an unknown path

    r = WebhookReceiver(SECRET)
    dead: list = []
    d = dispatcher_for(r.url.replace("/hooks/hazard", "/nowhere"), tmp_path, dead=dead)
    try:
        d.offer("incident", "new", incident_events(1, 0)[0][1])
        wait_until(lambda: dead, 10, "the dead letter")
    finally:
        d.stop()
        r.close()
    assert dead[0].error_class == "sink_rejected" and dead[0].attempts == 1 and dead[0].last_error == "HTTP 404"


def test_a_receiver_that_hangs_times_out_and_the_offer_never_waits(receiver, tmp_path):
    receiver.mode = "hang"
    dead: list = []
    d = dispatcher_for(receiver.url, tmp_path, timeout_s=0.3, policy=RetryPolicy(base_s=0.05, cap_s=0.1, max_attempts=1),
                       dead=dead)
    try:
        t0 = time.perf_counter()
        for action, body in incident_events(20, 3):
            d.offer("incident", action, body)
        offered = time.perf_counter() - t0
        # 16 attempts at once time out together; the sink is then down: one probe at a time
        wait_until(lambda: len(dead) >= 20, 30, "20 events dead after their timeout")
    finally:
        d.stop(timeout=0.5)
    assert offered < 0.05, f"offering 100 events took {offered * 1000:.1f} ms with a hanging receiver"
    assert {dl.last_error for dl in dead} == {"no answer within 0.3s"}
    assert d.pending() + d.dead == 100  # the rest wait in the outbox for the receiver


def test_a_certificate_that_does_not_verify_is_retried_then_dead_and_a_trusted_one_delivers(tmp_path):
    ca = TestCA(tmp_path / "ca")
    bad = WebhookReceiver(SECRET, tls=ca.server_cert("self", signed=False))
    good = WebhookReceiver(SECRET, tls=ca.server_cert("good", signed=True))
    dead: list = []
    try:
        d = dispatcher_for(bad.url, tmp_path / "a", ca_file=str(ca.ca_file), dead=dead,
                           policy=RetryPolicy(base_s=0.05, cap_s=0.1, max_attempts=3))
        try:
            d.offer("incident", "new", incident_events(1, 0)[0][1])
            wait_until(lambda: dead, 10, "the dead letter")
        finally:
            d.stop()
        assert dead[0].attempts == 3 and "certificate" in dead[0].last_error
        assert not bad.snapshot()
        d = dispatcher_for(good.url, tmp_path / "b", ca_file=str(ca.ca_file))
        try:
            d.offer("incident", "new", incident_events(1, 0)[0][1])
            wait_until(lambda: good.snapshot(), 10, "delivery over TLS")
        finally:
            d.stop()
        assert good.snapshot()[0].signature_ok
    finally:
        bad.close()
        good.close()


@pytest.fixture(scope="module")
def postgres():
    from tests.pg_util import postgres_server_fixture

    yield from postgres_server_fixture()


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_restart_delivers_what_was_left_and_goes_on_numbering(receiver, tmp_path, db, request):
    url = (request.getfixturevalue("postgres").database(f"sinks_{tmp_path.name[-8:].lower()}") if db == "postgresql"
           else f"sqlite:///{tmp_path / 'store.db'}")
    receiver.down()
    d = dispatcher_for(receiver.url, tmp_path, store_url=url)
    events = incident_events(3, 2)
    for action, body in events[:6]:  # new + first update of each
        d.offer("incident", action, body)
    time.sleep(0.5)
    d.stop(timeout=0.5)  # consume stops with every event undelivered
    assert d.pending() == 6
    receiver.up()
    d2 = dispatcher_for(receiver.url, tmp_path, store_url=url)  # a new process on the same store
    try:
        for action, body in events[6:]:
            d2.offer("incident", action, body)
        wait_until(lambda: len(receiver.snapshot()) == len(events), 10, "the backlog and the new events")
    finally:
        d2.stop()
    check_exactly_once_in_order(receiver.snapshot(), {f"inc-{i}:{s}" for i in range(3) for s in range(1, 5)})
