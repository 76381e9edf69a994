#!/usr/bin/env python3
"""What the incident store costs the live push: result → WebSocket event latency of `hazardctl consume`
at R results/s, store-less, with the SQLite store and with the PostgreSQL store, in the same run.

Each mode runs the real consume process (results on its stdin, paced by this driver) with one
WebSocket client in this driver. Every result is hot and changes its incident's description, so each
one is an incident event AND a store write (incident upsert, result row, a new evidence file of
~50 KB: no deduplication helps). Latency per event = the client's receive time − `consumed_at`
(stamped by consume's input thread when it read the line); one host, one clock. PostgreSQL is a
throw-away server (tests/pg_util.py: Debian's binaries, a temp dir, a free port). After each mode
the driver checks that the store wrote every result (nothing queued, nothing dropped).

    .venv/bin/python scripts/bench_store.py                        # 50/s, 20 s per mode
    .venv/bin/python scripts/bench_store.py --duration 5 --modes none,sqlite
    .venv/bin/python scripts/bench_store.py --rounds 2              # none, sqlite, pg, pg, sqlite, none
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hazardctl.synthetic import risk_result  # noqa: E402

READY = re.compile(rb"serving websocket=ws://[^ ]+:(\d+)/ws http=http://[^ ]+:(\d+)/")


def percentiles(values: list[float]) -> dict[str, float]:
    s = sorted(values)

    def at(q: float) -> float:  # nearest rank
        return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))] if s else float("nan")

    return {"n": len(s), "p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": s[-1] if s else float("nan")}


def make_results(rate: float, duration: float, cameras: int) -> list[bytes]:
    crop = (ROOT / "tests" / "data" / "zidane.jpg").read_bytes()
    out = []
    t = time.time()
    for i in range(int(rate * duration)):
        cam = f"cam-{i % cameras:03d}"
        r = risk_result(cam, f"{cam}-g1", i, t, level=("medium", "high")[i % 2], description=f"scene {i}",
                        crop_b64=base64.b64encode(crop + i.to_bytes(4, "big")).decode())  # a new crop each time
        r.prompt_version = "bench"
        out.append(r.model_dump_json().encode() + b"\n")
    return out


def start_consume(store_args: list[str]) -> tuple[subprocess.Popen, int, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "hazardctl.cli", "consume", "--ws", "127.0.0.1:0", "--http",
                          "127.0.0.1:0", "--quiet-period", "600", "--group-ttl", "1200", *store_args],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    for line in p.stderr:
        m = READY.search(line)
        if m:
            threading.Thread(target=p.stderr.read, daemon=True).start()
            return p, int(m.group(1)), int(m.group(2))
    raise SystemExit("consume did not start: " + " ".join(store_args))


def get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        body = r.read()
    return json.loads(body) if path != "/metrics" else body.decode()


def metric(port: int, name: str, label: str = "") -> float:
    return sum(float(x.rsplit(" ", 1)[1]) for x in get(port, "/metrics").splitlines()
               if x.startswith(name) and label in x and not x.startswith("#"))


async def run_mode(store_args: list[str], lines: list[bytes], rate: float) -> dict:
    from websockets.asyncio.client import connect

    p, ws_port, http_port = start_consume(store_args)
    latencies: list[float] = []
    try:
        async with connect(f"ws://127.0.0.1:{ws_port}/ws", max_size=None) as ws:
            await ws.recv()  # the snapshot
            done = asyncio.Event()

            async def reader() -> None:
                while len(latencies) < len(lines):
                    raw = await ws.recv()
                    t = time.time()
                    m = json.loads(raw)
                    if m.get("type") == "incident" and m.get("consumed_at"):
                        latencies.append(t - m["consumed_at"])
                done.set()

            task = asyncio.create_task(reader())

            def feed() -> None:
                start = time.perf_counter()
                for i, line in enumerate(lines):
                    delay = start + i / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    p.stdin.write(line)
                    p.stdin.flush()

            await asyncio.to_thread(feed)
            try:
                await asyncio.wait_for(done.wait(), 20)
            except TimeoutError:
                pass
            task.cancel()
        stored = None
        if store_args:
            deadline = time.monotonic() + 60
            while get(http_port, "/healthz").get("store_pending", 0) and time.monotonic() < deadline:
                time.sleep(0.2)
            health = get(http_port, "/healthz")
            stored = {"written": metric(http_port, "hazardctl_store_writes_total", 'outcome="written"'),
                      "dropped": health.get("store_dropped"), "pending": health.get("store_pending")}
        return {"latencies": latencies, "stored": stored, "events": len(latencies)}
    finally:
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def run_one(mode: str, tmp: str, lines: list[bytes], args, pg_holder: list) -> dict:
    """One mode once: consume with that store (a fresh database each time), the same results."""
    run = f"{mode}-{time.monotonic_ns()}"
    if mode == "none":
        store_args: list[str] = []
    elif mode == "sqlite":
        store_args = ["--data-dir", f"{tmp}/{run}"]
    elif mode == "postgresql":
        from tests.pg_util import PostgresServer

        if not pg_holder:
            pg_holder.append(PostgresServer().start())
        store_args = ["--store", pg_holder[0].database(run.replace("-", "_")), "--data-dir", f"{tmp}/{run}"]
    else:
        raise SystemExit(f"--modes: unknown mode {mode!r} (none, sqlite, postgresql)")
    print(f"bench-store: {mode}: {len(lines)} results at {args.rate:g}/s …", flush=True)
    return asyncio.run(run_mode(store_args, lines, args.rate))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=50.0, help="results per second")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of input per mode")
    ap.add_argument("--cameras", type=int, default=50)
    ap.add_argument("--modes", default="none,sqlite,postgresql")
    ap.add_argument("--target-ms", type=float, default=20.0, help="P95 goal for the store modes (exit 1 above it)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of all modes, the order reversed every other round")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    lines = make_results(args.rate, args.duration, args.cameras)
    rows: dict[str, dict] = {}
    pg_holder: list = []
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        try:
            runs: dict[str, list[dict]] = {m: [] for m in modes}
            for k in range(args.rounds):  # alternate the order so every mode sees the same share of a noisy box
                for mode in (modes if k % 2 == 0 else modes[::-1]):
                    runs[mode].append(run_one(mode, tmp, lines, args, pg_holder))
            for mode, rs in runs.items():
                lat = [x for r in rs for x in r["latencies"]]
                stored = [r["stored"] for r in rs]
                rows[mode] = {**percentiles(lat), "events": sum(r["events"] for r in rs),
                              "stored": None if stored[0] is None else {
                                  "written": sum(x["written"] for x in stored), "dropped": sum(x["dropped"] for x in stored),
                                  "pending": sum(x["pending"] for x in stored)}}
        finally:
            if pg_holder:
                pg_holder[0].cleanup()
    base = rows.get("none", {}).get("p95")
    print(f"\nresult → WebSocket event, {args.rate:g} results/s, {args.duration:g} s per mode, every result an event "
          "and a store write (new ~50 KB crop each)")
    print(f"{'mode':<11} {'events':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p95/none':>8}  stored")
    failed = False
    for mode, r in rows.items():
        ratio = f"{r['p95'] / base:.2f}" if base else "–"
        st = r["stored"]
        stored = "–" if st is None else f"written {st['written']:.0f}, dropped {st['dropped']}, pending {st['pending']}"
        print(f"{mode:<11} {r['events']:>6} {r['p50'] * 1e3:>8.2f} {r['p95'] * 1e3:>8.2f} {r['p99'] * 1e3:>8.2f} "
              f"{r['max'] * 1e3:>8.2f} {ratio:>8}  {stored}")
        if mode != "none":
            ok = (r["p95"] * 1e3 <= args.target_ms and st is not None
                  and st["written"] >= len(lines) * args.rounds and not st["dropped"])
            failed |= not ok
        failed |= r["events"] < len(lines) * args.rounds
    print(f"goal: store modes P95 ≤ {args.target_ms:g} ms with every result written: {'met' if not failed else 'NOT met'}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rate": args.rate, "duration": args.duration, "rounds": args.rounds,
                                               "modes": rows}, indent=2))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
