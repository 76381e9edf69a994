#!/usr/bin/env python
"""Benchmark of the schedule stage against the simulated LLM with provider-strict limits (spec §6, issue 8).

Each row starts a fresh simulator in its own OS process (`tools.llm_sim`: 10 keys, latency uniform
1–2 s, each request reaching the limiter 0–30 ms late, 429 bodies as DashScope sends them), then runs
the real `Scheduler` (key pool, AsyncOpenAI clients, result emission) in this process, fed open-loop:
a thread offers tasks at exactly the row's rate, each with a real 576x768 JPEG crop and a deadline
of capture + 10 s, whatever the scheduler does. ONE table: each row's figures next to the ideal (the
sum of the limits the simulator enforces) and the issue's targets.

Rows (`--rows NAME,...`; a limiter name selects its rows; default: all but naive):
  tb49 sw49 fw49     10 x 5 qps, 49/s offered, limiter token-bucket / sliding-window / fixed-window
  tb45 sw45 fw45     the same at 45/s: end-to-end minus LLM time at P95
  acct2              two accounts of 25 qps, five 5-qps keys each (sliding window), 49/s
  acct1              ten 5-qps keys in ONE 25-qps account: ~25/s and the start-up WARNING, 49/s
  tokens             tpm 60,000 per key, ~1,000 tokens a request, 15/s offered (sliding window)
  one429             sim-key-03 answers 429 to everything, without Retry-After, 49/s
  one401             sim-key-03 answers 401 from the start: no request after its first 401, 49/s
  overload           70/s offered, 30 % refresh tasks, deadline capture + 10 s

Figures:
  achieved/s     ok results per second in the steady window [warm-up, end of offering]
  429 %          429s for rate, tokens or surge the simulator sent / requests it received (the
                 injected one429 storm is not ours and not counted)
  success        ok results / tasks offered
  e2e-LLM P95    capture -> result minus the LLM call, ok tasks offered after the warm-up
  overhead P95   dequeue -> result minus the HTTP call(s) and the wait for a key

Usage:  make bench-schedule                                  (all rows, 60 s each: ~12 min)
        make bench-schedule BENCH_ARGS="--rows sliding --seconds 20"
Exit status 1 if a target is missed (with --check).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import logging
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hazardctl.keys import Account, KeysConfig, LLMKey  # noqa: E402
from hazardctl.messages import AssessmentTask, DetectedObject, Group, SpatialFeatures, StageTimes  # noqa: E402
from hazardctl.transports import Record  # noqa: E402
from stages.schedule import ScheduleConfig, Scheduler  # noqa: E402
from tools.llm_sim import SimConfig, start_sim_process  # noqa: E402
from tools.llm_sim.config import SimAccount, SimKey  # noqa: E402

def real_crop(max_side: int = 768) -> tuple[str, tuple[int, int]]:
    """A real JPEG crop of a street scene, resized like the detect stage does (max side 768)."""
    path = ROOT / "tests" / "data" / "bus.jpg"
    try:
        from PIL import Image

        img = Image.open(path)
        img.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=85)
        return base64.b64encode(buf.getvalue()).decode(), img.size
    except ImportError:  # no Pillow: the original file (810x1080, a little larger than a real crop)
        return base64.b64encode(path.read_bytes()).decode(), (810, 1080)


def task_template(crop_b64: str, size: tuple[int, int]) -> AssessmentTask:
    objects = [
        DetectedObject(object_id=0, class_name="person", class_id=0, confidence=0.81, bbox=(412, 300, 470, 460), track_id=3),
        DetectedObject(object_id=1, class_name="car", class_id=2, confidence=0.77, bbox=(470, 330, 690, 450), track_id=7),
        DetectedObject(object_id=2, class_name="bus", class_id=5, confidence=0.9, bbox=(180, 220, 480, 470), track_id=9),
    ]
    group = Group(group_id="g", member_ids=[0, 1, 2], bbox=(180, 220, 690, 470), classes=["person", "car", "bus"],
                  mean_confidence=0.83,
                  features=SpatialFeatures(density_per_10k_px2=0.24, mean_spacing=120.0, min_spacing=35.0,
                                           vehicle_count=2, pedestrian_count=1, min_pedestrian_vehicle_distance=35.0),
                  crop_jpeg_b64=crop_b64, crop_size=size)
    return AssessmentTask(task_id="t", detection_id="d", camera_id="cam", frame_id=0, frame_ts=0.0,
                          frame_width=1920, frame_height=1080, group=group, objects=objects, reason="new",
                          deadline=0.0, times=StageTimes())


class QueueInput:
    """The scheduler's Input, fed by the offering thread (like a pipe, without the pipe)."""

    name = "bench"

    def __init__(self) -> None:
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self._exhausted = False

    def poll(self, timeout: float, max_records: int = 500) -> list[Record]:
        out: list[Record] = []
        try:
            item = self.q.get(timeout=timeout) if timeout > 0 else self.q.get_nowait()
            while True:
                if item is None:
                    self._exhausted = True
                    break
                out.append(Record(value=item, source="bench"))
                if len(out) >= max_records:
                    break
                item = self.q.get_nowait()
        except queue.Empty:
            pass
        return out

    @property
    def exhausted(self) -> bool:
        return self._exhausted

    def done(self, record: Record) -> None:
        pass

    def set_paused(self, paused: bool) -> None:
        pass

    def close(self) -> None:
        pass


class CollectOutput:
    """Keeps what the scheduler emits (without the crop, to bound memory)."""

    def __init__(self, name: str):
        self.name = name
        self.items: list[dict] = []

    def send(self, value: bytes, key: bytes | None = None, on_delivered=None) -> None:
        d = orjson.loads(value)
        d.pop("crop_jpeg_b64", None)
        d.pop("payload", None)
        self.items.append(d)
        if on_delivered:
            on_delivered(None)

    def poll(self, timeout: float = 0.0) -> None:
        pass

    def flush(self, timeout: float) -> int:
        return 0

    def close(self) -> None:
        pass


def offer(inp: QueueInput, template: AssessmentTask, rate: float, duration: float, deadline_s: float,
          t0: float, offered: dict, refresh_share: float = 0.0) -> None:
    """Open loop: task i is offered at t0 + i/rate, however busy the scheduler is; a `refresh_share`
    of them (every k-th, evenly) are refreshes of unchanged groups, the rest new."""
    raw = template.model_dump()
    n = int(rate * duration)
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        now = time.time()
        reason = "refresh" if int((i + 1) * refresh_share) > int(i * refresh_share) else "new"
        tid = str(uuid.uuid4())
        raw.update(task_id=tid, detection_id=f"cam-{i % 50:02d}:{i}", camera_id=f"cam-{i % 50:02d}",
                   frame_id=i, frame_ts=now, deadline=now + deadline_s, times={"capture": now}, reason=reason)
        raw["group"]["group_id"] = f"cam-{i % 50:02d}-g{i}"
        inp.q.put(orjson.dumps(raw))
        offered[tid] = (now, reason, now + deadline_s)
    inp.q.put(None)


# -- measuring ------------------------------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    """Exact percentile (nearest rank)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]




# -- rows -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    name: str
    what: str
    limiter: str = "sliding-window"
    rate: float = 49.0
    accounts: tuple[int, float] | None = None  # (keys per account, account qps)
    tpm: int | None = None
    fault: str | None = None  # "storm" | "unauthorized" for sim-key-03
    refresh_share: float = 0.0
    workers: int = 256
    check_e2e: bool = False


ROWS = [
    Row("tb49", "10x5 qps, token bucket", "token-bucket"),
    Row("sw49", "10x5 qps, sliding window", "sliding-window"),
    Row("fw49", "10x5 qps, fixed window", "fixed-window"),
    Row("tb45", "10x5 qps, token bucket, 45/s", "token-bucket", 45.0, check_e2e=True),
    Row("sw45", "10x5 qps, sliding window, 45/s", "sliding-window", 45.0, check_e2e=True),
    Row("fw45", "10x5 qps, fixed window, 45/s", "fixed-window", 45.0, check_e2e=True),
    Row("acct2", "2 accounts x 25 qps, 5 keys each", accounts=(5, 25.0)),
    Row("acct1", "10 keys in ONE 25-qps account", accounts=(10, 25.0)),
    Row("tokens", "tpm 60,000 per key, ~1,000 tok/request", rate=15.0, tpm=60_000),
    Row("one429", "sim-key-03 429s everything, no Retry-After", fault="storm"),
    Row("one401", "sim-key-03 answers 401", fault="unauthorized"),
    Row("overload", "70/s offered, 30 % refresh", rate=70.0, refresh_share=0.3, workers=2048),
]
GROUPS = {"token-bucket": ["tb49", "tb45"], "bucket": ["tb49", "tb45"], "sliding": ["sw49", "sw45"],
          "sliding-window": ["sw49", "sw45"], "fixed": ["fw49", "fw45"], "fixed-window": ["fw49", "fw45"],
          "accounts": ["acct2", "acct1"], "all": [r.name for r in ROWS]}
BAD = "sim-key-03"


def sim_config(row: Row, args) -> SimConfig:
    keys, accounts = [], {}
    for i in range(1, args.keys + 1):
        name = f"sim-key-{i:02d}"
        acct = None
        if row.accounts:
            acct = f"acct-{(i - 1) // row.accounts[0] + 1:02d}"
            accounts[acct] = SimAccount(qps=row.accounts[1])
        fault = None
        if name == BAD and row.fault == "storm":
            fault = {"kind": "rate_limit_storm"}
        elif name == BAD and row.fault == "unauthorized":
            fault = "unauthorized"
        keys.append(SimKey(name=name, api_key=f"sim-secret-{i:02d}", qps=args.qps, tpm=row.tpm, account=acct,
                           fault=fault))
    return SimConfig(keys=keys, accounts=accounts, limiter=row.limiter, jitter_ms=args.jitter_ms,
                     retry_after=row.fault != "storm", latency=args.latency, seed=args.seed, port=0,
                     surge=args.surge)


def keys_config(row: Row, args, base_url: str) -> KeysConfig:
    accounts = {}
    keys = []
    for i in range(1, args.keys + 1):
        acct = None
        if row.accounts:
            acct = f"acct-{(i - 1) // row.accounts[0] + 1:02d}"
            accounts[acct] = Account(qps=row.accounts[1])
        keys.append(LLMKey(name=f"sim-key-{i:02d}", api_key=f"sim-secret-{i:02d}", qps_limit=args.qps,
                           tpm_limit=row.tpm, account=acct, base_url=base_url, timeout=30.0))
    return KeysConfig(strategy=args.strategy, reprobe_interval=300.0, jitter_allowance_ms=args.jitter_allowance_ms,
                      slow_start_s=args.slow_start_s, accounts=accounts, keys=keys)


def ideal(row: Row, args, tokens_per_request: float | None) -> float:
    """What the simulator's limits allow at most, for what is offered."""
    keys = args.keys - (1 if row.fault else 0)
    cap = keys * args.qps
    if row.accounts:
        n_acc = -(-args.keys // row.accounts[0])
        cap = min(cap, n_acc * row.accounts[1])
    if row.tpm and tokens_per_request:
        cap = min(cap, keys * row.tpm / 60.0 / tokens_per_request)
    return min(cap, row.rate)


class Captured(logging.Handler):
    """WARNING lines of the scheduler, to show the start-up account warning in the table."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass
class Result:
    row: Row
    offered: int = 0
    ok: int = 0
    failed: int = 0
    stale: int = 0
    dead_letters: int = 0
    rate: float = 0.0
    ideal: float = 0.0
    requests: int = 0
    ours_429: int = 0
    injected_429: int = 0
    tokens_per_request: float | None = None
    e2e_p95: float = float("nan")
    overhead_p95: float = float("nan")
    max_1s: int = 0
    after_401: int | None = None
    urgent: int = 0
    urgent_ok_in_time: int = 0
    warnings: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)
    accounted: bool = False

    @property
    def success(self) -> float:
        return self.ok / self.offered if self.offered else 0.0

    @property
    def share_429(self) -> float:
        return self.ours_429 / self.requests if self.requests else 0.0


def run_row(row: Row, args, template: AssessmentTask) -> Result:
    cap = Captured()
    logging.getLogger("hazardctl").addHandler(cap)
    try:
        with start_sim_process(sim_config(row, args)) as sim:
            keys = keys_config(row, args, sim.base_url)
            inp, out, dlq = QueueInput(), CollectOutput("results"), CollectOutput("dead-letters")
            trace: list[tuple] = []
            offered: dict = {}
            sched = Scheduler(keys, inp, out, dlq, ScheduleConfig(workers=row.workers, live_every=0), trace=trace)
            t0 = time.time() + 0.5
            feeder = threading.Thread(target=offer, args=(inp, template, row.rate, args.seconds, args.deadline, t0,
                                                          offered, row.refresh_share), daemon=True)
            feeder.start()
            asyncio.run(sched.run())
            feeder.join()
            stats = sim.stats()
    finally:
        logging.getLogger("hazardctl").removeHandler(cap)
    r = Result(row, offered=len(offered), warnings=[w for w in cap.lines if "account" in w])
    results = out.items
    by_status: dict[str, int] = {}
    seen = set()
    for x in results:
        by_status[x["status"]] = by_status.get(x["status"], 0) + 1
        seen.add(x["task_id"])
        if x["status"] != "ok":
            k = f"{x['status']}:{x.get('error_class') or '-'}"
            r.errors[k] = r.errors.get(k, 0) + 1
    r.ok, r.failed, r.stale = by_status.get("ok", 0), by_status.get("failed", 0), by_status.get("stale", 0)
    r.dead_letters = len(dlq.items)
    r.accounted = seen == set(offered) and len(results) == len(offered)
    warm = min(args.warmup, args.seconds / 4)
    ok = [x for x in results if x["status"] == "ok"]
    done_at = [x["times"]["result"] for x in ok]
    r.rate = sum(1 for t in done_at if t0 + warm <= t < t0 + args.seconds) / (args.seconds - warm)
    tot = stats["totals"]
    r.requests = tot["requests"]
    r.ours_429 = tot.get("refused_rate", 0) + tot.get("refused_tokens", 0) + tot.get("refused_surge", 0)
    r.injected_429 = tot.get("refused_storm", 0)
    if tot.get("admitted"):
        r.tokens_per_request = tot["tokens_admitted"] / tot["admitted"]
    r.ideal = ideal(row, args, r.tokens_per_request)
    r.max_1s = max(v["max_in_any_1s_window"] for k, v in stats["keys"].items() if k != BAD)
    steady = [x for x in ok if x["times"]["capture"] >= t0 + warm]
    r.e2e_p95 = pct([(x["times"]["result"] - x["times"]["capture"]) - (x["times"]["llm_end"] - x["times"]["llm_start"])
                     for x in steady], 95)
    r.overhead_p95 = pct([(prod - deq) - llm - wait for deq, wait, llm, prod, _ in trace], 95)
    if row.fault == "unauthorized":
        r.after_401 = stats["keys"][BAD]["requests_after_first_401"]
    urgent = {tid for tid, (_, reason, _) in offered.items() if reason != "refresh"}
    r.urgent = len(urgent)
    r.urgent_ok_in_time = sum(1 for x in ok if x["task_id"] in urgent and x["times"]["result"] <= offered[x["task_id"]][2])
    return r


# -- the table ------------------------------------------------------------------------------------

def checks(r: Result, args) -> list[tuple[str, bool]]:
    """(what, met) per target of the issue for this row."""
    row, out = r.row, []
    if row.name in ("tb49", "sw49", "fw49", "acct2"):
        out.append((f"achieved >= {args.min_rate:g}/s", r.rate >= args.min_rate * args.scale))
    if row.name in ("tb49", "sw49", "fw49", "tb45", "sw45", "fw45", "acct2", "acct1", "tokens", "one429", "one401"):
        out.append(("429s <= 0.5 %", r.share_429 <= 0.005))
    if row.name in ("tb49", "sw49", "fw49", "tb45", "sw45", "fw45", "acct2"):
        out.append(("success >= 99 %", r.success >= 0.99))
    if row.name in ("one429", "one401"):
        # 49/s offered to the nine keys left (43.3/s with the jitter margin): the lost key's share can
        # only be shed, so "success >= 99 %" cannot hold here; what must hold is that no task fails
        out.append(("no task failed (the lost share is shed, counted)", r.failed == 0 and r.dead_letters == 0))
    if row.check_e2e:
        out.append(("e2e-LLM P95 <= 150 ms", r.e2e_p95 <= 0.150))
    if row.name == "acct1":
        out.append(("achieved ~ 25/s (>= 23.5)", r.rate >= 23.5 * args.scale))
        out.append(("start-up WARNING", bool(r.warnings)))
    if row.name == "tokens":
        out.append(("within 5 % of ideal", r.rate >= 0.95 * r.ideal))
    if row.name == "one429":
        out.append(("drop <= its share (>= 47*45/50)", r.rate >= args.min_rate * 0.9 * args.scale))
    if row.name == "one401":
        out.append(("0 requests after first 401", (r.after_401 or 0) == 0))
    if row.name == "overload":
        out.append(("urgent ok in time >= 99 %", r.urgent and r.urgent_ok_in_time / r.urgent >= 0.99))
        out.append(("every task accounted for", r.accounted))
    out.append(("overhead P95 <= 10 ms", r.overhead_p95 <= 0.010))
    return out


def table(results: list[Result], args) -> tuple[str, bool]:
    head = ["row", "what", "offered/s", "ideal/s", "achieved/s", "429 %", "success", "e2e-LLM P95",
            "overhead P95", "max/key/1s", "targets"]
    lines, all_met = [], True
    for r in results:
        cs = checks(r, args)
        all_met &= all(ok for _, ok in cs)
        missed = [w for w, ok in cs if not ok]
        lines.append([r.row.name, r.row.what, f"{r.row.rate:g}", f"{r.ideal:.1f}", f"{r.rate:.1f}",
                      f"{100 * r.share_429:.2f}", f"{100 * r.success:.1f} %", f"{r.e2e_p95 * 1000:.0f} ms",
                      f"{r.overhead_p95 * 1000:.1f} ms", f"{r.max_1s}",
                      "all met" if not missed else "MISSED: " + "; ".join(missed)])
    widths = [max(len(str(x[i])) for x in [head] + lines) for i in range(len(head))]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    text = [fmt(head), "-" * (sum(widths) + 2 * len(widths))] + [fmt(x) for x in lines]
    return "\n".join(text), all_met


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="all", help="comma-separated row names or groups: " + ", ".join(
        [r.name for r in ROWS] + sorted(GROUPS)))
    ap.add_argument("--seconds", "--duration", dest="seconds", type=float, default=60.0,
                    help="seconds of offered load per row (default 60)")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds not counted in the steady figures (default 10)")
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument("--qps", type=float, default=5.0, help="per-key limit, enforced by the simulator")
    ap.add_argument("--jitter-ms", type=float, default=30.0, help="simulator: each request reaches the limiter 0..N ms late")
    ap.add_argument("--jitter-allowance-ms", type=float, default=40.0, help="ours: the pacing margin (api_keys.yaml)")
    ap.add_argument("--surge", action="store_true", help="simulator: surge protection on")
    ap.add_argument("--slow-start-s", type=float, default=2.0, help="ours: slow start ramp (api_keys.yaml slow_start_s; 4 with --surge)")
    ap.add_argument("--latency", default="uniform:1.0:2.0")
    ap.add_argument("--deadline", type=float, default=10.0, help="task deadline, seconds after capture")
    ap.add_argument("--strategy", default="round_robin")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = ap.parse_args()
    args.min_rate = 47.0
    args.scale = args.qps * args.keys / 50.0  # the targets assume 10 x 5 qps
    logging.basicConfig(level="WARNING", stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names: list[str] = []
    for part in args.rows.split(","):
        part = part.strip()
        for n in GROUPS.get(part, [part]):
            if n not in {r.name for r in ROWS}:
                ap.error(f"--rows: unknown row {n!r}")
            if n not in names:
                names.append(n)
    rows = [r for r in ROWS if r.name in names]

    crop, size = real_crop()
    template = task_template(crop, size)
    print(f"bench_schedule: {args.keys} keys x {args.qps:g} qps, LLM latency {args.latency}, simulator jitter "
          f"0-{args.jitter_ms:g} ms, our jitter allowance {args.jitter_allowance_ms:g} ms, crop {size[0]}x{size[1]} JPEG, "
          f"deadline capture+{args.deadline:g} s, {args.seconds:g} s per row, warm-up {min(args.warmup, args.seconds / 4):g} s",
          flush=True)
    results = []
    for row in rows:
        print(f"running {row.name}: {row.what} ({row.limiter}, {row.rate:g}/s offered)...", flush=True)
        results.append(run_row(row, args, template))
    text, met = table(results, args)
    print()
    print(text)
    for r in results:
        for w in r.warnings:
            print(f"  {r.row.name}: start-up WARNING: {w}")
        if r.errors:
            print(f"  {r.row.name}: not ok by status:class: {r.errors}")
        if r.row.name == "overload":
            print(f"  overload: new/changed ok within deadline {r.urgent_ok_in_time}/{r.urgent}; ok {r.ok} + failed "
                  f"{r.failed} + stale/shed {r.stale} = {r.ok + r.failed + r.stale} of {r.offered} offered")
        if r.row.name == "one429":
            print(f"  one429: {r.injected_429} injected 429s on {BAD} (not ours)")
        if r.tokens_per_request and r.row.tpm:
            print(f"  {r.row.name}: {r.tokens_per_request:.0f} tokens per request (simulator's count)")
    if args.json:
        args.json.write_text(json.dumps([{**vars(r), "row": r.row.name} for r in results], indent=2, default=str))
    print(f"\n{'all targets met' if met else 'SOME TARGETS MISSED'} (2-core shared machine: timings are noisy; "
          "rerun a row alone before trusting a miss)")
    return 1 if (not met and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
