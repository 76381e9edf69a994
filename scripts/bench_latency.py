#!/usr/bin/env python
"""Latency budget: every hop of expand → schedule → consume, next to the raw client's floor (issue 13).

For each transport (Kafka over the real broker, then Unix pipes) one pipeline of real `hazardctl`
processes runs: expand (--refresh 0: every group is a task), schedule (no keys file: the simulated
LLM it starts itself, 10 keys x 5 qps, latency uniform 1-2 s) and consume (--min-level low) with a
real websockets client on its socket. This process offers synthetic detections (one group each,
capture = detect = published = the moment it sends) open-loop at each --rates value, reads the
results (Kafka: a raw consumer on the results topic; pipes: schedule's stdout, forwarded to consume),
and splits each result's `times` record into hops. consume's side comes from its /results (the
`alert` stamp) and from the WebSocket client's receive time.

The floor, measured in the same run, at the same rate and at the same time (a child process running
beside the pipeline, so both see the same load on the machine): a raw confluent-kafka producer with
exactly the stages' producer settings (hazardctl.transports.kafka.PRODUCER_DEFAULTS + the config's
overrides) → a raw consumer polling one message at a time, same payload size and partitions;
for pipes, a line written to another process that reads it with readline().

Figures (ms): P50 / P95 / P99 per hop; each Kafka hop (published→expand, expand→dequeue,
result→results topic, result→alert) next to the floor (goal: within 3 ms at P50, 10 ms at P95);
end to end minus the LLM call = capture → result read from the results topic minus llm_start→llm_end
(goal: P95 <= 30 ms at the low rate); near the key limit the same minus dequeue→llm_start (the wait
for a key, which is pacing, i.e. queueing, not overhead), with the wait shown beside it.

    python scripts/bench_latency.py                       # full: 20/s and 45/s, 60 s each
    python scripts/bench_latency.py --duration 15         # shorter (noisier)
    python scripts/bench_latency.py --producer linger.ms=0   # the same with other producer settings
Exit status 1 with --check when a goal over Kafka is missed (the goals are Kafka's; pipes are shown beside).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from hazardctl.config import KafkaSettings  # noqa: E402
from hazardctl.synthetic import detection  # noqa: E402
from hazardctl.transports.kafka import CONSUMER_DEFAULTS, PRODUCER_DEFAULTS  # noqa: E402

HAZARDCTL = [sys.executable, "-m", "hazardctl.cli"]
SERVING = re.compile(r"serving websocket=ws://[^ ]+:(\d+)/ws")
CAMERAS = 20
PARTITIONS = 4
P50_GOAL_MS, P95_GOAL_MS, E2E_P95_GOAL_MS = 3.0, 10.0, 30.0


# ---- small helpers --------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def ms3(values: list[float]) -> tuple[float, float, float]:
    return tuple(pct(values, q) * 1000 for q in (50, 95, 99))  # type: ignore[return-value]


def payload(camera: str, frame: int, now: float) -> bytes:
    det = detection(camera, frame, now, groups=1)
    det.times.detect = det.times.published = now
    return det.model_dump_json().encode()


def paced(rate: float, seconds: float):
    """Yield (i, send time) at exactly `rate` per second for `seconds`, open loop."""
    t0 = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        ahead = t0 + i / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        yield i


class Proc:
    """One stage as a real process in its own session; stderr to a file (a full pipe would block it)."""

    def __init__(self, name: str, args: list[str], logdir: Path, env: dict, cwd: Path, **kw):
        self.name, self.log = name, logdir / f"{name}.log"
        with open(self.log, "wb") as err:
            self.p = subprocess.Popen([*HAZARDCTL, name, *args], stderr=err, env=env, cwd=cwd,
                                      start_new_session=True, **kw)

    def text(self) -> str:
        return self.log.read_text("utf-8", "replace")

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.p.pid, signal.SIGKILL)  # and the simulator schedule started
        except (ProcessLookupError, PermissionError):
            pass


def wait_for(pred, timeout: float, what: str, procs: list[Proc]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        for p in procs:
            if p.p.poll() is not None:
                raise SystemExit(f"{p.name} exited ({p.p.returncode}) while waiting for {what}:\n{p.text()[-2000:]}")
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}\n" + "\n".join(f"--- {p.name}\n{p.text()[-1500:]}" for p in procs))


class WsClient:
    """A real websockets client on consume: receive time and `times` of each pushed incident event."""

    def __init__(self, port: int):
        self.samples: list[tuple[float, dict]] = []
        self._url = f"ws://127.0.0.1:{port}/ws"
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        if not self._connected.wait(30):
            raise SystemExit(f"could not connect a WebSocket client to {self._url}")

    def _run(self) -> None:
        from websockets.sync.client import connect

        with connect(self._url, max_size=None, compression=None) as ws:
            self._connected.set()
            while not self._stop.is_set():
                try:
                    raw = ws.recv(timeout=0.5)
                except TimeoutError:
                    continue
                except Exception:
                    return
                now = time.time()
                msg = json.loads(raw)
                if msg.get("type") == "incident" and msg.get("consumed_at") is not None:  # not a tick's refresh
                    times = msg["incident"].get("times") or {}
                    if times.get("alert"):
                        self.samples.append((now, times))

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)


def consume_results(port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/results?limit=10000", timeout=10) as r:
        return json.loads(r.read())["results"]


# ---- the floors ---------------------------------------------------------------------------------

def kafka_floor(settings: KafkaSettings, producer_conf: dict, rate: float, seconds: float, size: int,
                warmup: float) -> list[float]:
    """Raw produce → consume hop (s) at `rate`, with the stages' producer settings; the first `warmup`
    seconds (connections, producer id, fetch position) are not counted, as for the pipeline."""
    topic = f"bench-floor-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(settings.common())
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    hops: list[float] = []
    counted_from = 0.0
    c = Consumer({**settings.common(), **CONSUMER_DEFAULTS, "group.id": f"floor-{topic}",
                  "auto.offset.reset": "latest"})
    try:
        c.subscribe([topic])
        while not c.assignment():
            c.poll(0.1)
        p = Producer({**settings.common(), **producer_conf})
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                m = c.poll(0.2)
                if m is not None and m.error() is None:
                    sent = float(m.value()[:20])
                    if sent >= counted_from:
                        hops.append(time.time() - sent)

        t = threading.Thread(target=read)
        t.start()
        pad = b" " * max(0, size - 21)
        counted_from = time.time() + warmup
        for i in paced(rate, warmup + seconds):
            p.produce(topic, b"%20.6f" % time.time() + b" " + pad, f"cam-{i % CAMERAS:03d}".encode())
            p.poll(0)
        p.flush(10)
        time.sleep(1.0)
        stop.set()
        t.join()
    finally:
        c.close()
        admin.delete_topics([topic])
    return hops


PIPE_READER = ("import sys,time\nout=[]\nfor line in sys.stdin.buffer:\n    out.append(time.time()-float(line[:20]))\n"
               "print(' '.join(repr(x) for x in out))\n")


def pipe_floor(rate: float, seconds: float, size: int, warmup: float) -> list[float]:
    """Raw pipe hop (s): a line written and flushed → readline() in another process."""
    child = subprocess.Popen([sys.executable, "-c", PIPE_READER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    pad = b" " * max(0, size - 22)
    for _ in paced(rate, warmup + seconds):
        child.stdin.write(b"%20.6f" % time.time() + b" " + pad + b"\n")
        child.stdin.flush()
    out, _ = child.communicate(timeout=30)
    return [float(x) for x in out.split()][int(rate * warmup):]


# ---- the pipeline -------------------------------------------------------------------------------

class Phase:
    def __init__(self, rate: float, start: float, end: float):
        self.rate, self.start, self.end = rate, start, end
        self.floor = None  # the floor's child process, then its hops (s)

    def __contains__(self, capture: float) -> bool:
        return self.start <= capture < self.end


def hops_of(phase: Phase, results: list[tuple[float, dict]], consume_view: list[dict],
            ws: list[tuple[float, dict]]) -> tuple[dict[str, list[float]], dict]:
    """Hop name → seconds, over the results of one phase (captured inside its measured window)."""
    h: dict[str, list[float]] = {k: [] for k in (
        "published→expand", "expand→dequeue", "dequeue→llm_start (key wait)", "llm_start→llm_end (LLM)",
        "llm_end→result", "result→results (reader)", "result→alert (consume)", "alert→WebSocket client",
        "result→WebSocket client", "e2e minus LLM", "e2e minus LLM and key wait")}
    statuses: dict[str, int] = {}
    for read_at, r in results:
        t = r["times"]
        if t.get("capture") is None or t["capture"] not in phase:
            continue
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        if r["status"] != "ok":
            continue
        h["published→expand"].append(t["expand"] - t["published"])
        h["expand→dequeue"].append(t["dequeue"] - t["expand"])
        h["dequeue→llm_start (key wait)"].append(t["llm_start"] - t["dequeue"])
        h["llm_start→llm_end (LLM)"].append(t["llm_end"] - t["llm_start"])
        h["llm_end→result"].append(t["result"] - t["llm_end"])
        h["result→results (reader)"].append(read_at - t["result"])
        e2e = read_at - t["capture"] - (t["llm_end"] - t["llm_start"])
        h["e2e minus LLM"].append(e2e)
        h["e2e minus LLM and key wait"].append(e2e - (t["llm_start"] - t["dequeue"]))
    for r in consume_view:
        t = r["times"]
        if r["status"] == "ok" and t.get("capture") in phase and t.get("alert"):
            h["result→alert (consume)"].append(t["alert"] - t["result"])
    for recv, t in ws:
        if t.get("capture") in phase:
            h["alert→WebSocket client"].append(recv - t["alert"])
            h["result→WebSocket client"].append(recv - t["result"])
    return h, statuses


def run_pipeline(transport: str, rates: list[float], args, settings: KafkaSettings, kafka_config: Path | None,
                 workdir: Path) -> list[tuple[Phase, dict, dict]]:
    env = {k: v for k, v in os.environ.items() if k != "HAZARDCTL_KEYS" and not k.startswith("DASHSCOPE_KEY_")}
    env.update(PYTHONPATH=str(ROOT), HAZARDCTL_LOG_LEVEL="INFO", HAZARDCTL_KAFKA_BOOTSTRAP=args.bootstrap)
    nokeys = workdir / f"nokeys-{transport}"  # schedule's cwd: no config/api_keys.yaml → the simulated LLM
    nokeys.mkdir()
    kc = ["--kafka-config", str(kafka_config)] if kafka_config else []
    run = uuid.uuid4().hex[:8]
    procs: list[Proc] = []
    results: list[tuple[float, dict]] = []
    topics: list[str] = []
    stop_reader = threading.Event()
    reader_t = None
    admin = AdminClient(settings.common())
    try:
        consume_args = ["--ws", "127.0.0.1:0", "--min-level", "low", "--cache-size", "20000", "--quiet-period", "5"]
        if transport == "kafka":
            det, tasks, res, dead = topics = [f"bench-lat-{n}-{run}" for n in ("det", "tasks", "results", "dead")]
            for name, fut in admin.create_topics([NewTopic(t, 1 if t == dead else PARTITIONS, 1)
                                                  for t in topics]).items():
                fut.result(30)
            dlq = ["--dlq", f"kafka://{dead}"]
            consume = Proc("consume", ["--in", f"kafka://{res}", "--replay", "0", "--group", f"lat-c-{run}",
                                       *consume_args, *dlq, *kc], workdir, env, ROOT)
            schedule = Proc("schedule", ["--in", f"kafka://{tasks}", "--out", f"kafka://{res}",
                                         "--group", f"lat-s-{run}", *dlq, *kc], workdir, env, nokeys)
            expand = Proc("expand", ["--in", f"kafka://{det}", "--out", f"kafka://{tasks}", "--refresh", "0",
                                     "--group", f"lat-e-{run}", *dlq, *kc], workdir, env, ROOT)
            procs = [consume, schedule, expand]
            producer = Producer({**settings.common(), **producer_conf_of(settings)})

            def send(camera: str, value: bytes) -> None:
                producer.produce(det, value, camera.encode())
                producer.poll(0)

            flush = producer.flush

            c = Consumer({**settings.common(), **CONSUMER_DEFAULTS, "group.id": f"lat-reader-{run}"})
            c.subscribe([res])

            def reader() -> None:
                while not stop_reader.is_set():
                    m = c.poll(0.2)
                    if m is not None and m.error() is None:
                        results.append((time.time(), json.loads(m.value())))
                c.close()
        else:
            consume = Proc("consume", ["--in", "-", *consume_args], workdir, env, ROOT, stdin=subprocess.PIPE)
            schedule = Proc("schedule", ["--in", "-", "--out", "-", "--dlq", "stderr"], workdir, env, nokeys,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            expand = Proc("expand", ["--in", "-", "--out", "-", "--refresh", "0"], workdir, env, ROOT,
                          stdin=subprocess.PIPE, stdout=schedule.p.stdin)
            schedule.p.stdin.close()  # expand holds it now
            procs = [consume, schedule, expand]
            lock = threading.Lock()

            def flush(_timeout: float) -> int:
                return 0

            def send(camera: str, value: bytes) -> None:
                with lock:
                    expand.p.stdin.write(value + b"\n")
                    expand.p.stdin.flush()

            def reader() -> None:  # schedule's stdout: stamp, then forward to consume
                for line in schedule.p.stdout:
                    results.append((time.time(), json.loads(line)))
                    consume.p.stdin.write(line)
                    consume.p.stdin.flush()

        port = int(wait_for(lambda: SERVING.search(consume.text()), 60, "consume to serve", procs).group(1))
        wait_for(lambda: "SIMULATED LLM" in schedule.text(), 60, "schedule's simulated LLM", procs)
        reader_t = threading.Thread(target=reader, daemon=True)
        reader_t.start()
        ws = WsClient(port)
        # one probe through the whole chain: every consumer has joined its group
        send("probe", payload("probe", 0, time.time()))
        wait_for(lambda: results, 90, "a probe result through the whole pipeline", procs)
        phases = []
        frame = 1
        for rate in rates:
            floor = start_floor(transport, rate, args)  # beside the pipeline: the same load on the machine
            for warm in (True, False):
                start = time.time()
                for i in paced(rate, args.warmup if warm else args.duration):
                    cam = f"cam-{(frame + i) % CAMERAS:03d}"
                    send(cam, payload(cam, frame + i, time.time()))
                frame += int(rate * (args.warmup if warm else args.duration))
                if not warm:
                    phases.append(Phase(rate, start, time.time()))
                    phases[-1].floor = floor
            flush(10)
            time.sleep(4.0)  # the last LLM calls (1-2 s) finish before the next rate starts
        time.sleep(2.0)
        view = consume_results(port)
        ws.close()
        out = []
        for ph in phases:
            out_, _ = ph.floor.communicate(timeout=120)
            ph.floor = json.loads(out_)
            hops, statuses = hops_of(ph, results, view, ws.samples)
            out.append((ph, hops, statuses))
        return out
    finally:
        stop_reader.set()
        for p in procs:
            if p.name == "expand" and transport == "pipes" and p.p.stdin:
                try:
                    p.p.stdin.close()
                except OSError:
                    pass
            p.stop()
        if reader_t is not None:
            reader_t.join(5)
        if topics:
            admin.delete_topics(topics)


def start_floor(transport: str, rate: float, args) -> subprocess.Popen:
    """The floor in a child process, running while the pipeline runs at the same rate: the pipeline
    and its floor see the same load on the machine (this one is shared)."""
    cmd = [sys.executable, __file__, "--floor", transport, "--rates", str(rate), "--duration", str(args.duration),
           "--warmup", str(args.warmup), "--bootstrap", args.bootstrap]
    for kv in args.producer:
        cmd += ["--producer", kv]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE)


def producer_conf_of(settings: KafkaSettings) -> dict:
    """Exactly the producer settings a stage uses (defaults + the config's `producer:` overrides)."""
    return {**PRODUCER_DEFAULTS, **settings.producer}


# ---- report -------------------------------------------------------------------------------------

KAFKA_HOPS = ("published→expand", "expand→dequeue", "result→results (reader)", "result→alert (consume)")


def report(transport: str, ph: Phase, hops: dict, statuses: dict, floor: list[float]) -> list[str]:
    missed = []
    f50, f95, f99 = ms3(floor)
    print(f"\n{transport}, {ph.rate:g} tasks/s, {ph.end - ph.start:.0f} s: results {statuses}; "
          f"floor n={len(floor)}")
    print(f"  {'hop (ms)':<34} {'n':>5} {'P50':>7} {'P95':>7} {'P99':>7}   vs floor P50/P95 {f50:.2f}/{f95:.2f}")
    for name, vals in hops.items():
        p50, p95, p99 = ms3(vals)
        note = ""
        if name in KAFKA_HOPS:
            d50, d95 = p50 - f50, p95 - f95
            ok = d50 <= P50_GOAL_MS and d95 <= P95_GOAL_MS
            note = f"   {d50:+.2f} / {d95:+.2f}  {'OK' if ok else 'MISSED'} (≤ +{P50_GOAL_MS:g} / +{P95_GOAL_MS:g})"
            if not ok and transport == "Kafka":
                missed.append(f"{transport} {ph.rate:g}/s {name}")
        if name == "e2e minus LLM" and ph.rate <= 20:
            ok = p95 <= E2E_P95_GOAL_MS
            note = f"   P95 ≤ {E2E_P95_GOAL_MS:g} {'OK' if ok else 'MISSED'}"
            if not ok and transport == "Kafka":
                missed.append(f"{transport} {ph.rate:g}/s e2e minus LLM")
        if name == "e2e minus LLM and key wait" and ph.rate > 20:
            ok = p95 <= E2E_P95_GOAL_MS
            note = f"   P95 ≤ {E2E_P95_GOAL_MS:g} {'OK' if ok else 'MISSED'} (key wait beside: dequeue→llm_start)"
            if not ok and transport == "Kafka":
                missed.append(f"{transport} {ph.rate:g}/s e2e minus LLM and key wait")
        print(f"  {name:<34} {len(vals):>5} {p50:>7.2f} {p95:>7.2f} {p99:>7.2f}{note}")
    return missed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="20,45", help="tasks per second, comma-separated (default 20,45)")
    ap.add_argument("--duration", type=float, default=60.0, help="measured seconds per rate (default 60)")
    ap.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before each rate (default 5)")
    ap.add_argument("--no-kafka", action="store_true")
    ap.add_argument("--no-pipes", action="store_true")
    ap.add_argument("--producer", action="append", default=[], metavar="NAME=VALUE",
                    help="librdkafka producer setting for the stages AND the floor, e.g. linger.ms=0")
    ap.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    ap.add_argument("--floor", choices=("kafka", "pipes"), help=argparse.SUPPRESS)  # the child of start_floor
    ap.add_argument("--bootstrap", default=os.environ.get("HAZARDCTL_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    overrides = {}
    for kv in args.producer:
        k, _, v = kv.partition("=")
        overrides[k] = int(v) if v.lstrip("-").isdigit() else v
    settings = KafkaSettings(bootstrap_servers=args.bootstrap, producer=overrides)
    size = len(payload("cam-000", 1, time.time()))
    if args.floor:  # child: one floor at one rate, the hops (s) as JSON on stdout
        r = rates[0]
        hops = (kafka_floor(settings, producer_conf_of(settings), r, args.duration, size, args.warmup)
                if args.floor == "kafka" else pipe_floor(r, args.duration, size, args.warmup))
        print(json.dumps(hops))
        return
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f}; detection {size} B, 1 group = 1 task; "
          f"producer {json.dumps({k: v for k, v in producer_conf_of(settings).items() if 'linger' in k or 'batch' in k or k in ('acks', 'compression.type')})}")
    missed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        workdir = Path(tmp)
        kafka_config = None
        if overrides:
            kafka_config = workdir / "kafka.yaml"
            kafka_config.write_text(json.dumps({"bootstrap_servers": args.bootstrap, "producer": overrides}))
        for transport in ("kafka", "pipes"):
            if getattr(args, f"no_{transport}"):
                continue
            for ph, hops, statuses in run_pipeline(transport, rates, args, settings, kafka_config, workdir):
                missed += report("Kafka" if transport == "kafka" else "pipes", ph, hops, statuses, ph.floor)
    print(f"\nload at the end: {os.getloadavg()[0]:.2f} (figures from a busy machine are noisy)")
    if missed:
        print("MISSED: " + "; ".join(missed))
        if args.check:
            sys.exit(1)


if __name__ == "__main__":
    main()
