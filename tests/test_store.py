"""The store against real databases: SQLite (a file, WAL) and PostgreSQL 15 (Debian's server, started
by tests/pg_util.py on a free port). The same tests run on both."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid

import pytest
from sqlalchemy import text

from hazardctl.errors import ConfigError, ServiceUnavailable
from hazardctl.store import Migration, Store, open_store, register
from hazardctl.store.evidence import EvidenceFiles
from hazardctl.store.incidents import (ActionWrite, IncidentQuery, IncidentStore, IncidentWrite, OffsetsWrite,
                                       decode_cursor)
from hazardctl.store.writer import StoreWriter


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store/incidents.db"
    server = request.getfixturevalue("pg_server")
    return server.database("t_" + uuid.uuid4().hex[:12])


def _incident(i: int, *, camera="cam-1", opened=1000.0, state="open", level="high", results=1) -> dict:
    return {"incident_id": f"inc-{i:04d}", "camera_id": camera, "group_id": f"g{i}", "state": state,
            "disposition": None, "level": level, "peak_level": level, "risk_types": ["tailgating"],
            "description": f"scene {i}", "confidence": 0.9, "opened_at": opened, "updated_at": opened + 1,
            "last_hot_at": opened + 1, "ended_at": None if state == "open" else opened + 31, "frame_id": i,
            "frame_ts": opened + 1, "task_id": f"t{i}", "results": results, "times": {"capture": opened},
            "acked_at": None, "resolved_at": None}


def _result(inc_id: str, task: str, at: float, *, model="qwen-vl-plus", prompt="p1") -> dict:
    return {"incident_id": inc_id, "task_id": task, "received_at": at, "frame_id": 1, "frame_ts": at,
            "level": "high", "risk_types": '["tailgating"]', "description": "close", "confidence": 0.8,
            "key_name": "key-01", "model": model, "prompt_version": prompt, "times": '{"capture": 1.0}'}


def _jpeg(tag: str) -> str:
    return base64.b64encode(b"\xff\xd8\xff" + tag.encode() * 50).decode()


def test_migrations_are_versioned_and_applied_once(store_url):
    component = "t" + uuid.uuid4().hex[:8]
    register(Migration(component, 1, ("CREATE TABLE " + component + " (id {serial}, body {blob}, at {float})",)),
             Migration(component, 2, ("CREATE INDEX " + component + "_at ON " + component + " (at)",)))
    store = open_store(store_url)
    try:
        assert {(component, 1), (component, 2), ("incidents", 1)} <= store.applied()
        assert store.migrate() == []  # nothing twice
        if store.dialect == "sqlite":
            with store.reading() as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        with store.transaction() as conn:
            conn.execute(text(f"INSERT INTO {component} (body, at) VALUES (:b, :t)"), {"b": b"\x00\x01", "t": 1.5})
        with store.reading() as conn:
            assert conn.execute(text(f"SELECT body, at FROM {component}")).one() == (b"\x00\x01", 1.5)
        with pytest.raises(ValueError):  # a published migration is never edited
            register(Migration(component, 2, ("CREATE INDEX other ON " + component + " (id)",)))
    finally:
        store.close()


def test_a_transaction_rolls_back_on_error(store_url):
    store = open_store(store_url)
    try:
        with pytest.raises(RuntimeError):
            with store.transaction() as conn:
                conn.execute(text("INSERT INTO consume_offsets (topic, kafka_partition, next_offset, updated_at) "
                                  "VALUES ('t', 0, 5, 0)"))
                raise RuntimeError("half way")
        with store.reading() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM consume_offsets")).scalar_one() == 0
    finally:
        store.close()


def test_incidents_results_actions_round_trip(store_url, tmp_path):
    store = open_store(store_url)
    incidents = IncidentStore(store, EvidenceFiles(tmp_path / "evidence"))
    try:
        inc = _incident(1)
        crop_a, crop_b = _jpeg("a"), _jpeg("b")
        incidents.write([IncidentWrite(inc, _result("inc-0001", "t1", 1001.0), crop_a),
                         IncidentWrite({**inc, "results": 2}, _result("inc-0001", "t2", 1002.0), crop_a),
                         IncidentWrite({**inc, "results": 3, "level": "medium"},
                                       _result("inc-0001", "t3", 1003.0, prompt="p2"), crop_b),
                         OffsetsWrite({("results", 0): (41, 1003.0), ("results", 1): (7, 999.0)}),
                         OffsetsWrite({("results", 0): (40, 1002.0)})])
        # a redelivered batch (retry after an outage) changes nothing
        incidents.write([IncidentWrite({**inc, "results": 3, "level": "medium"},
                                       _result("inc-0001", "t3", 1003.0, prompt="p2"), crop_b)])
        incidents.write([ActionWrite("inc-0001", "ack", "seen it", 1004.0, None, actor="desk 3")])
        d = incidents.detail("inc-0001")
        assert d["results"] == 3 and d["level"] == "medium" and d["disposition"] == "acked"
        assert d["acked_at"] == 1004.0 and d["state"] == "open"
        kinds = [(e["type"], e.get("task_id") or e.get("action")) for e in d["timeline"]]
        assert kinds == [("result", "t1"), ("result", "t2"), ("result", "t3"), ("action", "ack")]
        assert [e.get("evidence") for e in d["timeline"][:3]] == [1, 1, 2]  # same crop twice: one evidence
        assert d["timeline"][2]["prompt_version"] == "p2" and d["timeline"][0]["model"] == "qwen-vl-plus"
        assert (d["timeline"][3]["note"], d["timeline"][3]["by"]) == ("seen it", "desk 3")
        sha_b = incidents.evidence_hash("inc-0001", 2)
        assert sha_b == hashlib.sha256(base64.b64decode(crop_b)).hexdigest()
        assert incidents.evidence.read(sha_b) == base64.b64decode(crop_b)
        assert incidents.evidence_hash("inc-0001", 3) is None
        assert len(list((tmp_path / "evidence").rglob("*.jpg"))) == 2  # deduplicated by content
        assert incidents.offsets() == {("results", 0): (41, 1003.0), ("results", 1): (7, 999.0)}  # never back
        incidents.write([IncidentWrite({**inc, "results": 4})])  # a board that never saw the ack (another instance)
        assert incidents.detail("inc-0001")["disposition"] == "acked"  # never taken back
        incidents.write([ActionWrite("inc-0001", "false_positive", "a shadow", 1005.0, None)])
        d = incidents.detail("inc-0001")
        assert (d["disposition"], d["state"], d["ended_at"]) == ("false_positive", "ended", 1005.0)
        assert incidents.open_incidents() == []
    finally:
        store.close()


def test_an_action_recorded_twice_is_one_row(store_url):
    """Two consume instances sharing actions (`--actions`) and one database both record an ack."""
    store = open_store(store_url)
    incidents = IncidentStore(store, None)
    try:
        incidents.write([IncidentWrite(_incident(1))])
        ack = ActionWrite("inc-0001", "ack", "seen", 1004.25, None, actor="desk 3")
        incidents.write([ack])
        incidents.write([ack, ActionWrite("inc-0001", "resolve", None, 1005.0, None)])
        timeline = incidents.detail("inc-0001")["timeline"]
        assert [(e["action"], e["at"]) for e in timeline if e["type"] == "action"] == [("ack", 1004.25),
                                                                                       ("resolve", 1005.0)]
    finally:
        store.close()


def test_camera_incidents_are_history_but_never_the_boards(store_url):
    """A camera outage (hazardctl.camera_watch's incident body) is stored and searchable like any incident,
    reads back typed `camera`, and is never restored onto the scene board."""
    from hazardctl.camera_watch import CameraWatch
    from hazardctl.messages import CameraStatus

    store = open_store(store_url)
    incidents = IncidentStore(store, None)
    try:
        w = CameraWatch()
        w.apply(CameraStatus(camera_id="cam-9", state="live", since=100.0, ts=100.0, heartbeat_s=10.0), 100.0)
        (new,) = w.apply(CameraStatus(camera_id="cam-9", state="stale", previous="live", reason="read failed",
                                      since=110.0, ts=110.0, heartbeat_s=10.0), 110.0)
        incidents.write([IncidentWrite(new.body), IncidentWrite(_incident(1))])
        (cam,) = incidents.open_incidents(kind="camera")
        assert (cam["incident_id"], cam["type"], cam["task_id"]) == (new.body["incident_id"], "camera", None)
        assert [i["incident_id"] for i in incidents.open_incidents()] == ["inc-0001"]  # the board's only
        rows, _ = incidents.search(IncidentQuery(camera="cam-9"))
        assert [(r["incident_id"], r["type"], r["state"]) for r in rows] == [(new.body["incident_id"], "camera", "open")]

        (end,) = w.apply(CameraStatus(camera_id="cam-9", state="live", previous="stale", since=130.0, ts=130.0,
                                      heartbeat_s=10.0), 130.0)
        incidents.write([IncidentWrite(end.body)])
        assert incidents.open_incidents(kind="camera") == []
        d = incidents.detail(new.body["incident_id"])
        assert (d["state"], d["ended_at"], d["risk_types"]) == ("ended", 130.0, ["camera stale"])
        assert all(i["incident_id"] != new.body["incident_id"] for i in incidents.recent_ended(10))
    finally:
        store.close()


def test_search_pages_newest_first_with_filters(store_url):
    store = open_store(store_url)
    incidents = IncidentStore(store, None)
    try:
        writes = [IncidentWrite(_incident(i, camera=f"cam-{i % 2}", opened=1000.0 + (i // 2),
                                          level="high" if i % 3 == 0 else "medium",
                                          state="ended" if i < 10 else "open")) for i in range(25)]
        incidents.write(writes)
        seen, cursor = [], None
        while True:
            q = IncidentQuery.parse({"limit": "4", **({"cursor": cursor} if cursor else {})})
            page, cursor = incidents.search(q)
            seen += page
            if cursor is None:
                break
        keys = [(r["opened_at"], r["incident_id"]) for r in seen]
        assert keys == sorted(keys, reverse=True) and len(set(keys)) == 25  # every one once, newest first
        page, _ = incidents.search(IncidentQuery.parse({"camera": "cam-1", "level": "high", "state": "open",
                                                        "since": "1005", "until": "1012", "limit": "100"}))
        expect = {f"inc-{i:04d}" for i in range(25) if i % 2 == 1 and i % 3 == 0 and i >= 10 and 1005 <= 1000 + i // 2 < 1012}
        assert {r["incident_id"] for r in page} == expect and expect
        rows = list(incidents.export(IncidentQuery.parse({"since": "1000", "until": "1003"}), batch=2))
        assert [r["incident_id"] for r in rows] == ["inc-0005", "inc-0004", "inc-0003", "inc-0002", "inc-0001",
                                                    "inc-0000"]
    finally:
        store.close()


@pytest.mark.parametrize("query, reason", [
    ({"level": "severe"}, "level"), ({"state": "gone"}, "state"), ({"since": "yesterday"}, "since"),
    ({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"), ({"cursor": "!!"}, "cursor")])
def test_malformed_queries_say_why(query, reason):
    with pytest.raises(ValueError, match=reason):
        IncidentQuery.parse(query)


def test_cursor_round_trip():
    from hazardctl.store.incidents import encode_cursor

    assert decode_cursor(encode_cursor(12.5, "inc-x")) == (12.5, "inc-x")


def test_retention_prunes_old_ended_incidents_and_their_evidence(store_url, tmp_path):
    store = open_store(store_url)
    incidents = IncidentStore(store, EvidenceFiles(tmp_path / "ev"))
    try:
        old, new = _incident(1, opened=100.0, state="ended"), _incident(2, opened=5000.0, state="ended")
        incidents.write([IncidentWrite(old, _result(old["incident_id"], "t1", 101.0), _jpeg("old")),
                         IncidentWrite(new, _result(new["incident_id"], "t2", 5001.0), _jpeg("new")),
                         ActionWrite(old["incident_id"], "resolve", None, 140.0, None)])
        assert incidents.prune(older_than=1000.0) == 1
        assert incidents.detail(old["incident_id"]) is None and incidents.detail(new["incident_id"]) is not None
        assert len(list((tmp_path / "ev").rglob("*.jpg"))) == 1
    finally:
        store.close()


def test_every_image_a_result_carried_is_evidence_and_pruned_with_it(store_url, tmp_path):
    """A suspect task's earlier crops and thumbnail (issue 19.4) come back on its result: all of them are kept,
    numbered per result (earlier frames oldest first, then the crop), shared images stored once, and removed
    with the incident's retention, never before."""
    store = open_store(store_url)
    incidents = IncidentStore(store, EvidenceFiles(tmp_path / "ev"))
    try:
        inc = _incident(1, opened=100.0)
        frames = [(-2.0, "crop", _jpeg("f-2")), (-1.0, "crop", _jpeg("f-1")), (0.0, "context", _jpeg("thumb"))]
        incidents.write([IncidentWrite(inc, _result("inc-0001", "t1", 101.0), _jpeg("c1"), frames),
                         IncidentWrite({**inc, "results": 2}, _result("inc-0001", "t2", 102.0), _jpeg("c2"),
                                       [(-1.0, "crop", _jpeg("c1"))])])  # its earlier crop is t1's crop
        incidents.write([IncidentWrite(inc, _result("inc-0001", "t1", 101.0), _jpeg("c1"), frames)])  # redelivered
        d = incidents.detail("inc-0001")
        first, second = [e for e in d["timeline"] if e["type"] == "result"]
        assert [(f["offset_s"], f["kind"], f["evidence"]) for f in first["frames"]] == [
            (-2.0, "crop", 1), (-1.0, "crop", 2), (0.0, "context", 3)]
        assert first["evidence"] == 4 and second["frames"] == [{"offset_s": -1.0, "kind": "crop", "evidence": 4}]
        assert second["evidence"] == 5 and d["evidence"] == [1, 2, 3, 4, 5]
        want = ["f-2", "f-1", "thumb", "c1", "c2"]
        for n, tag in enumerate(want, 1):
            sha = incidents.evidence_hash("inc-0001", n)
            assert incidents.evidence.read(sha) == base64.b64decode(_jpeg(tag)), n
        assert incidents.evidence_hash("inc-0001", 6) is None
        assert len(list((tmp_path / "ev").rglob("*.jpg"))) == 5
        incidents.write([IncidentWrite({**inc, "state": "ended", "ended_at": 200.0})])
        assert incidents.prune(older_than=150.0) == 0 and len(list((tmp_path / "ev").rglob("*.jpg"))) == 5
        assert incidents.prune(older_than=1000.0) == 1
        assert list((tmp_path / "ev").rglob("*.jpg")) == []
    finally:
        store.close()


def test_evidence_cap_deletes_the_oldest(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    incidents = IncidentStore(store, EvidenceFiles(tmp_path / "ev"), evidence_max_bytes=150)
    inc = _incident(1)
    for i in range(6):  # 53 bytes each
        incidents.write([IncidentWrite(inc, _result("inc-0001", f"t{i}", 1000.0 + i), _jpeg(f"{i}"))])
    kept = [incidents.evidence_hash("inc-0001", n) for n in range(1, 7)]
    on_disk = {p.stem for p in (tmp_path / "ev").rglob("*.jpg")}
    assert sum(len(base64.b64decode(_jpeg(str(i)))) for i in range(6)) > 150
    assert len(on_disk) <= 2 and incidents.evidence_pruned >= 4
    assert kept[-1] in on_disk and kept[0] not in on_disk  # the newest stays
    store.close()


def test_unreachable_store_is_one_line_and_exit_3(tmp_path):
    from tests.pg_util import free_port

    with pytest.raises(ServiceUnavailable) as e:
        open_store(f"postgresql://u:s3cret@127.0.0.1:{free_port()}/db", connect_timeout=2)
    msg = str(e.value)
    assert e.value.exit_code == 3 and "\n" not in msg and "s3cret" not in msg and "127.0.0.1" in msg
    for bad in ("mysql://x", "postgresql://u@h:xx/db", "sqlite:///"):
        with pytest.raises(ConfigError):
            Store(bad)


def test_writer_queues_through_an_outage_and_flushes_when_back(pg_server):
    url = pg_server.database("outage_" + uuid.uuid4().hex[:8])
    store = open_store(url, connect_timeout=1)
    incidents = IncidentStore(store, None)
    writer = StoreWriter(incidents.write, stage="test-store", retry_min_s=0.05, retry_max_s=0.3, max_pending=50)
    writer.start()
    try:
        writer.put(IncidentWrite(_incident(0)))
        assert writer.flush(10)
        pg_server.stop("immediate")
        for i in range(1, 40):
            assert writer.put(IncidentWrite(_incident(i)))
        deadline = time.monotonic() + 10
        while writer.up and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not writer.up and writer.pending > 0
        for i in range(40, 70):  # beyond the bound of 50: dropped and counted, never blocking
            writer.put(IncidentWrite(_incident(i)))
        assert writer.pending == 50 and writer.dropped == 19  # nothing drains while the database is down
        dropped = writer.dropped
        pg_server.restart()
        assert writer.flush(30) and writer.up
        page, _ = incidents.search(IncidentQuery(limit=500))
        assert len(page) == 70 - dropped  # every write below the bound arrived
        assert {r["incident_id"] for r in page} >= {f"inc-{i:04d}" for i in range(40)}
    finally:
        writer.stop(5)
        store.close()


def test_writer_lets_a_reader_wait_for_its_own_writes(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    incidents = IncidentStore(store, None)
    writer = StoreWriter(incidents.write, stage="test-store-ryw", linger_s=0.5).start()
    try:
        writer.put(IncidentWrite(_incident(1)))
        writer.put(ActionWrite("inc-0001", "ack", "mine", 1001.0, None))
        assert incidents.detail("inc-0001") is None  # still lingering for more writes
        assert writer.wait_for(writer.enqueued, 5)
        d = incidents.detail("inc-0001")
        assert d["disposition"] == "acked" and d["timeline"][-1]["note"] == "mine"
    finally:
        writer.stop(5)
        store.close()


def test_an_old_database_is_upgraded_by_the_new_version_only(store_url):
    """A store made by incidents v1 (before actions had an actor) gets v2 on the next start: its rows
    stay, the new column is there, and v1 is not run again."""
    from hazardctl.store import SCHEMA_VERSIONS, registered

    v1 = next(m for m in registered(["incidents"]) if m.version == 1)
    old = Store(store_url)
    with old.transaction() as conn:
        conn.execute(text(old.sql(f"CREATE TABLE {SCHEMA_VERSIONS} (component TEXT NOT NULL, version INTEGER NOT NULL, "
                                  "description TEXT NOT NULL, applied_at {float} NOT NULL, PRIMARY KEY (component, version))")))
        for statement in v1.statements:
            conn.execute(text(old.sql(statement)))
        conn.execute(text(f"INSERT INTO {SCHEMA_VERSIONS} VALUES ('incidents', 1, 'v1', 0)"))
        conn.execute(text("INSERT INTO incidents (incident_id, camera_id, group_id, state, level, peak_level, risk_types, "
                          "description, opened_at, updated_at, last_hot_at, frame_id, frame_ts, task_id, results, times) "
                          "VALUES ('inc-old', 'cam', 'g', 'ended', 'high', 'high', '[]', 'd', 1, 1, 1, 1, 1, 't', 1, '{}')"))
        conn.execute(text("INSERT INTO incident_actions (incident_id, action, note, at) VALUES ('inc-old', 'ack', 'n', 2)"))
    old.close()
    store = open_store(store_url)
    try:
        applied = store.applied()
        assert ("incidents", 2) in applied
        with store.reading() as conn:
            assert conn.execute(text(f"SELECT description FROM {SCHEMA_VERSIONS} WHERE component = 'incidents' "
                                     "AND version = 1")).scalar_one() == "v1"  # not re-run
        d = IncidentStore(store, None).detail("inc-old")
        assert [(e["action"], e["note"], e["by"]) for e in d["timeline"]] == [("ack", "n", None)]
    finally:
        store.close()
