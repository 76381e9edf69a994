"""kill -9 consume over the real Kafka broker and start it again, with the incident store (SQLite and
PostgreSQL): every incident keeps its id and history, one open for longer than the replay window
included; the replay reads only the gap since the store's offsets; the store's database going away
at run time stops neither the board nor the push, and what queued meanwhile is written when it is back.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid

import pytest
from websockets.asyncio.client import connect

from hazardctl.synthetic import risk_result
from tests.consume_proc import ConsumeProcess, recv_json, recv_until
from tests.kafka_util import produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(150)]


def kv(r) -> tuple[bytes, bytes]:
    return r.camera_id.encode(), r.model_dump_json().encode()


def stored_results(c: ConsumeProcess, inc_id: str) -> list[dict]:
    status, d = c.get(f"/incidents/{inc_id}")
    return [e for e in d.get("timeline", []) if e["type"] == "result"] if status == 200 else []


def test_kill_9_and_restart_keeps_every_incident_and_replays_only_the_gap(kafka_bootstrap, make_topic, hazardctl_env,
                                                                          store_args):
    topic, dlq = make_topic("results", 2), make_topic("dlq", 1)
    args = ("--in", f"kafka://{topic}", "--dlq", f"kafka://{dlq}", "--group", f"consume-{topic}", "--http",
            "127.0.0.1:0", "--replay", "3", "--quiet-period", "300", "--group-ttl", "600", *store_args)
    t0 = time.time()
    opening = risk_result("cam-1", "g1", 1, t0, level="high")
    c1 = ConsumeProcess(*args, env=hazardctl_env, stdin=False)
    try:
        produce(kafka_bootstrap, topic, [kv(opening), kv(risk_result("cam-2", "g1", 1, t0, level="low"))])
        c1.applied(2, timeout=30)
        (inc,) = c1.get("/incidents?open=true")[1]["incidents"]
        c1.wait_for(lambda: len(stored_results(c1, inc["incident_id"])) == 1, 15, "the result stored")
        c1.wait_for(lambda: c1.get("/healthz")[1].get("store_pending") == 0, 15, "offsets stored")
    finally:
        c1.proc.send_signal(signal.SIGKILL)
        c1.proc.wait(10)

    time.sleep(4)  # the incident's opening result is now older than --replay 3
    while_down = [risk_result("cam-1", "g1", 2, time.time(), level="medium", description="still close"),
                  risk_result("cam-3", "g9", 1, time.time(), level="high")]
    produce(kafka_bootstrap, topic, [kv(r) for r in while_down])

    with ConsumeProcess(*args, env=hazardctl_env, stdin=False) as c2:
        health = c2.get("/healthz")[1]
        assert health["replayed"] == 2  # the gap since the store's offsets, nothing it already had
        opened = {i["camera_id"]: i for i in c2.get("/incidents?open=true")[1]["incidents"]}
        assert set(opened) == {"cam-1", "cam-3"}
        assert opened["cam-1"]["incident_id"] == inc["incident_id"]  # open longer than the replay window
        assert opened["cam-1"]["results"] == 2 and opened["cam-1"]["opened_at"] == pytest.approx(t0)
        history = c2.wait_for(lambda: (lambda r: r if len(r) == 2 else None)(
            stored_results(c2, inc["incident_id"])), 15, "the gap's result stored")
        assert [e["description"] for e in history][-1] == "still close"
        assert [e["task_id"] for e in history] == [opening.task_id, while_down[0].task_id]

        async def live():
            async with connect(c2.ws_url) as ws:
                snap = await recv_json(ws)
                assert {i["incident_id"] for i in snap["incidents"]} == {o["incident_id"] for o in opened.values()}
                await asyncio.to_thread(produce, kafka_bootstrap, topic,
                                        [kv(risk_result("cam-1", "g1", 3, time.time(), level="high"))])
                got = await recv_until(ws, lambda m: m["type"] == "incident")
                assert [(m["event"], m["incident"]["incident_id"]) for m in got if m["type"] == "incident"] == [
                    ("update", inc["incident_id"])]

        asyncio.run(live())
        assert c2.metric("hazardctl_consume_events_total", type="incident_new") == 0
        c2.wait_for(lambda: len(stored_results(c2, inc["incident_id"])) == 3, 15, "the live result stored")


def test_database_lost_at_run_time_board_and_push_go_on_and_writes_flush_when_back(pg_server, tmp_path):
    url = pg_server.database("lost_" + uuid.uuid4().hex[:10])
    with ConsumeProcess("--http", "127.0.0.1:0", "--store", url, "--data-dir", str(tmp_path / "d"),
                        "--quiet-period", "300") as c:
        c.send(risk_result("cam-1", "g1", 1, time.time(), level="high"))
        c.applied(1)
        (inc,) = c.get("/incidents?open=true")[1]["incidents"]
        c.wait_for(lambda: len(stored_results(c, inc["incident_id"])) == 1, 15, "stored")
        pg_server.stop("immediate")
        try:
            async def push_goes_on():
                async with connect(c.ws_url) as ws:
                    await recv_json(ws)
                    for i in range(2, 12):
                        c.send(risk_result("cam-1", "g1", i, time.time(), level=("high", "medium")[i % 2],
                                           description=f"step {i}"))
                        got = await recv_until(ws, lambda m: m["type"] == "incident", timeout=5)
                        assert got[-1]["incident"]["description"] == f"step {i}"

            asyncio.run(push_goes_on())
            health = c.wait_for(lambda: (lambda h: h if h["store"] == "unreachable" else None)(
                c.get("/healthz")[1]), 15, "the store seen unreachable")
            assert health["status"] == "ok" and health["store_pending"] >= 10
            assert c.metric("hazardctl_store_up", stage="consume") == 0
            assert c.metric("hazardctl_store_pending_writes", stage="consume") >= 10
        finally:
            pg_server.restart()
        c.wait_for(lambda: c.get("/healthz")[1]["store"] == "up", 30, "the store back")
        c.wait_for(lambda: len(stored_results(c, inc["incident_id"])) == 11, 30, "the queued writes flushed")
        assert [e["description"] for e in stored_results(c, inc["incident_id"])][1:] == [
            f"step {i}" for i in range(2, 12)]
        assert c.metric("hazardctl_store_writes_total", stage="consume", outcome="dropped") == 0
        assert json.loads(json.dumps(c.get("/healthz")[1]))["store_dropped"] == 0
