"""bench-flink: expand's throughput on Flink (session cluster, parallelism 1 and 2) next to the local
engine, on the same input topic in the same run; time to the first task; RSS of the JVMs and workers.

Each engine drains the same backlog of detection results (gate open: 3 tasks per detection, so tasks/s
measures the engine, not the gate) from its own consumer group into its own output topic.
tasks/s = tasks / (last - first output timestamp); first task = seconds from the start command.

    make bench-flink                       (BENCH_ARGS="--detections 8000 --cameras 40")
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from stages.expand import flink_cli  # noqa: E402
from tests.flink_util import SessionCluster, detections, python_workers, rss_mb  # noqa: E402
from tests.kafka_util import produce  # noqa: E402

HAZARDCTL = [sys.executable, "-m", "hazardctl.cli"]


def drain(bootstrap: str, topic: str, want: int, timeout: float) -> tuple[int, float, float]:
    """(count, first, last broker timestamp in s) once `want` messages are on `topic`."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    n, first, last = 0, None, 0.0
    deadline = time.monotonic() + timeout
    try:
        while n < want and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error():
                    continue
                ts = m.timestamp()[1] / 1000
                first = ts if first is None else min(first, ts)
                last = max(last, ts)
                n += 1
    finally:
        c.close()
    return n, first or 0.0, last


class RssSampler(threading.Thread):
    def __init__(self, pids_fn):
        super().__init__(daemon=True)
        self.pids_fn, self.peak, self.stop = pids_fn, {}, threading.Event()

    def run(self):
        while not self.stop.is_set():
            for role, pids in self.pids_fn().items():
                self.peak[role] = max(self.peak.get(role, 0.0), sum(rss_mb(p) for p in pids))
                self.peak[role + "_n"] = max(self.peak.get(role + "_n", 0), len(pids))
            self.stop.wait(0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detections", type=int, default=4000)
    ap.add_argument("--cameras", type=int, default=20)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--bootstrap", default=os.environ.get("HAZARDCTL_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    ap.add_argument("--timeout", type=float, default=240)
    a = ap.parse_args()
    env = {**os.environ, "HAZARDCTL_KAFKA_BOOTSTRAP": a.bootstrap, "PYTHONPATH": str(ROOT)}
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    run = uuid.uuid4().hex[:8]
    src = f"bench-flink-in-{run}"
    outs = {name: f"bench-flink-{name}-{run}" for name in ("local", "flink-p1", "flink-p2")}
    dlq = f"bench-flink-dlq-{run}"
    topics = [src, dlq, *outs.values()]
    # outputs stamped by the broker on arrival (the Flink sink would copy the input's timestamps)
    append = {"message.timestamp.type": "LogAppendTime"}
    new = [NewTopic(t, a.partitions, 1, config=append if t in outs.values() else {}) for t in topics]
    for f in admin.create_topics(new).values():
        f.result(30)
    items = detections(a.cameras, a.detections // a.cameras)
    want = len(items) * 3
    produce(a.bootstrap, src, items)
    print(f"input: {len(items)} detections ({a.cameras} cameras) on {src}, {want} tasks expected per engine")
    results: dict[str, dict] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-flink-"))
    cluster = SessionCluster(tmp / "cluster")
    try:
        # local engine
        t0 = time.time()
        p = subprocess.Popen([*HAZARDCTL, "expand", "--in", f"kafka://{src}", "--out", f"kafka://{outs['local']}",
                              "--dlq", f"kafka://{dlq}", "--group", f"bench-local-{run}", "--refresh", "0"],
                             env=env, cwd=ROOT)
        sampler = RssSampler(lambda: {"local": [p.pid]})
        sampler.start()
        n, first, last = drain(a.bootstrap, outs["local"], want, a.timeout)
        sampler.stop.set()
        p.terminate()
        p.wait(30)
        results["local"] = {"tasks": n, "tasks_per_s": n / max(last - first, 1e-3), "first_task_s": first - t0,
                            "rss_mb": {"local": sampler.peak.get("local", 0)}}
        # Flink on a standalone session cluster, parallelism 1 and 2
        cluster.sh("up")
        for par in (1, 2):
            name = f"flink-p{par}"
            cfg = tmp / f"{name}.yaml"
            cfg.write_text(f"parallelism: {{source: {par}, process: {par}, sink: {par}}}\n"
                           f"checkpoints: {{interval_s: 5, dir: {tmp / 'checkpoints'}}}\n")

            def roles():
                pids = cluster.pids()
                return {**pids, "python_workers": python_workers(pids["taskmanager"])}

            sampler = RssSampler(roles)
            sampler.start()
            t0 = time.time()
            sub = subprocess.run([*HAZARDCTL, "expand", "--engine", "flink", "--jobmanager", cluster.address,
                                  "--flink-config", str(cfg), "--in", f"kafka://{src}", "--out", f"kafka://{outs[name]}",
                                  "--dlq", f"kafka://{dlq}", "--group", f"bench-{name}-{run}", "--refresh", "0"],
                                 env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
            if sub.returncode != 0:
                raise SystemExit(f"submission failed: {sub.stderr[-2000:]}")
            submitted = time.time() - t0
            job = sub.stdout.strip().splitlines()[-1]
            n, first, last = drain(a.bootstrap, outs[name], want, a.timeout)
            sampler.stop.set()
            flink_cli.cancel(cluster.address, job)
            results[name] = {"tasks": n, "tasks_per_s": n / max(last - first, 1e-3), "first_task_s": first - t0,
                             "submit_s": submitted, "rss_mb": {k: round(v) for k, v in sampler.peak.items()}}
            time.sleep(3)
    finally:
        cluster.down()
        admin.delete_topics(topics)
    print(f"\n{'engine':10} {'tasks':>7} {'tasks/s':>9} {'first task s':>13} {'(submit s)':>10}  RSS MB (peak)")
    for name, r in results.items():
        rss = ", ".join(f"{k} {v:.0f}" for k, v in r["rss_mb"].items() if not k.endswith("_n"))
        nworkers = r["rss_mb"].get("python_workers_n")
        extra = f" ({nworkers} Python workers)" if nworkers else ""
        sub = f"{r['submit_s']:.1f}" if "submit_s" in r else "-"
        print(f"{name:10} {r['tasks']:7d} {r['tasks_per_s']:9.0f} {r['first_task_s']:13.1f} {sub:>10}  {rss}{extra}")
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "flink.json").write_text(json.dumps({"detections": len(items), "cameras": a.cameras, **results}, indent=1))
    ok = all(r["tasks"] >= want for r in results.values())
    print(f"\n{'ok' if ok else 'INCOMPLETE'}: results in bench-results/flink.json (machine shared: figures are indicative)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
