"""Two consume instances over the real Kafka broker, each with its own group and its own store, sharing
operators' actions (`--actions kafka://…`): an ack taken on one reaches the other's WebSocket clients and
store, a resolve sent over the other's WebSocket comes back; neither applies its own action twice; a
malformed action on the topic is a dead letter and the instance goes on."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import pytest
from websockets.asyncio.client import connect

from hazardctl.synthetic import risk_result
from tests.consume_proc import ConsumeProcess, recv_json, recv_until
from tests.kafka_util import produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def post(c: ConsumeProcess, path: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{c.http_port}{path}", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read())


def actions_of(c: ConsumeProcess, incident_id: str) -> list[tuple]:
    status, d = c.get(f"/incidents/{incident_id}")
    return [(e["action"], e["note"], e["by"]) for e in d["timeline"] if e["type"] == "action"] if status == 200 else []


def test_an_action_on_one_instance_reaches_the_others_clients_and_store(kafka_bootstrap, make_topic, hazardctl_env,
                                                                        tmp_path):
    results, actions = make_topic("results", 2), make_topic("actions", 2)

    def instance(name: str) -> ConsumeProcess:
        return ConsumeProcess("--in", f"kafka://{results}", "--group", f"consume-{name}-{results}",
                              "--actions", f"kafka://{actions}", "--http", "127.0.0.1:0", "--quiet-period", "300",
                              "--data-dir", str(tmp_path / name), "--dlq", str(tmp_path / f"{name}-dlq.jsonl"),
                              env=hazardctl_env, stdin=False, timeout=40)

    a, b = instance("a"), instance("b")
    try:
        produce(kafka_bootstrap, results, [(b"cam-1", risk_result("cam-1", "g1", 1, time.time(),
                                                                  level="high").model_dump_json().encode())])
        a.applied(1, timeout=30)
        b.applied(1, timeout=30)
        (inc,) = a.get("/incidents?open=true")[1]["incidents"]
        iid = inc["incident_id"]
        produce(kafka_bootstrap, actions, [(b"cam-1", b'{"type": "incident-action", "incident_id": 7}')])

        async def scenario():
            async with connect(b.ws_url) as ws_b, connect(a.ws_url) as ws_a:
                assert [i["incident_id"] for i in (await recv_json(ws_b))["incidents"]] == [iid]
                await recv_json(ws_a)
                status, shown = await asyncio.to_thread(post, a, f"/incidents/{iid}/ack", {"note": "on it",
                                                                                        "by": "desk 3"})
                assert status == 200 and shown["disposition"] == "acked"
                got = await recv_until(ws_b, lambda m: m["type"] == "incident", timeout=15)
                ev = got[-1]
                assert (ev["event"], ev["incident"]["incident_id"], ev["incident"]["disposition"]) == ("ack", iid,
                                                                                                      "acked")
                # and the other way: a resolve over b's WebSocket ends the incident on a's board too
                await ws_b.send(json.dumps({"type": "action", "action": "resolve", "incident_id": iid,
                                            "note": "cleared", "by": "desk 9"}))
                got = await recv_until(ws_a, lambda m: m["type"] == "incident" and m["event"] == "resolve",
                                       timeout=15)
                assert got[-1]["incident"]["state"] == "ended"

        asyncio.run(scenario())
        want = [("ack", "on it", "desk 3"), ("resolve", "cleared", "desk 9")]
        for c in (a, b):  # each store has both actions, once each (its own and the one it was told of)
            c.wait_for(lambda c=c: actions_of(c, iid) == want, 15, "both actions stored")
            assert c.get("/incidents?open=true")[1]["incidents"] == []
            health = c.get("/healthz")[1]
            assert (health["actions_shared"], health["actions_applied"]) == (1, 1)  # one taken here, one told of
        b.wait_for(lambda: (tmp_path / "b-dlq.jsonl").exists() and (tmp_path / "b-dlq.jsonl").read_text(), 10,
                   "the malformed action dead-lettered")
        (letter,) = [json.loads(x) for x in (tmp_path / "b-dlq.jsonl").read_text().splitlines()]
        assert letter["error_class"] == "validation" and "incident action" in letter["reason"]
    finally:
        for c in (a, b):
            c.stop()
    for c in (a, b):
        assert "Traceback" not in "".join(c.stderr), "".join(c.stderr[-30:])
