"""bench-flink: expand's throughput on Flink (session cluster; thread mode p1, p2, process mode p1) next to the local
engine, on the same input topic in the same run; time to the first task; RSS of the JVMs and workers;
then the per-record latency at a low rate, local vs Flink vs Flink in process mode, same run.

Throughput: each engine drains the same backlog of detection results (gate open: 3 tasks per
detection, so tasks/s measures the engine, not the gate) from its own consumer group into its own
output topic. tasks/s = tasks / (last output - the job RUNNING; the local engine: its start) over a backlog
that drains for >= 30 s, with the output per second beside it (bursty output cannot inflate it); first task
= seconds from the submission. Flink runs (--runs MODE-pN): python_mode thread or process at parallelism
N, on one-slot TaskManagers (thread mode: one GIL per JVM).

Latency: the local engine, the Flink job with config/flink.yaml as it is and the same job in process mode
(or, with --latency-flink-defaults, with Flink's defaults: buffer timeout 100 ms, bundle 1000 ms / 100 000,
sink linger.ms 5) all run at once, each reading the same input topic with its own group, while detections (1 group each, gate
open) are produced at --latency-rate per second. Per task: published → expand (`times.expand` −
`times.published`, the latter stamped right before the produce call) and published → on the output
topic (the output topic's LogAppendTime − `times.published`). P50/P95/P99 in ms.

    make bench-flink                       (BENCH_ARGS="--detections 20000 --runs thread-p1,process-p1")
    BENCH_ARGS="--no-throughput --latency-seconds 30" make bench-flink      (latency only)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from stages.expand import flink_cli  # noqa: E402
from hazardctl.synthetic import detection  # noqa: E402
from tests.flink_util import SessionCluster, detections, python_workers, rss_mb  # noqa: E402
from tests.kafka_util import produce  # noqa: E402

#: Flink's own defaults for what config/flink.yaml's `latency:` section sets (the "before")
FLINK_DEFAULTS = {"buffer_timeout_ms": 100, "bundle_time_ms": 1000, "bundle_size": 100000, "sink_linger_ms": 5}

HAZARDCTL = [sys.executable, "-m", "hazardctl.cli"]


def drain(bootstrap: str, topic: str, want: int, timeout: float) -> tuple[int, float, float, Counter]:
    """(count, first, last broker timestamp in s, count per whole second) once `want` messages are on `topic`."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    n, first, last, per_s = 0, None, 0.0, Counter()
    deadline = time.monotonic() + timeout
    try:
        while n < want and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error():
                    continue
                ts = m.timestamp()[1] / 1000
                first = ts if first is None else min(first, ts)
                last = max(last, ts)
                per_s[int(ts)] += 1
                n += 1
    finally:
        c.close()
    return n, first or 0.0, last, per_s


def end_offsets(bootstrap: str, topic: str) -> int:
    """Messages on `topic` now (the sum of its partitions' high watermarks)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    finally:
        c.close()


def rates(n: int, start: float, first: float, last: float, per_s: Counter) -> dict:
    """The honest figure: tasks / (last output - start), start = the engine's start (Flink: the job RUNNING,
    which includes the tasks' initialisation); beside it the per-second output (median and min over the
    full seconds between the first and last output) and the bursty tasks / (last - first output)."""
    full = [per_s.get(t, 0) for t in range(int(first) + 1, int(last))]
    return {"tasks_per_s": n / max(last - start, 1e-3), "first_to_last_per_s": n / max(last - first, 1e-3),
            "drain_s": last - start, "per_s_median": sorted(full)[len(full) // 2] if full else 0,
            "per_s_min": min(full) if full else 0}


def cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) `pid` has used so far."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores; /proc/stat less idle and iowait)."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def broker_pids() -> list[int]:
    """The local Kafka broker(s) (a JVM running kafka.Kafka): they share the cores with the engines."""
    out = []
    for p in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kafka.Kafka" in cmd:
            out.append(int(p.name))
    return out


class RssSampler(threading.Thread):
    """Peak RSS per role, and the CPU seconds each role (plus the broker, this bench and the machine as a
    whole) used while it ran: on 2 shared cores, where the CPU went."""

    def __init__(self, pids_fn):
        super().__init__(daemon=True)
        self.pids_fn, self.peak, self.stop = pids_fn, {}, threading.Event()
        self.cpu0: dict[tuple[str, int], float] = {}
        self.cpu1: dict[tuple[str, int], float] = {}
        self.busy0 = machine_busy_s()
        self.t0 = time.monotonic()

    def roles(self) -> dict[str, list[int]]:
        return {**self.pids_fn(), "broker": broker_pids(), "bench": [os.getpid()]}

    def run(self):
        while not self.stop.is_set():
            for role, pids in self.roles().items():
                if role not in ("broker", "bench"):
                    self.peak[role] = max(self.peak.get(role, 0.0), sum(rss_mb(p) for p in pids))
                    self.peak[role + "_n"] = max(self.peak.get(role + "_n", 0), len(pids))
                for p in pids:
                    c = cpu_s(p)
                    if c is not None:
                        self.cpu0.setdefault((role, p), c)
                        self.cpu1[(role, p)] = c
            self.stop.wait(0.5)

    def cpu(self) -> dict[str, float]:
        """CPU seconds per role over the sampled time, the machine's busy seconds, and the seconds sampled."""
        out: dict[str, float] = {}
        for (role, p), c in self.cpu1.items():
            out[role] = out.get(role, 0.0) + c - self.cpu0[(role, p)]
        out = {k: round(v, 1) for k, v in out.items() if k != "python_workers" or v}
        out["machine"] = round(machine_busy_s() - self.busy0, 1)
        out["wall"] = round(time.monotonic() - self.t0, 1)
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detections", type=int, default=100000,
                    help="backlog (3 tasks each): 300 000 tasks drain for ≥ 30 s at up to 10k tasks/s")
    ap.add_argument("--process-tasks", type=int, default=0,
                    help="measure process-mode runs over the first this many tasks of the backlog (the job drains "
                         "on) instead of all of it, for a shorter run; 0 (default): all")
    ap.add_argument("--cameras", type=int, default=20)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--bootstrap", default=os.environ.get("HAZARDCTL_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--no-throughput", action="store_true", help="only the latency part")
    ap.add_argument("--no-latency", action="store_true", help="only the throughput part")
    ap.add_argument("--flink-defaults", action="store_true",
                    help="throughput part: the Flink job with Flink's own latency defaults instead of config/flink.yaml's")
    ap.add_argument("--flink-latency", default="", metavar="YAML",
                    help='throughput part: override config/flink.yaml latency settings, e.g. "bundle_time_ms: 20"')
    ap.add_argument("--runs", default="thread-p1,thread-p2,thread-p2-1tm,thread-p1to2,process-p1",
                    help="throughput part: Flink runs MODE-pN (python_mode thread|process, parallelism N; one "
                         "TaskManager of one slot per unit of parallelism), MODE-pN-1tm (one TaskManager of N slots) "
                         "or MODE-pNtoM (rescaling: a savepoint "
                         "after a third of the backlog at N, resumed at M; tasks/s of the resumed job); default "
                         "thread-p1,thread-p2,thread-p2-1tm,thread-p1to2,process-p1 (process-p1: the previous "
                         "default)")
    ap.add_argument("--latency-flink-defaults", action="store_true",
                    help="latency part: the third engine is the Flink job with Flink's own latency defaults "
                         "(instead of process mode)")
    ap.add_argument("--latency-rate", type=float, default=20, help="detections/s in the latency part")
    ap.add_argument("--latency-seconds", type=float, default=30, help="measured seconds in the latency part")
    a = ap.parse_args()
    env = {**os.environ, "HAZARDCTL_KAFKA_BOOTSTRAP": a.bootstrap, "PYTHONPATH": str(ROOT)}
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    run = uuid.uuid4().hex[:8]
    src = f"bench-flink-in-{run}"
    runs = [r.strip() for r in a.runs.split(",") if r.strip()]
    outs = {name: f"bench-flink-{name}-{run}" for name in ("local", *runs)}
    dlq = f"bench-flink-dlq-{run}"
    topics = [src, dlq, *outs.values()]
    # outputs stamped by the broker on arrival (the Flink sink would copy the input's timestamps)
    append = {"message.timestamp.type": "LogAppendTime"}
    new = [NewTopic(t, a.partitions, 1, config=append if t in outs.values() else {}) for t in topics]
    for f in admin.create_topics(new).values():
        f.result(30)
    items = detections(a.cameras, a.detections // a.cameras)
    want = len(items) * 3
    if not a.no_throughput:
        produce(a.bootstrap, src, items)
        print(f"input: {len(items)} detections ({a.cameras} cameras) on {src}, {want} tasks expected per engine")
    results: dict[str, dict] = {}
    latency: dict[str, dict] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-flink-"))
    cluster = SessionCluster(tmp / "cluster", slots=1)  # one GIL per JVM (thread mode): one slot per TaskManager
    try:
        if a.no_throughput:
            cluster.sh("up")
            latency = latency_part(a, env, cluster, tmp, admin, run)
            return report({}, latency, a, 0)
        # local engine
        t0 = time.time()
        p = subprocess.Popen([*HAZARDCTL, "expand", "--in", f"kafka://{src}", "--out", f"kafka://{outs['local']}",
                              "--dlq", f"kafka://{dlq}", "--group", f"bench-local-{run}", "--refresh", "0"],
                             env=env, cwd=ROOT)
        sampler = RssSampler(lambda: {"local": [p.pid]})
        sampler.start()
        n, first, last, per_s = drain(a.bootstrap, outs["local"], want, a.timeout)
        sampler.stop.set()
        p.terminate()
        p.wait(30)
        results["local"] = {"tasks": n, **rates(n, t0, first, last, per_s), "first_task_s": first - t0,
                            "rss_mb": {"local": sampler.peak.get("local", 0)}, "cpu_s": sampler.cpu()}
        # Flink on a standalone session cluster, parallelism 1 and 2
        cluster.sh("up")
        for name in runs:
            # MODE-pN, or MODE-pNtoM: start at N, stop with a savepoint after a third of the backlog, resume
            # at M (rescaling); its tasks/s counts the resumed job only (RUNNING -> last output)
            mode, _, pars = name.rpartition("-p")
            one_tm = pars.endswith("-1tm")  # MODE-pN-1tm: ONE TaskManager of N slots (thread mode: one GIL)
            par, _, par2 = pars.removesuffix("-1tm").partition("to")
            par, par2 = int(par), int(par2 or 0)
            goal = min(want, a.process_tasks) if mode == "process" and a.process_tasks else want

            def config(p: int) -> Path:
                cfg = tmp / f"{name}-p{p}.yaml"
                lat = ("latency: {" + ", ".join(f"{k}: {v}" for k, v in FLINK_DEFAULTS.items()) + "}\n"
                       if a.flink_defaults else f"latency: {{{a.flink_latency}}}\n" if a.flink_latency else "")
                cfg.write_text(f"parallelism: {{source: {p}, process: {p}, sink: {p}}}\npython_mode: {mode}\n"
                               f"checkpoints: {{interval_s: 5, dir: {tmp / 'checkpoints'}}}\n" + lat)
                return cfg

            def submit(p: int, *extra: str) -> str:
                if one_tm:
                    cluster.sh("stop-tm")
                    cluster.sh("start-tm", str(p))
                while len(cluster.pids()["taskmanager"]) < p and not one_tm:
                    cluster.sh("start-tm")
                sub = subprocess.run([*HAZARDCTL, "expand", "--engine", "flink", "--jobmanager", cluster.address,
                                      "--flink-config", str(config(p)), "--in", f"kafka://{src}",
                                      "--out", f"kafka://{outs[name]}", "--dlq", f"kafka://{dlq}",
                                      "--group", f"bench-{name}-{run}", "--refresh", "0", *extra],
                                     env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
                if sub.returncode != 0:
                    raise SystemExit(f"submission failed: {sub.stderr[-2000:]}")
                return sub.stdout.strip().splitlines()[-1]

            def roles():
                pids = cluster.pids()
                return {**pids, "python_workers": python_workers(pids["taskmanager"])}

            sampler = RssSampler(roles)
            sampler.start()
            t0 = time.time()
            job = submit(par)
            submitted = time.time() - t0
            before = 0
            if par2:
                drain(a.bootstrap, outs[name], goal // 3, a.timeout)
                savepoint = flink_cli.savepoint(cluster.address, job, stop=True)
                before = end_offsets(a.bootstrap, outs[name])
                job = submit(par2, "--from-savepoint", savepoint)
            n, first, last, per_s = drain(a.bootstrap, outs[name], goal, a.timeout)
            sampler.stop.set()
            running = flink_cli.rest(cluster.address, f"/jobs/{job}")["timestamps"]["RUNNING"] / 1000
            flink_cli.cancel(cluster.address, job)
            if par2:  # the resumed job's part only
                first = max(first, running)
                per_s = Counter({t: c for t, c in per_s.items() if t >= int(running)})
            results[name] = {"tasks": n, "goal": goal, **rates(n - before, running, first, last, per_s),
                             "first_task_s": first - t0, "submit_s": submitted,
                             "rss_mb": {k: round(v) for k, v in sampler.peak.items()}, "cpu_s": sampler.cpu()}
            if par2:
                results[name]["tasks_before_savepoint"] = before
            if one_tm:  # the next runs start one-slot TaskManagers again
                cluster.sh("stop-tm")
            time.sleep(3)
        if not a.no_latency:
            latency = latency_part(a, env, cluster, tmp, admin, run)
    finally:
        cluster.down()
        admin.delete_topics(topics)
    return report(results, latency, a, want, len(items))


def report(results: dict, latency: dict, a, want: int, n_items: int = 0) -> int:
    print(f"\nload average {os.getloadavg()[0]:.1f} (1 min); tasks/s = tasks / (last output - job RUNNING "
          "(local: process start)); per s = output per full second, median / min; first→last = the bursty figure")
    print(f"\n{'engine':12} {'tasks':>7} {'tasks/s':>8} {'drain s':>8} {'per s med/min':>14} {'first→last':>10} "
          f"{'first task s':>12} {'(submit s)':>10}  RSS MB (peak)")
    for name, r in results.items():
        rss = ", ".join(f"{k} {v:.0f}" for k, v in r["rss_mb"].items() if not k.endswith("_n"))
        nworkers = r["rss_mb"].get("python_workers_n")
        extra = f" ({nworkers} Python workers)" if nworkers else ""
        sub = f"{r['submit_s']:.1f}" if "submit_s" in r else "-"
        print(f"{name:12} {r['tasks']:7d} {r['tasks_per_s']:8.0f} {r['drain_s']:8.1f} "
              f"{r['per_s_median']:7d}/{r['per_s_min']:<6d} {r['first_to_last_per_s']:10.0f} "
              f"{r['first_task_s']:12.1f} {sub:>10}  {rss}{extra}")
        c = dict(r.get("cpu_s", {}))
        if c:
            wall, machine = c.pop("wall"), c.pop("machine")
            print(f"{'':12} CPU s over its {wall:.0f} s (start/submission → last output): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in c.items())
                  + f"; machine busy {machine:.0f} of {(os.cpu_count() or 1) * wall:.0f}")
    if latency:
        print(f"\nlatency at {a.latency_rate:g} detections/s, {a.latency_seconds:g} s, ms"
              + (f" (Flink defaults = {FLINK_DEFAULTS})" if "flink-defaults" in latency else ""))
        print(f"{'engine':15} {'tasks':>6}  {'published→expand P50 / P95 / P99':>34}  {'published→output topic P50 / P95 / P99':>40}")
        for name, r in latency.items():
            e, o = r["published_to_expand_ms"], r["published_to_output_ms"]
            print(f"{name:15} {r['tasks']:6d}  {e['p50']:10.1f} / {e['p95']:7.1f} / {e['p99']:7.1f}"
                  f"          {o['p50']:10.1f} / {o['p95']:7.1f} / {o['p99']:7.1f}")
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    name = "flink.json" if results else "flink-latency.json"
    body = {"detections": n_items, "cameras": a.cameras, "loadavg_1m": os.getloadavg()[0], **results} if results else {}
    if latency:
        body["latency"] = {"rate": a.latency_rate, "seconds": a.latency_seconds, "flink_defaults": FLINK_DEFAULTS,
                           **latency}
    (out / name).write_text(json.dumps(body, indent=1))
    ok = all(r["tasks"] >= r.get("goal", want) for r in results.values()) and all(r["tasks"] > 0 for r in latency.values())
    print(f"\n{'ok' if ok else 'INCOMPLETE'}: results in bench-results/{name} (machine shared: figures are indicative)")
    return 0 if ok else 1


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


class Collector(threading.Thread):
    """Reads an output topic from the start; per task of a measured detection: (expand - published,
    LogAppendTime - published) in ms."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.stop = bootstrap, topic, threading.Event()
        self.samples: list[tuple[float, float]] = []
        self.seen = 0

    def run(self):
        import orjson

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"bench-lat-{uuid.uuid4().hex}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([self.topic])
        try:
            while not self.stop.is_set():
                m = c.poll(0.2)
                if m is None or m.error():
                    continue
                self.seen += 1
                t = orjson.loads(m.value())
                if not t["camera_id"].startswith("lat-"):
                    continue  # warm-up
                times = t["times"]
                self.samples.append(((times["expand"] - times["published"]) * 1000,
                                     m.timestamp()[1] - times["published"] * 1000))
        finally:
            c.close()


def latency_part(a, env: dict, cluster: SessionCluster, tmp: Path, admin, run: str) -> dict:
    from confluent_kafka import Producer

    src = f"bench-flink-lat-in-{run}"
    # flink: config/flink.yaml as it is (thread mode); flink-process: the previous default (process mode,
    # same latency settings); --latency-flink-defaults: Flink's own latency settings instead
    names = ("local", "flink", "flink-defaults" if a.latency_flink_defaults else "flink-process")
    while len(cluster.pids()["taskmanager"]) < 2:  # one slot per TaskManager: one per Flink job
        cluster.sh("start-tm")
    outs = {n: f"bench-flink-lat-{n}-{run}" for n in names}
    dlq = f"bench-flink-lat-dlq-{run}"
    topics = [src, dlq, *outs.values()]
    new = [NewTopic(t, a.partitions, 1, config={"message.timestamp.type": "LogAppendTime"} if t in outs.values()
                    else {}) for t in topics]
    for f in admin.create_topics(new).values():
        f.result(30)
    procs, jobs = [], []
    collectors = {n: Collector(a.bootstrap, outs[n]) for n in names}
    try:
        for c in collectors.values():
            c.start()
        procs.append(subprocess.Popen([*HAZARDCTL, "expand", "--in", f"kafka://{src}", "--out", f"kafka://{outs['local']}",
                                       "--dlq", f"kafka://{dlq}", "--group", f"lat-local-{run}", "--refresh", "0"],
                                      env=env, cwd=ROOT))
        for n in names[1:]:
            cfg = tmp / f"lat-{n}.yaml"
            lat = ("latency: {" + ", ".join(f"{k}: {v}" for k, v in FLINK_DEFAULTS.items()) + "}\n"
                   if n == "flink-defaults" else "python_mode: process\n" if n == "flink-process" else "")
            cfg.write_text("parallelism: {source: 1, process: 1, sink: 1}\n"
                           f"checkpoints: {{interval_s: 5, dir: {tmp / 'checkpoints'}}}\n" + lat)
            sub = subprocess.run([*HAZARDCTL, "expand", "--engine", "flink", "--jobmanager", cluster.address,
                                  "--flink-config", str(cfg), "--in", f"kafka://{src}", "--out", f"kafka://{outs[n]}",
                                  "--dlq", f"kafka://{dlq}", "--group", f"lat-{n}-{run}", "--refresh", "0"],
                                 env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
            if sub.returncode != 0:
                raise SystemExit(f"submission failed: {sub.stderr[-2000:]}")
            jobs.append(sub.stdout.strip().splitlines()[-1])
        p = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 1, "enable.idempotence": True,
                      "acks": "all", "compression.type": "lz4"})

        def send(camera: str, frame: int):
            now = time.time()
            d = detection(camera, frame, now - 0.11, groups=1)
            d.times.published = time.time()
            p.produce(src, d.model_dump_json().encode(), camera.encode())
            p.poll(0)

        # warm-up: until every engine answers (the Flink jobs take tens of seconds to start)
        deadline, f = time.monotonic() + a.timeout, 0
        while min(c.seen for c in collectors.values()) == 0:
            if time.monotonic() > deadline:
                raise SystemExit("latency part: an engine never answered")
            send(f"warm-{f % 4}", f)
            f += 1
            time.sleep(0.2)
        time.sleep(3)
        n = int(a.latency_rate * a.latency_seconds)
        print(f"latency: {n} detections at {a.latency_rate:g}/s through {', '.join(names)}")
        t0 = time.monotonic()
        for i in range(n):
            send(f"lat-{i % 8:02d}", i)
            ahead = t0 + (i + 1) / a.latency_rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        p.flush(30)
        end = time.monotonic() + 30
        while time.monotonic() < end and min(len(c.samples) for c in collectors.values()) < n:
            time.sleep(0.5)
    finally:
        for c in collectors.values():
            c.stop.set()
        for pr in procs:
            pr.terminate()
            pr.wait(30)
        for j in jobs:
            try:
                flink_cli.cancel(cluster.address, j)
            except Exception as e:  # noqa: BLE001 - the cluster goes down next anyway
                print(f"cancel {j}: {e}")
        for c in collectors.values():
            c.join(5)
        admin.delete_topics(topics)
    out = {}
    for name, c in collectors.items():
        e = [x for x, _ in c.samples]
        o = [y for _, y in c.samples]
        out[name] = {"tasks": len(c.samples),
                     "published_to_expand_ms": {f"p{q}": round(pct(e, q / 100), 2) for q in (50, 95, 99)},
                     "published_to_output_ms": {f"p{q}": round(pct(o, q / 100), 2) for q in (50, 95, 99)}}
    return out


if __name__ == "__main__":
    sys.exit(main())
