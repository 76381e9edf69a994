#!/usr/bin/env python
"""Benchmark: a shadow variant at 20 % must cost the primary tasks nothing (issue 22).

The same run as bench_schedule.py's sw45 row (10 keys x 5 qps in the strict simulator, sliding
window, LLM 1-2 s, 0-30 ms provider jitter, 45 tasks/s offered open-loop with a real JPEG crop,
deadline capture + 10 s), once without a shadow and once with `shadow: {variant: cand, share: 20}`
(a second model on the same keys), in one session, alternating (`--repeat`). 45/s leaves ~3/s of
the keys' 48.1/s paced capacity spare while the shadow asks for 9/s: most shadow requests must be
shed, and the primary figures must not move.

Per row: primary achieved/s in the steady window, primary success, e2e - LLM P95 (capture -> result
minus the LLM call, which includes the wait for a key: a shadow that took a slot a primary needed
would show here), 429s, shadow answers written and shed. The last lines give shadow / baseline.

First, the same question on a fake clock (`model` rows, a few seconds): the real KeyPool and
AcquireQueue driven by a discrete-event loop (arrivals, calls of 1-2 s, the queue's own timers), no
HTTP and no CPU noise, 60 s per row, evenly spaced arrivals (like the stage rows) and Poisson ones
(bursty, like cameras), at 45, 40 and 30 tasks/s, shadow 20 % vs none, with the shadow's `keep_ready`.
On a shared 2-core machine the stage rows swing by seconds between two baselines; the model rows do not.

Usage:  make bench-shadow                        (model rows + 2 stage rows x 30 s, ~1.5 min)
        make bench-shadow BENCH_ARGS="--seconds 60 --repeat 2"
Exit status 1 with --check if, in the model rows at 45/s, the primary rate drops by more than 1 % or
the key-wait P95 rises by more than 5 ms (the stage rows are printed, not checked: too noisy here).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import logging
import random
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_schedule as bs  # noqa: E402
from hazardctl.keys import KeysConfig, LLMKey, Routes, Shadow, Variant  # noqa: E402
from hazardctl.keypool import NEW, SHADOW, AcquireQueue, KeyLimits, KeyPool, Outcome, PoolPolicy, Waiter  # noqa: E402
from hazardctl.routing import place  # noqa: E402
from stages.schedule import SHADOW_SHED, ScheduleConfig, Scheduler  # noqa: E402


def model_row(share: float, rate: float, poisson: bool, args, keep_ready: float = 0.5, seed: int = 1) -> dict:
    """The pool and queue on a fake clock: `rate` tasks/s (evenly spaced or Poisson) for 60 s, each a
    call of U(1, 2) s, `share` % also a shadow request; the primary key wait and the shadows answered."""
    rng, arrivals = random.Random(seed), random.Random(seed + 7)
    pool = KeyPool([KeyLimits(f"k{i}", args.qps, max_in_flight=20) for i in range(args.keys)],
                   PoolPolicy(jitter_allowance=0.04, slow_start=0.3, ramp_s=2.0), now=0.0)
    queue = AcquireQueue(pool)
    queue.reserve, queue.shadow_reserve = 2.2, keep_ready
    events: list = []
    seq, wseq = itertools.count(), itertools.count()
    seconds, t = 60.0, 0.0
    for i in range(int(rate * seconds)):
        t = t + arrivals.expovariate(rate) if poisson else i / rate
        heapq.heappush(events, (t, next(seq), "arrive", i))
    arrived: dict = {}
    waits, granted_at = [], []
    out = {"shed": 0, "shadow_ok": 0, "shadow_shed": 0}
    timer = None
    while events:
        now, _, kind, x = heapq.heappop(events)
        if kind == "arrive":
            w = Waiter(next(wseq), now + args.deadline, priority=NEW, reserve=True)
            arrived[w] = now
            queue.add(w)
            if share and place(f"task-{x}", "shadow") * 100 < share:
                s = Waiter(next(wseq), now + args.deadline, priority=SHADOW, reserve=True)
                arrived[s] = now
                queue.add(s)
        elif kind == "release":
            pool.release(x, Outcome.OK, now)
        elif kind == "timer" and timer != now:
            continue
        granted, expired, wake = queue.dispatch(now)
        for w in granted:
            if w.priority == SHADOW:
                out["shadow_ok"] += 1
            else:
                waits.append(now - arrived[w])
                granted_at.append(now)
            heapq.heappush(events, (now + rng.uniform(1.0, 2.0), next(seq), "release", w.lease))
        for w in expired:
            out["shadow_shed" if w.priority == SHADOW else "shed"] += 1
        if wake is not None and wake != timer:
            timer = wake
            heapq.heappush(events, (wake, next(seq), "timer", None))
    warm = 10.0
    steady = [w for w, g in zip(waits, granted_at) if g >= warm]
    out["rate"] = sum(1 for g in granted_at if warm <= g < seconds) / (seconds - warm)
    out["wait_p50"], out["wait_p95"] = bs.pct(steady, 50), bs.pct(steady, 95)
    return out


def model_table(args) -> tuple[str, bool]:
    head = ["arrivals", "tasks/s", "shadow", "achieved/s", "key wait P50", "key wait P95", "shed",
            "shadow answered", "shadow shed"]
    lines, met = [], True
    for poisson in (False, True):
        for rate in (45.0, 40.0, 30.0):
            base = model_row(0, rate, poisson, args)
            shadow = model_row(args.share, rate, poisson, args, args.keep_ready)
            for name, r in (("none", base), (f"{args.share:g} %", shadow)):
                lines.append(["Poisson" if poisson else "even", f"{rate:g}", name, f"{r['rate']:.2f}",
                              f"{r['wait_p50'] * 1000:.1f} ms", f"{r['wait_p95'] * 1000:.1f} ms", r["shed"],
                              r["shadow_ok"], r["shadow_shed"]])
            if rate == 45.0:
                met &= shadow["rate"] >= 0.99 * base["rate"] and shadow["wait_p95"] - base["wait_p95"] <= 0.005
    widths = [max(len(str(x[i])) for x in [head] + lines) for i in range(len(head))]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([fmt(head), "-" * (sum(widths) + 2 * len(widths))] + [fmt(x) for x in lines]), met


@dataclass
class Figures:
    name: str
    offered: int = 0
    rate: float = 0.0
    success: float = 0.0
    e2e_llm_p95: float = float("nan")
    key_wait_p95: float = float("nan")
    requests: int = 0
    ours_429: int = 0
    shadow_ok: int = 0
    shadow_failed: int = 0
    shadow_shed: int = 0


def keys_config(args, base_url: str, shadow: bool) -> KeysConfig:
    keys = [LLMKey(name=f"sim-key-{i:02d}", api_key=f"sim-secret-{i:02d}", qps_limit=args.qps, base_url=base_url,
                   timeout=30.0) for i in range(1, args.keys + 1)]
    extra = {}
    if shadow:
        extra = {"variants": {"main": Variant(), "cand": Variant(model="candidate-vl")},
                 "routes": Routes(default="main"), "shadow": Shadow(variant="cand", share=args.share)}
    return KeysConfig(strategy="round_robin", jitter_allowance_ms=40.0, keys=keys, **extra)


def run_row(name: str, shadow: bool, args, template) -> Figures:
    row = bs.Row(name, name, "sliding-window", args.rate)
    with bs.start_sim_process(bs.sim_config(row, args)) as sim:
        keys = keys_config(args, sim.base_url, shadow)
        if keys.shadow is not None:
            keys.shadow = keys.shadow.model_copy(update={"keep_ready": args.keep_ready})
        inp, out, dlq = bs.QueueInput(), bs.CollectOutput("results"), bs.CollectOutput("dead-letters")
        side = bs.CollectOutput("shadow") if shadow else None
        trace: list[tuple] = []
        offered: dict = {}
        shed_before = SHADOW_SHED.labels("cand")._value.get()
        sched = Scheduler(keys, inp, out, dlq, ScheduleConfig(live_every=0), trace=trace, shadow_out=side)
        t0 = time.time() + 0.5
        feeder = threading.Thread(target=bs.offer, args=(inp, template, args.rate, args.seconds, args.deadline, t0,
                                                         offered), daemon=True)
        feeder.start()
        asyncio.run(sched.run())
        feeder.join()
        stats = sim.stats()
    f = Figures(name, offered=len(offered))
    ok = [x for x in out.items if x["status"] == "ok"]
    warm = min(args.warmup, args.seconds / 4)
    f.rate = sum(1 for x in ok if t0 + warm <= x["times"]["result"] < t0 + args.seconds) / (args.seconds - warm)
    f.success = len(ok) / len(offered) if offered else 0.0
    steady = [x for x in ok if x["times"]["capture"] >= t0 + warm]
    f.e2e_llm_p95 = bs.pct([(x["times"]["result"] - x["times"]["capture"])
                            - (x["times"]["llm_end"] - x["times"]["llm_start"]) for x in steady], 95)
    f.key_wait_p95 = bs.pct([wait for _deq, wait, _llm, _prod, _n in trace], 95)
    tot = stats["totals"]
    f.requests = tot["requests"]
    f.ours_429 = tot.get("refused_rate", 0) + tot.get("refused_tokens", 0) + tot.get("refused_surge", 0)
    if side is not None:
        f.shadow_ok = sum(1 for x in side.items if x["status"] == "ok")
        f.shadow_failed = sum(1 for x in side.items if x["status"] != "ok")
        f.shadow_shed = int(SHADOW_SHED.labels("cand")._value.get() - shed_before)
        assert all(x["variant"] == "cand" for x in side.items) and all(x["variant"] != "cand" for x in out.items)
    return f


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="seconds of offered load per row (default 30)")
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--rate", type=float, default=45.0)
    ap.add_argument("--share", type=float, default=20.0, help="percent of tasks also sent to the shadow")
    ap.add_argument("--keep-ready", type=float, default=0.5, help="the shadow's keep_ready (api_keys.yaml)")
    ap.add_argument("--model-only", action="store_true", help="only the fake-clock rows (seconds)")
    ap.add_argument("--repeat", type=int, default=1, help="baseline/shadow pairs, alternating (default 1)")
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument("--qps", type=float, default=5.0)
    ap.add_argument("--jitter-ms", type=float, default=30.0)
    ap.add_argument("--latency", default="uniform:1.0:2.0")
    ap.add_argument("--deadline", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    args.surge = False
    text, model_met = model_table(args)
    print(f"fake clock: the real KeyPool and AcquireQueue, {args.keys} keys x {args.qps:g} qps, calls U(1, 2) s, "
          f"60 s per row, shadow keep_ready {args.keep_ready:g}\n{text}\n", flush=True)
    if args.model_only:
        print("model rows: primary unchanged at 45/s" if model_met else "model rows: PRIMARY AFFECTED at 45/s")
        return 1 if (args.check and not model_met) else 0
    logging.basicConfig(level="WARNING", stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    crop, size = bs.real_crop()
    template = bs.task_template(crop, size)
    print(f"bench_shadow: {args.keys} keys x {args.qps:g} qps (sliding window, jitter 0-{args.jitter_ms:g} ms), LLM "
          f"{args.latency}, {args.rate:g} tasks/s offered, shadow {args.share:g} %, {args.seconds:g} s per row",
          flush=True)
    rows: list[Figures] = []
    for i in range(args.repeat):
        for name, shadow in (("baseline", False), (f"shadow{args.share:g}", True)):
            print(f"running {name} ({i + 1}/{args.repeat})...", flush=True)
            rows.append(run_row(name, shadow, args, template))
    head = ["row", "offered", "achieved/s", "success", "e2e-LLM P95", "key wait P95", "requests", "429s",
            "shadow ok", "shadow failed", "shadow shed"]
    lines = [[r.name, r.offered, f"{r.rate:.2f}", f"{100 * r.success:.2f} %", f"{r.e2e_llm_p95 * 1000:.1f} ms",
              f"{r.key_wait_p95 * 1000:.1f} ms", r.requests, r.ours_429, r.shadow_ok, r.shadow_failed, r.shadow_shed]
             for r in rows]
    widths = [max(len(str(x[i])) for x in [head] + lines) for i in range(len(head))]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    print("\n" + "\n".join([fmt(head), "-" * (sum(widths) + 2 * len(widths))] + [fmt(x) for x in lines]))
    base = [r for r in rows if r.name == "baseline"]
    shad = [r for r in rows if r.name != "baseline"]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    rate_ratio = mean([r.rate for r in shad]) / mean([r.rate for r in base])
    p95_diff = mean([r.e2e_llm_p95 for r in shad]) - mean([r.e2e_llm_p95 for r in base])
    answered = sum(r.shadow_ok + r.shadow_failed for r in shad)
    asked = answered + sum(r.shadow_shed for r in shad)
    print(f"\nshadow / baseline: primary achieved {rate_ratio:.3f}x, e2e - LLM P95 {p95_diff * 1000:+.1f} ms; "
          f"shadow answered {answered} of {asked} asked ({100 * answered / max(1, asked):.0f} %, the rest shed: "
          "no spare key before the deadline)")
    met = rate_ratio >= 0.98 and p95_diff <= 0.020
    print("stage rows: primary unchanged" if met else "stage rows: primary moved (2-core shared machine: compare the "
          "two baselines with each other before trusting it)")
    print("model rows: primary unchanged at 45/s" if model_met else "model rows: PRIMARY AFFECTED at 45/s")
    return 1 if (args.check and not model_met) else 0


if __name__ == "__main__":
    sys.exit(main())
