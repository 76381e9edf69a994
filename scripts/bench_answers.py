#!/usr/bin/env python
"""Benchmark: the schedule stage against a drifting model (issue 12), with the real `hazardctl schedule`.

Two scenarios, each a real `hazardctl schedule` process reading tasks from a pipe, fed open-loop at
`--rate` tasks/s (each task's deadline: write time + 10 s), against the simulated LLM in its own
process (10 keys × 5 qps enforced server-side, latency uniform 1–2 s):

  mix       `--mix` (default: 70 % strict, 30 % drifted variants that a model really writes: fenced,
            prose, <think>, synonym keys, camelCase, Chinese, numbers, risk score, relaxed JSON,
            list, nested) for `--duration` s. Target: >= 99 % of tasks `ok`.
  garbage   100 % unusable answers for `--garbage` s at `--garbage-rate` (20/s: each task makes two
            calls, the answer and its one retry, so 40 calls/s of the 50 the keys allow), then good answers. Targets: every task of the
            garbage phase `failed` with `bad_response` and a dead letter, every key available the
            whole time (the stage's key-state gauges; each key still received requests in the last
            seconds of the phase), the drift WARNING on stderr, and the tasks written after the switch
            all `ok` at the first attempt.

The baseline for `mix` is the same run with the reader before issue 12 (`--baseline`: the answers a
strict reader would reject are counted from the simulator's log of which variant each request got).

Usage: .venv/bin/python scripts/bench_answers.py                    (60 s mix + 30 s garbage, ~2 min)
       .venv/bin/python scripts/bench_answers.py --duration 10 --garbage 8 --check   (CI smoke)
Exit status 1 if a target is missed (with --check).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hazardctl.messages import AssessmentTask  # noqa: E402
from tests.test_schedule_stage import tasks  # noqa: E402

MIX_30 = ("strict:0.70,fenced:0.03,prose:0.03,think:0.03,synonyms:0.03,camel:0.03,zh:0.03,numbers:0.02,"
          "score:0.02,relaxed:0.03,list:0.03,nested:0.02")
WARNING_RE = re.compile(r"WARNING .*model \S+: \d+ of its last \d+ answers were unusable")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_keys(path: Path, base_url: str, n: int = 10, qps: float = 5.0, formats: dict[int, str] | None = None,
               **top) -> Path:
    """A keys file for the simulator's generated keys sim-key-01.. (secrets sim-secret-01..)."""
    keys = [{"name": f"sim-key-{i:02d}", "api_key": f"sim-secret-{i:02d}", "qps_limit": qps, "base_url": base_url,
             **({"response_format": formats[i]} if formats and i in formats else {})} for i in range(1, n + 1)]
    path.write_text(json.dumps({"keys": keys, **top}))
    return path


@dataclass
class ScheduleRun:
    """`hazardctl schedule` as a process: tasks in on stdin, results to a file, dead letters to a file."""

    workdir: Path
    keys: Path
    args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out, self.dlq, self.err = (self.workdir / n for n in ("results.jsonl", "dead.jsonl", "stderr.log"))
        self.metrics_port = free_port()
        self._err = self.err.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hazardctl.cli", "schedule", "--keys", str(self.keys), "--out", str(self.out),
             "--dlq", str(self.dlq), "--metrics-port", str(self.metrics_port), *self.args],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._err, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.written: dict[str, float] = {}  # task id → when it was written

    def send(self, task: AssessmentTask) -> None:
        now = time.time()
        t = task.model_copy(update={"deadline": now + 10.0, "frame_ts": now})
        assert self.proc.stdin is not None
        self.proc.stdin.write(t.model_dump_json().encode() + b"\n")
        self.proc.stdin.flush()
        self.written[t.task_id] = now

    def feed(self, pool: list[AssessmentTask], rate: float, duration: float) -> None:
        """Open loop: one task every 1/rate s, whatever the stage does."""
        start = time.monotonic()
        n = int(rate * duration)
        for i in range(n):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.send(pool[len(self.written)])

    def wait_results(self, n: int, timeout: float = 30.0) -> None:
        """Until the stage has written `n` results (every task written so far, when n = len(written))."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.out.exists() and self.out.read_bytes().count(b"\n") >= n:
                return
            time.sleep(0.1)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def wait_metrics(self, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                self.metrics()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"schedule did not serve /metrics: {self.err.read_text()[-2000:]}")

    def finish(self, timeout: float = 60.0) -> tuple[list[dict], list[dict], str]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._err.close()
        read = lambda p: [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []  # noqa: E731
        return read(self.out), read(self.dlq), self.err.read_text()


def key_states(metrics_text: str) -> dict[str, dict[str, float]]:
    """hazardctl_key_state{key,state} → {key: {state: value}}."""
    out: dict[str, dict[str, float]] = {}
    for m in re.finditer(r'^hazardctl_key_state\{key="([^"]+)",state="([^"]+)"\} (\S+)$', metrics_text, re.M):
        out.setdefault(m.group(1), {})[m.group(2)] = float(m.group(3))
    return out


def task_pool(n: int) -> list[AssessmentTask]:
    return tasks(n, deadline_s=10.0)


# ------------------------------------------------------------------------------------------ scenarios

def run_mix(sim, workdir: Path, rate: float, duration: float, mix: str = MIX_30) -> dict:
    sim.set_answer_mix(mix)
    sim.reset_stats()
    run = ScheduleRun(workdir, write_keys(workdir / "keys.json", sim.base_url))
    run.wait_metrics()
    pool = task_pool(int(rate * duration) + 10)
    t0 = time.monotonic()
    run.feed(pool, rate, duration)
    fed_s = time.monotonic() - t0
    metrics_text = run.metrics()  # while the last tasks finish: the counters are well under way
    results, dead, err = run.finish()
    by_status: dict[str, int] = {}
    for r in results:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    normalized = sum(1 for r in results if r.get("answer_normalized"))
    variants: dict[str, int] = {}
    for r in sim.requests(limit=100_000):  # the simulator's log: which variant each answer (200) had
        if r.get("answer") and r.get("status") == 200:
            variants[r["answer"]] = variants.get(r["answer"], 0) + 1
    offered = len(run.written)
    return {"offered": offered, "fed_rate": offered / fed_s, "ok": by_status.get("ok", 0), "statuses": by_status,
            "success": by_status.get("ok", 0) / max(1, offered), "normalized": normalized, "dead": len(dead),
            "variants": variants, "stderr": err, "results": results, "metrics": metrics_text}


def run_garbage(sim, workdir: Path, rate: float, garbage_s: float, good_s: float = 2.0) -> dict:
    sim.set_answer_mix("garbage:1")
    sim.reset_stats()
    run = ScheduleRun(workdir, write_keys(workdir / "keys.json", sim.base_url))
    run.wait_metrics()
    pool = task_pool(int(rate * (garbage_s + good_s)) + 10)
    states: list[dict] = []
    stop = threading.Event()

    def watch() -> None:  # the stage's own key-state gauges (refreshed every second), sampled through the phase
        while not stop.wait(0.5):
            try:
                states.append(key_states(run.metrics()))
            except OSError:
                pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    run.feed(pool, rate, garbage_s - 3.0)
    before_tail = {k: v["requests"] for k, v in sim.stats()["keys"].items()}
    run.feed(pool, rate, 3.0)
    run.wait_results(len(run.written))  # every garbage task has had its answer and its retry
    tail = {k: v["requests"] - before_tail.get(k, 0) for k, v in sim.stats()["keys"].items()}
    stop.set()
    watcher.join()
    switched = time.time()
    sim.set_answer_mix("strict:1")
    run.feed(pool, rate, good_s)
    results, dead, err = run.finish()
    garbage = [r for r in results if run.written[r["task_id"]] < switched]
    good = [r for r in results if run.written[r["task_id"]] >= switched]
    dead_ids = {json.loads(d["payload"])["task_id"] for d in dead}
    cooling = sum(s.get(st, 0.0) for snap in states for s in snap.values() for st in ("cooling", "disabled"))
    return {
        "garbage_tasks": len(garbage), "good_tasks": len(good), "written": len(run.written),
        "results": len(results),
        "garbage_statuses": sorted({(r["status"], r["error_class"]) for r in garbage}, key=str),
        "garbage_failed_bad_response": sum(r["status"] == "failed" and r["error_class"] == "bad_response"
                                           for r in garbage),
        "garbage_dead_letters": sum(r["task_id"] in dead_ids for r in garbage),
        "good_ok_first_attempt": sum(r["status"] == "ok" and r["attempts"] == 1 for r in good),
        "key_state_samples": len(states), "keys_seen": len(states[-1]) if states else 0,
        "cooling_or_disabled_samples": cooling, "requests_per_key_last_3s": tail,
        "warning": bool(WARNING_RE.search(err)), "stderr": err,
    }


def old_rejects(variants: dict[str, int], samples: int = 50) -> int:
    """How many of these answers the reader before issue 12 (scripts/bench_answer_reader.py's copy)
    rejects: each variant is tried on `samples` requests of the catalogue; its count is scaled by the
    share the old reader rejected."""
    from scripts.bench_answer_reader import parse_before
    from hazardctl.answers import BadResponse
    from tools.llm_sim.answers import answer_variant

    task = tasks(1)[0]
    total = 0.0
    for name, count in variants.items():
        bad = 0
        for i in range(samples):
            content, _ = answer_variant(os.urandom(32), "- id 0: person\n- id 1: car", name)
            try:
                parse_before(content, task)
            except BadResponse:
                bad += 1
        total += count * bad / samples
    return round(total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=45.0)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of the mix scenario")
    ap.add_argument("--garbage", type=float, default=30.0, help="seconds of 100 %% garbage answers")
    ap.add_argument("--garbage-rate", type=float, default=20.0,
                    help="tasks/s in the garbage scenario (each garbage task costs 2 calls: 20/s = 40 calls/s of 50)")
    ap.add_argument("--mix", default=MIX_30)
    ap.add_argument("--latency", default="uniform:1.0:2.0")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    from tools.llm_sim import build_config, start_sim_process

    import tempfile

    rows: list[tuple[str, str, str, bool]] = []
    cfg = build_config(keys=10, qps=5, port=0, latency=args.latency).model_copy(update={"requests_log": 100_000})
    with tempfile.TemporaryDirectory() as tmp, start_sim_process(cfg) as sim:
        (Path(tmp) / "mix").mkdir()
        (Path(tmp) / "garbage").mkdir()
        m = run_mix(sim, Path(tmp) / "mix", args.rate, args.duration, args.mix)
        drifted = sum(v for k, v in m["variants"].items() if k != "strict")
        calls = sum(m["variants"].values())
        rows += [
            ("mix: tasks offered (rate)", f"{m['offered']} ({m['fed_rate']:.1f}/s)", "", True),
            ("mix: drifted answers / all answers", f"{drifted}/{calls} ({100 * drifted / max(1, calls):.1f}%)", "~30%",
             True),
            ("mix: ok", f"{100 * m['success']:.2f}%", ">= 99%", m["success"] >= 0.99),
            ("mix: results read with a rule (answer_normalized)", str(m["normalized"]), "", True),
            ("mix: statuses", json.dumps(m["statuses"]), "", True),
            ("baseline: answers the reader before issue 12 rejects", f"{old_rejects(m['variants'])}/{calls} "
             f"({100 * old_rejects(m['variants']) / max(1, calls):.1f}%)", "(baseline)", True),
        ]
        g = run_garbage(sim, Path(tmp) / "garbage", args.garbage_rate, args.garbage)
        every_key = all(v > 0 for v in g["requests_per_key_last_3s"].values()) and len(g["requests_per_key_last_3s"]) == 10
        rows += [
            ("garbage: tasks / failed bad_response", f"{g['garbage_tasks']}/{g['garbage_failed_bad_response']}", "all",
             g["garbage_tasks"] > 0 and g["garbage_failed_bad_response"] == g["garbage_tasks"]),
            ("garbage: (status, error class) seen", str(g["garbage_statuses"]), "", True),
            ("garbage: dead letters", str(g["garbage_dead_letters"]), "= tasks",
             g["garbage_dead_letters"] == g["garbage_tasks"]),
            ("garbage: key-state samples with a key cooling/disabled", f"{g['cooling_or_disabled_samples']:.0f} "
             f"of {g['key_state_samples']} x {g['keys_seen']} keys", "0",
             g["cooling_or_disabled_samples"] == 0 and g["key_state_samples"] > 0 and g["keys_seen"] == 10),
            ("garbage: every key still used in the last 3 s", str(sorted(g["requests_per_key_last_3s"].values())),
             "all > 0", every_key),
            ("garbage: drift WARNING on stderr", str(g["warning"]), "True", g["warning"]),
            ("after the switch: ok at the first attempt", f"{g['good_ok_first_attempt']}/{g['good_tasks']}", "all",
             g["good_tasks"] > 0 and g["good_ok_first_attempt"] == g["good_tasks"]),
            ("all tasks got a result", f"{g['results']}/{g['written']}", "all", g["results"] == g["written"]),
        ]
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':{width}}  {'measured':>22}  {'target':>8}  ok?")
    for name, value, target, ok in rows:
        print(f"{name:{width}}  {value:>22}  {target:>8}  {'yes' if ok else 'NO'}")
    return 1 if args.check and not all(r[3] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
