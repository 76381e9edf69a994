"""consume end to end: a real `hazardctl consume` process, results on its stdin, real WebSocket clients.

Every test talks to the server the way an operator's page does (websockets client, HTTP GETs);
nothing is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from hazardctl.synthetic import TINY_JPEG_B64, risk_result
from tests.consume_proc import ConsumeProcess, recv_json, recv_until

pytestmark = pytest.mark.timeout(90)


def now() -> float:
    return time.time()


def is_incident(action: str, camera: str | None = None):
    return lambda m: (m["type"] == "incident" and m["event"] == action
                      and (camera is None or m["incident"]["camera_id"] == camera))


def test_snapshot_first_then_live_events():
    with ConsumeProcess() as c:
        t = now()
        c.send(risk_result("cam-1", "g1", 1, t, level="high"), risk_result("cam-2", "g1", 1, t, level="low"))
        c.applied(2)

        async def body():
            async with connect(c.ws_url) as ws:
                snap = await recv_json(ws)
                assert snap["type"] == "snapshot" and snap["subscription"] == "*"
                assert {cam["camera_id"]: cam["level"] for cam in snap["cameras"]} == {"cam-1": "high", "cam-2": "low"}
                assert [(i["camera_id"], i["level"]) for i in snap["incidents"]] == [("cam-1", "high")]
                assert snap["config"] == {"min_level": "medium", "quiet_period_s": 30.0}

                c.send(risk_result("cam-2", "g7", 2, now(), level="medium", risk_types=["tailgating"]))
                msgs = await recv_until(ws, is_incident("new", "cam-2"))
                assert all(m["seq"] > snap["seq"] for m in msgs)  # live events come after the snapshot
                inc = msgs[-1]["incident"]
                assert (inc["group_id"], inc["risk_types"], inc["crop_jpeg_b64"]) == ("g7", ["tailgating"], TINY_JPEG_B64)
                cam = await recv_json(ws)
                assert (cam["type"], cam["camera"]["camera_id"], cam["camera"]["level"]) == ("camera", "cam-2", "medium")
                assert cam["camera"]["open_incidents"] == 1

        asyncio.run(body())


def test_subscription_by_query_string_and_by_message():
    with ConsumeProcess() as c:
        t = now()
        c.send(*(risk_result(f"cam-{i}", "g1", 1, t, level="low") for i in (1, 2, 3)))
        c.applied(3)

        async def body():
            async with connect(c.ws_url + "?cameras=cam-2") as by_query, connect(c.ws_url) as by_msg:
                snap = await recv_json(by_query)
                assert snap["subscription"] == ["cam-2"] and [x["camera_id"] for x in snap["cameras"]] == ["cam-2"]
                assert len((await recv_json(by_msg))["cameras"]) == 3  # all cameras until it subscribes
                await by_msg.send('{"type": "subscribe", "cameras": ["cam-1", "cam-3"]}')
                snap = await recv_json(by_msg)
                assert snap["subscription"] == ["cam-1", "cam-3"]
                assert [x["camera_id"] for x in snap["cameras"]] == ["cam-1", "cam-3"]

                for frame in (2, 3):
                    c.send(*(risk_result(f"cam-{i}", "g1", frame, now(), level="high" if frame == 2 else "medium")
                             for i in (1, 2, 3)))
                # the last message each should see; anything of another camera would arrive before it
                got_query = await recv_until(by_query, lambda m: m.get("incident", {}).get("level") == "medium")
                got_msg = await recv_until(
                    by_msg, lambda m: m.get("incident", {}).get("camera_id") == "cam-3" and m["incident"]["level"] == "medium")
                cams_query = {m.get("incident", m.get("camera", {})).get("camera_id") for m in got_query}
                cams_msg = {m.get("incident", m.get("camera", {})).get("camera_id") for m in got_msg}
                assert cams_query == {"cam-2"}
                assert cams_msg == {"cam-1", "cam-3"}

                await by_msg.send('{"type": "subscribe", "cameras": 7}')
                err = (await recv_until(by_msg, lambda m: m["type"] == "error"))[-1]
                assert "cameras must be" in err["error"]
                await by_msg.send('{"type": "subscribe", "cameras": "*"}')
                snap = (await recv_until(by_msg, lambda m: m["type"] == "snapshot"))[-1]
                assert snap["subscription"] == "*" and len(snap["cameras"]) == 3

        asyncio.run(body())


def test_duplicate_result_is_suppressed():
    with ConsumeProcess() as c:
        async def body():
            async with connect(c.ws_url) as ws:
                await recv_json(ws)  # snapshot
                r = risk_result("cam-1", "g1", 1, now(), level="high")
                c.send(r)
                await recv_until(ws, is_incident("new", "cam-1"))
                await recv_until(ws, lambda m: m["type"] == "camera")
                # redelivered as is, and again with other content under the same task id
                c.send(r, r.model_copy(update={"level": "low", "description": "changed"}))
                c.send(risk_result("cam-9", "g1", 1, now(), level="high"))  # a marker after the duplicates
                got = await recv_until(ws, is_incident("new", "cam-9"))
                assert [m for m in got if m.get("incident", m.get("camera", {})).get("camera_id") == "cam-1"] == []

        asyncio.run(body())
        assert c.metric("hazardctl_consume_results_total", outcome="duplicate") == 2
        _, incs = c.get("/incidents?open=true&camera=cam-1")
        assert [i["level"] for i in incs["incidents"]] == ["high"]


def test_incident_new_update_end():
    with ConsumeProcess("--quiet-period", "1.5") as c:
        async def body():
            async with connect(c.ws_url) as ws:
                await recv_json(ws)
                t = now()
                c.send(risk_result("cam-1", "g1", 1, t, level="medium", risk_types=["tailgating"]))
                new = (await recv_until(ws, is_incident("new")))[-1]["incident"]
                c.send(risk_result("cam-1", "g1", 2, t + 0.1, level="high", risk_types=["tailgating"]))
                up = (await recv_until(ws, is_incident("update")))[-1]["incident"]
                assert (up["incident_id"], up["level"], up["peak_level"]) == (new["incident_id"], "high", "high")
                # nothing visible changes: no update; then the level falls: an update
                c.send(risk_result("cam-1", "g1", 3, t + 0.2, level="high", risk_types=["tailgating"]))
                c.send(risk_result("cam-1", "g1", 4, t + 0.3, level="low", risk_types=[]))
                got = await recv_until(ws, is_incident("update"))
                assert [m["incident"]["level"] for m in got if m["type"] == "incident"] == ["low"]
                ended = await recv_until(ws, is_incident("end"), timeout=8)
                end = ended[-1]["incident"]
                assert (end["incident_id"], end["state"], end["peak_level"]) == (new["incident_id"], "ended", "high")
                assert end["ended_at"] == pytest.approx(t + 0.2 + 1.5)  # last hot result + quiet period
                cam = await recv_json(ws)  # the camera tile follows the incident
                assert (cam["type"], cam["camera"]["open_incidents"]) == ("camera", 0)

        asyncio.run(body())
        _, incs = c.get("/incidents?open=true")
        assert incs["incidents"] == []
        _, incs = c.get("/incidents")
        assert [i["state"] for i in incs["incidents"]] == ["ended"]
        assert c.metric("hazardctl_consume_events_total", type="incident_new") == 1
        assert c.metric("hazardctl_consume_events_total", type="incident_update") == 2
        assert c.metric("hazardctl_consume_events_total", type="incident_end") == 1


def test_slow_client_is_dropped_while_a_fast_one_keeps_receiving():
    """The slow client stops reading (its library pauses the socket); the fast one must get every event."""
    big_crop = base64.b64encode(random.Random(1).randbytes(225_000)).decode()  # 300 KB, like a real JPEG
    with ConsumeProcess("--client-queue", "16") as c:
        async def body():
            async with connect(c.ws_url, max_queue=1) as slow, \
                    connect(c.ws_url, max_size=None) as fast:
                await recv_json(slow)
                await recv_json(fast)
                t = now()
                n = 80  # 24 MB: more than the slow client's socket buffers and queue, while the fast one
                # may lag by ~10 MB (kernel buffers + 16 queued events) on a busy machine without being dropped
                results = [risk_result("cam-1", "g1", i, t + i * 0.01, level=("high", "medium")[i % 2], crop_b64=big_crop)
                           for i in range(n)]  # every result changes the level: one incident event each
                feeding = asyncio.create_task(asyncio.to_thread(c.send, *results))  # the loop keeps reading

                async def read_fast() -> list[tuple[str, int]]:
                    seqs: list[tuple[str, int]] = []
                    while len([s for s in seqs if s[0] == "incident"]) < n:
                        m = await recv_json(fast, 20)
                        seqs.append((m["type"], m["seq"]))
                    return seqs

                fast_reader = asyncio.create_task(read_fast())
                await asyncio.to_thread(c.wait_for, lambda: c.get("/healthz")[1]["clients_dropped"] == 1, 20,
                                        "the slow client dropped")
                # the slow client, reading at last, finds the reason it was closed
                with pytest.raises(ConnectionClosed):
                    while True:
                        await asyncio.wait_for(slow.recv(), 10)
                assert (slow.close_code, slow.close_reason) == (4008, "too slow: send queue overflow")
                seqs = await fast_reader  # every event reached the fast client, in order
                await feeding
                assert [s for _, s in seqs] == sorted(s for _, s in seqs)
                assert c.get("/healthz")[1]["clients"] == 1
                # and the fast one still gets live events
                c.send(risk_result("cam-2", "g1", 1, now(), level="high"))
                await recv_until(fast, is_incident("new", "cam-2"))

        asyncio.run(body())
        assert c.metric("hazardctl_consume_clients_dropped_total") == 1
