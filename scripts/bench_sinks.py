"""Alert sinks through a real `hazardctl consume`: a webhook receiver down and an MQTT broker restarted
during a run of results; afterwards each has every event exactly once per idempotency key, in order
per incident, each webhook signature valid — and the WebSocket push went on meanwhile.

    python scripts/bench_sinks.py                      # the issue's run: 50 results/s, webhook down 60 s
    python scripts/bench_sinks.py --duration 20 --outage 8

What runs: consume (pipes in, `--store sqlite:///…`, `--sink webhook:http://127.0.0.1:P/…`,
`--sink mqtt://127.0.0.1:P/bench`, `--sink-secret-file`), a real aiohttp receiver (tests/sink_receivers.py)
closed for `--outage` seconds, Debian's Mosquitto stopped for `--broker-outage` seconds, a WebSocket
client collecting every incident event (the reference: what consume pushed is what the sinks must get).
Results: 10 cameras × 2 groups whose levels go hot (medium/high, changing) and quiet in turns, so
incidents open, update and end all along. The baseline runs beside it in the same run: a second
consume with the same store and the same results, without sinks; its push latency (result read →
event at a WebSocket client) in the same windows is what the sinks' must be compared with.
tests/test_sinks_consume.py runs the same with a short outage.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hazardctl.messages import RiskAssessmentResult, StageTimes  # noqa: E402
from tests.consume_proc import ConsumeProcess  # noqa: E402
from tests.sink_receivers import (Mosquitto, MqttSubscriber, Received, WebhookReceiver,  # noqa: E402
                                  check_exactly_once_in_order, wait_until)

SECRET = b"bench-sinks-secret-not-for-logs"
CAMERAS, GROUPS = 10, 2
HOT_S, CALM_S = 3.0, 3.0


def result(cam: int, group: int, k: int, t: float, start: float) -> RiskAssessmentResult:
    """Stream (cam, group): hot for HOT_S (medium/high, switching every 3 results), then calm for CALM_S."""
    phase = (t - start + (cam * GROUPS + group) * 0.29) % (HOT_S + CALM_S)
    level = ("high" if (k // 3) % 2 else "medium") if phase < HOT_S else ("low" if k % 2 else "none")
    return RiskAssessmentResult(
        task_id=uuid.uuid4().hex, detection_id=f"d-{cam}-{k}", camera_id=f"cam-{cam:02d}", group_id=f"g{group}",
        frame_id=k, frame_ts=t, status="ok", level=level, risk_types=["conflict"] if level in ("medium", "high") else [],
        description=f"{level} scene", confidence=0.8, key_name="bench-key", model="bench",
        times=StageTimes(capture=t, result=t))


class WsCollector(threading.Thread):
    """Every incident event consume pushes, with the time it arrived."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        from websockets.sync.client import connect

        self.ws = connect(url, open_timeout=10, max_size=None)
        self.events: list[tuple[float, dict]] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        try:
            with self.ws:
                for raw in self.ws:
                    now = time.time()
                    msg = json.loads(raw)
                    if msg.get("type") == "incident":
                        with self.lock:
                            self.events.append((now, msg))
        except Exception:  # noqa: BLE001 — the socket closes at the end
            pass

    def snapshot(self) -> list[tuple[float, dict]]:
        with self.lock:
            return list(self.events)


def outage_run(work: Path, *, duration: float, rate: float, outage_at: float, outage: float,
               broker_outage_at: float, broker_outage: float, log=print) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    hook = WebhookReceiver(SECRET)
    broker = Mosquitto(work / "mosquitto").start()
    sub = MqttSubscriber(broker.port, "bench/+/incident", f"bench-sub-{uuid.uuid4().hex[:6]}")
    secret_file = work / "sink.secret"
    secret_file.write_bytes(SECRET + b"\n")
    consume = ConsumeProcess(
        "--store", f"sqlite:///{work / 'incidents.db'}", "--quiet-period", "2", "--replay", "0",
        "--sink", f"webhook:{hook.url}", "--sink", f"mqtt://127.0.0.1:{broker.port}/bench",
        "--sink-secret-file", str(secret_file), "--sink-timeout", "2", "--sink-retry-base", "0.5",
        "--sink-retry-cap", "5", "--sink-max-attempts", "1000", "--dlq", str(work / "dlq.jsonl"), timeout=60)
    ws = WsCollector(consume.ws_url)
    ws.start()
    # the baseline, in the same run: a second consume with the same store kind and the same results, no sinks
    base = ConsumeProcess("--store", f"sqlite:///{work / 'baseline.db'}", "--quiet-period", "2", "--replay", "0",
                          "--dlq", str(work / "dlq-baseline.jsonl"), timeout=60)
    ws_base = WsCollector(base.ws_url)
    ws_base.start()
    report: dict = {"rate": rate, "duration_s": duration, "webhook_outage_s": outage, "broker_outage_s": broker_outage}
    try:
        start = time.time()
        sent, k = 0, 0
        hook_down = hook_up = broker_down = broker_up = None
        while True:
            now = time.time()
            el = now - start
            if el >= duration:
                break
            if hook_down is None and el >= outage_at:
                hook.down()
                hook_down = time.time()
                log(f"  {el:5.1f}s webhook receiver down")
            if hook_down is not None and hook_up is None and el >= outage_at + outage:
                hook.up()
                hook_up = time.time()
                log(f"  {el:5.1f}s webhook receiver back")
            if broker_down is None and el >= broker_outage_at:
                broker.stop()
                broker_down = time.time()
                log(f"  {el:5.1f}s mosquitto stopped")
            if broker_down is not None and broker_up is None and el >= broker_outage_at + broker_outage:
                broker.start()
                broker_up = time.time()
                log(f"  {el:5.1f}s mosquitto started again")
            due = int(el * rate) + 1
            batch = []
            while sent < due:
                cam, group = sent % CAMERAS, (sent // CAMERAS) % GROUPS
                batch.append(result(cam, group, k, time.time(), start))
                sent += 1
                k += 1 if cam == CAMERAS - 1 and group == GROUPS - 1 else 0
            if batch:
                consume.send(*batch)
                base.send(*batch)
            time.sleep(max(0.0, start + due / rate - time.time()))
        if hook_up is None:
            hook.up()
            hook_up = time.time()
        if broker_down is not None and broker_up is None:
            broker.start()
            broker_up = time.time()
        report["results_sent"] = sent
        time.sleep(4.0)  # the quiet period (2 s) and the tick end what is still open
        events = ws.snapshot()
        per_inc: dict[str, list[str]] = {}
        for _t, m in events:
            per_inc.setdefault(m["incident"]["incident_id"], []).append(m["event"])
        want = {f"{i}:{n}" for i, acts in per_inc.items() for n in range(1, len(acts) + 1)}
        report["ws_incident_events"] = len(events)
        report["incidents"] = len(per_inc)

        def hook_keys() -> set[str]:
            return {r.key for r in hook.snapshot()}

        def mqtt_keys() -> set[str]:
            return {json.loads(b)["idempotency_key"] for _t, b in sub.snapshot()}

        try:
            wait_until(lambda: hook_keys() >= want and mqtt_keys() >= want, 60,
                       "every pushed event at the webhook receiver and the MQTT subscriber", step=0.2)
        except AssertionError as e:
            raise AssertionError(f"{e}: webhook misses {sorted(want - hook_keys())[:8]} ({len(want - hook_keys())}), "
                                 f"mqtt misses {sorted(want - mqtt_keys())[:8]} ({len(want - mqtt_keys())}) of "
                                 f"{len(want)}; subscriber connects (t, session present): "
                                 f"{[(round(t - start, 1), sp) for t, sp in sub.connects]}; broker down "
                                 f"{round(broker_down - start, 1) if broker_down else None}..{round(broker_up - start, 1) if broker_up else None}"
                                 f"\n{broker.log()}\n" + "".join(consume.stderr[-25:])) from None
        time.sleep(0.5)  # a late duplicate would show below
        got = hook.snapshot()
        report["webhook"] = check_exactly_once_in_order(got, want)
        mq = [Received(json.loads(b)["idempotency_key"], b, True, 0.0) for _t, b in sub.snapshot()]
        report["mqtt"] = check_exactly_once_in_order(mq, want)
        # the broker kept the subscriber's session across its restart (else what it got meanwhile was not for anyone)
        report["mqtt"]["subscriber_session_kept"] = all(present for _t, present in sub.connects[1:])
        assert len(sub.connects) < 2 or report["mqtt"]["subscriber_session_kept"], sub.connects
        for r in got:  # the same lifecycle the WebSocket clients saw, event by event
            doc = r.doc
            assert per_inc[doc["incident_id"]][doc["seq"] - 1] == doc["event"], doc
        backlog = [r.at for r in got if r.doc["ts"] < hook_up]  # events made before the receiver came back
        report["webhook_caught_up_s"] = round(max(0.0, max(backlog) - hook_up), 2)
        # result read by consume → the event at the WebSocket client (tick events carry no consumed_at)
        during = [t - m["consumed_at"] for t, m in events if m.get("consumed_at") and hook_down <= m["ts"] <= hook_up]
        outside = [t - m["consumed_at"] for t, m in events
                   if m.get("consumed_at") and not hook_down <= m["ts"] <= hook_up]
        report["ws_events_during_outage"] = len(during)
        report["ws_push_p95_ms_during_outage"] = round(_p95(during) * 1000, 2) if during else None
        report["ws_push_p95_ms_outside"] = round(_p95(outside) * 1000, 2) if outside else None
        b_events = ws_base.snapshot()
        b_during = [t - m["consumed_at"] for t, m in b_events if m.get("consumed_at") and hook_down <= m["ts"] <= hook_up]
        b_outside = [t - m["consumed_at"] for t, m in b_events
                     if m.get("consumed_at") and not hook_down <= m["ts"] <= hook_up]
        report["baseline"] = {"ws_incident_events": len(b_events),
                              "ws_push_p95_ms_during_outage": round(_p95(b_during) * 1000, 2) if b_during else None,
                              "ws_push_p95_ms_outside": round(_p95(b_outside) * 1000, 2) if b_outside else None}
        report["sink_attempts"] = {o: consume.metric("hazardctl_sink_attempts_total", outcome=o)
                                   for o in ("delivered", "failed", "dead")}
        report["consume_log_has_secret"] = SECRET.decode() in "".join(consume.stderr)
        assert not report["consume_log_has_secret"]
        assert "Traceback" not in "".join(consume.stderr), "".join(consume.stderr[-30:])
    finally:
        ws.ws.close()
        ws_base.ws.close()
        consume.stop()
        consume.kill()
        base.stop()
        base.kill()
        sub.close()
        broker.stop()
        hook.close()
    return report


def _p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[94] if len(xs) > 1 else xs[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=90.0, help="seconds of results")
    ap.add_argument("--rate", type=float, default=50.0, help="results per second")
    ap.add_argument("--outage", type=float, default=60.0, help="seconds the webhook receiver is down")
    ap.add_argument("--outage-at", type=float, default=10.0)
    ap.add_argument("--broker-outage", type=float, default=10.0, help="seconds Mosquitto is stopped")
    ap.add_argument("--broker-outage-at", type=float, default=40.0)
    ap.add_argument("--json", type=Path, help="write the report here too")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sinks-") as tmp:
        print(f"bench-sinks: {a.rate:g} results/s for {a.duration:g} s; webhook down {a.outage:g} s from "
              f"{a.outage_at:g} s; mosquitto stopped {a.broker_outage:g} s from {a.broker_outage_at:g} s")
        rep = outage_run(Path(tmp), duration=a.duration, rate=a.rate, outage_at=a.outage_at, outage=a.outage,
                         broker_outage_at=a.broker_outage_at, broker_outage=a.broker_outage)
    print(json.dumps(rep, indent=2))
    print(f"webhook: {rep['webhook']['keys']} events of {rep['incidents']} incidents, each once per key "
          f"({rep['webhook']['duplicates']} duplicate deliveries), in order, signatures valid; backlog delivered "
          f"{rep['webhook_caught_up_s']} s after the receiver came back")
    print(f"mqtt: {rep['mqtt']['keys']} events, {rep['mqtt']['duplicates']} duplicates, in order")
    print(f"result read → WebSocket client P95 {rep['ws_push_p95_ms_during_outage']} ms during the outage vs "
          f"{rep['ws_push_p95_ms_outside']} ms outside it ({rep['ws_events_during_outage']} events during)")
    b = rep["baseline"]
    print(f"baseline, a second consume with the same store and results but no sinks, side by side: P95 "
          f"{b['ws_push_p95_ms_during_outage']} ms during the outage, {b['ws_push_p95_ms_outside']} ms outside; "
          f"with sinks / baseline during the outage = "
          f"{rep['ws_push_p95_ms_during_outage'] / b['ws_push_p95_ms_during_outage']:.2f}x")
    if a.json:
        a.json.write_text(json.dumps(rep, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
