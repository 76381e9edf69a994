"""consume with its incident store, as a real process over pipes: results → incidents in SQLite and
PostgreSQL; kill -9 and start again: incidents keep their ids and history; evidence; the history API;
operator actions pushed to WebSocket clients; a database unreachable at start is exit 3."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import signal
import time
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect

from hazardctl.messages import GroupFrame
from hazardctl.synthetic import risk_result
from tests.consume_proc import ConsumeProcess, recv_json, recv_until
from tests.pg_util import free_port

pytestmark = pytest.mark.timeout(120)
TOKEN = "t0ken-for-the-store-tests-0123456789"


def rr(*args, **kw):
    """A synthetic result as schedule writes it, with the prompt version the export must carry."""
    r = risk_result(*args, **kw)
    r.prompt_version = "pv-test1"
    return r


def jpeg(tag: str) -> str:
    return base64.b64encode(b"\xff\xd8\xff\xe0" + tag.encode() * 40 + b"\xff\xd9").decode()


def call(c: ConsumeProcess, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN,
         ctype: str = "application/json") -> tuple[int, bytes, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{c.http_port}{path}", data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def get_json(c: ConsumeProcess, path: str) -> dict:
    status, body, _ = call(c, "GET", path)
    assert status == 200, (path, status, body[:300])
    return json.loads(body)


def start(store_args, *extra: str) -> ConsumeProcess:
    env = {**__import__("os").environ, "HAZARDCTL_CONSUME_TOKEN": TOKEN}
    return ConsumeProcess("--http", "127.0.0.1:0", "--quiet-period", "30", *store_args, *extra, env=env)


def metric(c: ConsumeProcess, name: str, **labels: str) -> float:
    """ConsumeProcess.metric with the token."""
    total = 0.0
    for line in call(c, "GET", "/metrics")[1].decode().splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def applied(c: ConsumeProcess, n: int) -> None:
    c.wait_for(lambda: metric(c, "hazardctl_messages_in_total", stage="consume") >= n, 15, f"{n} results read")


def wait_stored(c: ConsumeProcess, inc_id: str, results: int) -> dict:
    def stored():
        status, body, _ = call(c, "GET", f"/incidents/{inc_id}")
        d = json.loads(body) if status == 200 else {}
        return d if len([e for e in d.get("timeline", []) if e["type"] == "result"]) >= results else None
    return c.wait_for(stored, 15, f"{results} results of {inc_id} stored")


def test_results_become_stored_incidents_that_survive_kill_9(store_args):
    t = time.time()
    with start(store_args) as c1:
        suspect = rr("cam-1", "g1", 3, t - 1, level="high", crop_b64=jpeg("b"))
        suspect.frames = [GroupFrame(offset_s=-2.0, kind="crop", jpeg_b64=jpeg("b-2"), size=(8, 8)),  # the model saw
                          GroupFrame(offset_s=-1.0, kind="crop", jpeg_b64=jpeg("b-1"), size=(8, 8))]  # these too
        c1.send(rr("cam-1", "g1", 1, t - 3, level="high", crop_b64=jpeg("a")),
                rr("cam-1", "g1", 2, t - 2, level="medium", crop_b64=jpeg("a")), suspect,
                rr("cam-2", "g7", 1, t - 1, level="low"))  # below --min-level: no incident
        applied(c1, 4)
        (inc,) = get_json(c1, "/incidents?open=true")["incidents"]
        d = wait_stored(c1, inc["incident_id"], 3)
        assert [e["level"] for e in d["timeline"]] == ["high", "medium", "high"]
        assert [e.get("evidence") for e in d["timeline"]] == [1, 1, 4]  # the same crop twice is one evidence
        assert [f["evidence"] for f in d["timeline"][2]["frames"]] == [2, 3] and d["evidence"] == [1, 2, 3, 4]
        assert d["timeline"][0]["key_name"] and d["timeline"][0]["model"]
        for n, tag in ((2, "b-2"), (4, "b")):
            status, body, ctype = call(c1, "GET", f"/incidents/{inc['incident_id']}/evidence/{n}")
            assert (status, ctype, body) == (200, "image/jpeg", base64.b64decode(jpeg(tag)))
        assert call(c1, "GET", f"/incidents/{inc['incident_id']}/evidence/5")[0] == 404
        c1.proc.send_signal(signal.SIGKILL)
        c1.proc.wait(10)

    # a second start: the same incident (same id, its whole history), and the group's next hot result
    # goes into it — never a second "new"
    with start(store_args) as c2:
        (again,) = get_json(c2, "/incidents?open=true")["incidents"]
        assert again["incident_id"] == inc["incident_id"] and again["results"] == 3
        assert again["crop_jpeg_b64"] == jpeg("b")  # its newest crop, read back from the evidence

        async def body():
            async with connect(c2.ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
                snap = await recv_json(ws)
                assert [i["incident_id"] for i in snap["incidents"]] == [inc["incident_id"]]
                c2.send(rr("cam-1", "g1", 4, time.time(), level="high", description="worse",
                                    crop_b64=jpeg("c")))
                got = await recv_until(ws, lambda m: m["type"] == "incident")
                assert [(m["event"], m["incident"]["incident_id"]) for m in got if m["type"] == "incident"] == [
                    ("update", inc["incident_id"])]

        asyncio.run(body())
        d = wait_stored(c2, inc["incident_id"], 4)
        assert [e["description"] for e in d["timeline"]][-1] == "worse"
        assert metric(c2, "hazardctl_consume_events_total", type="incident_new") == 0


def test_history_api_filters_pages_and_exports(store_args):
    t = time.time() - 600
    results = []
    for i in range(7):  # seven incidents on two cameras, opened a minute apart
        results.append(rr(f"cam-{i % 2}", f"g{i}", 1, t + 60 * i, level="high" if i % 2 else "medium",
                          description='=HYPERLINK("http://evil.example")' if i == 0 else None))
    with start(store_args, "--quiet-period", "3600", "--group-ttl", "7200") as c:
        c.send(*results)
        applied(c, 7)
        c.wait_for(lambda: len(get_json(c, "/incidents?limit=50")["incidents"]) == 7, 15, "7 stored")
        ids, cursor = [], None
        while True:
            page = get_json(c, "/incidents?limit=3" + (f"&cursor={cursor}" if cursor else ""))
            ids += [i["incident_id"] for i in page["incidents"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        opened = {i["incident_id"]: i["opened_at"] for i in get_json(c, "/incidents?limit=50")["incidents"]}
        assert len(ids) == 7 and ids == sorted(ids, key=lambda i: -opened[i])  # newest first, each once
        cam1_high = get_json(c, f"/incidents?camera=cam-1&level=high&since={t + 100}")["incidents"]
        assert sorted(i["group_id"] for i in cam1_high) == ["g3", "g5"]
        status, body, ctype = call(c, "GET", f"/incidents.csv?since={t}&until={t + 200}")
        assert status == 200 and ctype.startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        assert sorted(r["group_id"] for r in rows) == ["g0", "g1", "g2", "g3"]
        assert {"prompt_version", "model", "key_name", "level", "incident_id"} <= set(rows[0])
        g0 = next(r for r in rows if r["group_id"] == "g0")  # LLM text never becomes a spreadsheet formula
        assert g0["description"] == "'=HYPERLINK(\"http://evil.example\")"
        status, body, _ = call(c, "GET", "/incidents.jsonl?camera=cam-0")
        lines = [json.loads(x) for x in body.decode().splitlines()]
        assert [x["group_id"] for x in lines] == ["g6", "g4", "g2", "g0"] and lines[0]["results"][0]["model"]
        for bad, why in (("level=severe", "level"), ("limit=0", "limit"), ("cursor=zz", "cursor"),
                         ("since=yesterday", "since")):
            status, body, _ = call(c, "GET", f"/incidents?{bad}")
            assert status == 400 and why in json.loads(body)["error"]


def test_operator_actions_are_stored_pushed_and_a_resolved_incident_flares_up_anew(store_args):
    t = time.time()
    with start(store_args) as c:
        c.send(rr("cam-1", "g1", 1, t, level="high"))
        applied(c, 1)
        (inc,) = get_json(c, "/incidents?open=true")["incidents"]
        iid = inc["incident_id"]

        async def body():
            hdr = {"Authorization": f"Bearer {TOKEN}"}
            async with connect(c.ws_url, additional_headers=hdr) as a, connect(c.ws_url, additional_headers=hdr) as b:
                await recv_json(a), await recv_json(b)
                # malformed requests: 400 with the reason, nothing stored
                for path, data, ctype, why in (
                        (f"/incidents/{iid}/ack", b"{not json", "application/json", "JSON"),
                        (f"/incidents/{iid}/ack", b'{"note": 5}', "application/json", "note"),
                        (f"/incidents/{iid}/ack", b'note=x', "application/x-www-form-urlencoded", "application/json"),
                        (f"/incidents/{iid}/ack", json.dumps({"by": "x" * 65}).encode(), "application/json", "by"),
                        (f"/incidents/{iid}/shred", b"{}", "application/json", "action")):
                    status, rbody, _ = await asyncio.to_thread(call, c, "POST", path, data, TOKEN, ctype)
                    assert status == 400 and why in json.loads(rbody)["error"], (path, rbody)
                assert (await asyncio.to_thread(call, c, "POST", f"/incidents/{iid}/ack", b"{}", None))[0] == 401
                assert (await asyncio.to_thread(call, c, "POST", "/incidents/inc-nope/ack", b"{}"))[0] == 404
                status, rbody, _ = await asyncio.to_thread(call, c, "POST", f"/incidents/{iid}/ack",
                                                           b'{"note": "on it", "by": "desk 3"}')
                assert status == 200 and json.loads(rbody)["disposition"] == "acked"
                for ws in (a, b):  # every client sees the ack
                    got = await recv_until(ws, lambda m: m["type"] == "incident")
                    assert (got[-1]["event"], got[-1]["incident"]["incident_id"]) == ("ack", iid)
                # resolved from the other client's side of things: over the WebSocket itself
                await b.send(json.dumps({"type": "action", "action": "resolve", "incident_id": iid,
                                         "note": "cleared"}))
                for ws in (a, b):
                    got = await recv_until(ws, lambda m: m["type"] == "incident" and m["event"] == "resolve")
                    assert got[-1]["incident"]["state"] == "ended"
                # the same group flares up again: a new incident, with a new id
                c.send(rr("cam-1", "g1", 2, time.time(), level="high"))
                got = await recv_until(a, lambda m: m["type"] == "incident" and m["event"] == "new")
                return got[-1]["incident"]["incident_id"]

        new_id = asyncio.run(body())
        assert new_id != iid
        d = c.wait_for(lambda: (lambda x: x if len([e for e in x["timeline"] if e["type"] == "action"]) == 2
                                else None)(get_json(c, f"/incidents/{iid}")), 15, "2 actions stored")
        assert [(e["action"], e["note"], e["by"]) for e in d["timeline"] if e["type"] == "action"] == [
            ("ack", "on it", "desk 3"), ("resolve", "cleared", None)]
        assert d["disposition"] == "resolved" and d["state"] == "ended"
        status, rbody, _ = call(c, "POST", f"/incidents/{new_id}/false-positive", b'{"note": "shadow"}')
        assert status == 200
        c.wait_for(lambda: get_json(c, "/incidents?state=false_positive")["incidents"], 15, "fp stored")
        status, body, _ = call(c, "GET", "/incidents.csv?state=false_positive")
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        assert [(r["incident_id"], r["disposition"]) for r in rows] == [(new_id, "false_positive")]
        assert (rows[0]["prompt_version"], rows[0]["model"]) == ("pv-test1", "synthetic-vl")


def test_database_unreachable_at_start_is_one_line_and_exit_3(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    url = f"postgresql://hz:s3cret@127.0.0.1:{free_port()}/incidents"
    p = subprocess.run([sys.executable, "-m", "hazardctl.cli", "consume", "--ws", "127.0.0.1:0", "--store", url],
                       capture_output=True, text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL)
    lines = [x for x in p.stderr.strip().splitlines() if x.strip()]
    assert p.returncode == 3, p.stderr
    assert len(lines) == 1 and "127.0.0.1" in lines[0] and "s3cret" not in p.stderr and "Traceback" not in p.stderr


def test_an_export_past_its_cap_says_it_was_cut(tmp_path, monkeypatch):
    """In-process on a real SQLite store: the export stops at MAX_EXPORT incidents and says so."""
    from types import SimpleNamespace

    from hazardctl.store import open_store
    from hazardctl.store.incidents import IncidentQuery, IncidentStore, IncidentWrite
    from stages import consume_history
    from tests.test_store import _incident

    store = open_store(f"sqlite:///{tmp_path}/s.db")
    incidents = IncidentStore(store, None)
    incidents.write([IncidentWrite(_incident(i, opened=1000.0 + i)) for i in range(5)])
    api = consume_history.IncidentApi(SimpleNamespace(recorder=SimpleNamespace(incidents=incidents)))
    monkeypatch.setattr(consume_history, "MAX_EXPORT", 3)
    body, cut = api._export_body("jsonl", IncidentQuery(limit=500))
    assert cut and [json.loads(x)["incident_id"] for x in body.splitlines()] == ["inc-0004", "inc-0003", "inc-0002"]
    body, cut = api._export_body("csv", IncidentQuery(camera="cam-1", since=1003.0, limit=500))
    assert not cut and len(list(csv.DictReader(io.StringIO(body.decode())))) == 2
    store.close()
