#!/usr/bin/env python
"""Is the LLM simulator ever the bottleneck? Open-loop load against it and against a bare server.

Runs, in the same session and with the same client:
  - baseline: a bare aiohttp handler in its own process (read body, sleep the same fixed latency,
    return a constant JSON answer), and
  - llm-sim: `tools.llm_sim` in its own process (start_sim_process), latency fixed:LATENCY,
    10 keys in 2 accounts, request and token limits far above the offered rate (so no 429s, but
    every rule runs: token counting, key and account limiters of --limiter, the /requests log),
at each offered rate for DURATION seconds. The load generator (this process, aiohttp client) sends
request i at t0 + i/rate whatever happened to earlier ones (open loop), with a real JPEG crop as a
data URL. It reports achieved rate, client-side p50/p95/p99 minus the configured latency (the
server's overhead plus the client's own), the server process's CPU % of one core, and the ratios
llm-sim / baseline.

Usage: .venv/bin/python scripts/bench_llm_sim.py [--rates 100,300] [--duration 10] [--latency 0.05]
       [--limiter sliding-window|token-bucket|fixed-window]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONSTANT = json.dumps({
    "id": "chatcmpl-const", "object": "chat.completion", "created": 0, "model": "const",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content":
                 '{"level":"none","risk_types":["normal traffic flow"],"description":"-","confidence":0.9,'
                 '"danger_object_ids":[]}'}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}).encode()


def serve_baseline(latency: float) -> None:
    """The bare server: the least an aiohttp endpoint with the same latency can do."""
    import signal

    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(latency)
        return web.Response(body=CONSTANT, content_type="application/json")

    async def main() -> None:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        print(f"http://127.0.0.1:{runner.addresses[0][1]}/v1", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(sorted_xs: list[float], q: float) -> float:
    if not sorted_xs:
        return float("nan")
    return sorted_xs[min(len(sorted_xs) - 1, int(q * len(sorted_xs)))]


async def offer(url: str, rate: float, duration: float, bodies: list[bytes], keys: list[str]) -> dict:
    """Open-loop load: request i is sent at t0 + i/rate; latency is measured from its send time."""
    import aiohttp

    n = int(rate * duration)
    lat: list[float] = []
    late: list[float] = []
    codes: dict[str, int] = {}
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.2
        done_at = [t0]

        async def one(i: int) -> None:
            due = t0 + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            start = loop.time()
            late.append(start - due)
            try:
                async with s.post(url + "/chat/completions", data=bodies[i % len(bodies)],
                                  headers={"Authorization": f"Bearer {keys[i % len(keys)]}",
                                           "Content-Type": "application/json"}) as r:
                    await r.read()
                    code = str(r.status)
            except Exception as e:  # a failed request is a result, not a crash of the benchmark
                code = type(e).__name__
            end = loop.time()
            codes[code] = codes.get(code, 0) + 1
            if code == "200":
                lat.append(end - start)
            done_at[0] = max(done_at[0], end)

        await asyncio.gather(*[one(i) for i in range(n)])
    lat.sort()
    late.sort()
    return {"offered": rate, "sent": n, "ok": codes.get("200", 0), "codes": codes,
            "achieved": codes.get("200", 0) / max(1e-9, done_at[0] - t0),
            "p50": pct(lat, 0.5), "p95": pct(lat, 0.95), "p99": pct(lat, 0.99),
            "client_late_p95": pct(late, 0.95)}


def start_baseline(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve-baseline", "--latency", str(latency)],
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="100,300", help="offered rates, requests/s, comma-separated")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per rate")
    ap.add_argument("--latency", type=float, default=0.05, help="fixed latency of both servers, s")
    ap.add_argument("--image", default=str(ROOT / "tests/data/zidane.jpg"), help="JPEG sent as the crop")
    ap.add_argument("--json", default=str(ROOT / "bench-results/llm_sim.json"), help="write results here")
    ap.add_argument("--limiter", default="sliding-window", help="the simulator's limiter model (limits far above the rate)")
    ap.add_argument("--serve-baseline", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_baseline:
        serve_baseline(args.latency)
        return 0

    from tools.llm_sim import SimConfig, generated_keys, start_sim_process
    from tools.llm_sim.config import SimAccount, grouped_accounts

    # every rule on the request path: key and account limits on requests and tokens, all far above the rate
    keys = generated_keys(10, qps=100_000, tpm=10**12)
    accounts = grouped_accounts(keys, 5, SimAccount(qps=100_000, rpm=10**9, tpm=10**12))
    image = "data:image/jpeg;base64," + base64.b64encode(Path(args.image).read_bytes()).decode()
    bodies = [json.dumps({"model": "qwen-vl-plus", "messages": [{"role": "user", "content": [
        {"type": "text", "text": f"Assess group {i}: object_id 0 person, object_id 1 car. One JSON object."},
        {"type": "image_url", "image_url": {"url": image}}]}]}).encode() for i in range(64)]
    secrets = [k.api_key for k in keys]
    print(f"body {len(bodies[0]) / 1024:.0f} KiB, latency fixed:{args.latency}, {args.duration:g} s per rate, "
          f"{os.cpu_count()} CPUs (load {os.getloadavg()[0]:.1f})")

    sim = start_sim_process(SimConfig(keys=keys, accounts=accounts, limiter=args.limiter,
                                      latency=f"fixed:{args.latency}", port=0))
    base_proc, base_url = start_baseline(args.latency)
    results = []
    try:
        for rate in [float(r) for r in args.rates.split(",")]:
            for name, url, pid in (("baseline", base_url, base_proc.pid), ("llm-sim", sim.base_url, sim.pid)):
                c0, w0 = cpu_seconds(pid), time.monotonic()
                r = asyncio.run(offer(url, rate, args.duration, bodies, secrets))
                r.update(server=name, cpu_pct=100 * (cpu_seconds(pid) - c0) / (time.monotonic() - w0))
                results.append(r)
        stats = sim.stats()["totals"]
    finally:
        sim.stop()
        base_proc.terminate()
        base_proc.wait(10)

    lat = args.latency
    print(f"\n{'server':9} {'offered':>7} {'achieved':>8} {'ok':>6} {'p50-lat':>8} {'p95-lat':>8} {'p99-lat':>8} "
          f"{'cpu%':>5} {'late95':>7}  codes")
    for r in results:
        print(f"{r['server']:9} {r['offered']:7.0f} {r['achieved']:8.1f} {r['ok']:6d} "
              f"{1000 * (r['p50'] - lat):6.1f}ms {1000 * (r['p95'] - lat):6.1f}ms {1000 * (r['p99'] - lat):6.1f}ms "
              f"{r['cpu_pct']:5.1f} {1000 * r['client_late_p95']:5.1f}ms  {r['codes']}")
    print("\nllm-sim / baseline (same client, same run):")
    for base, sim_r in zip(results[0::2], results[1::2]):
        over = [(sim_r[q] - lat) / max(1e-6, base[q] - lat) for q in ("p50", "p95")]
        print(f"  {base['offered']:.0f}/s: achieved {sim_r['achieved'] / base['achieved']:.2f}x, "
              f"overhead p50 {over[0]:.2f}x p95 {over[1]:.2f}x, server CPU {sim_r['cpu_pct'] / max(0.1, base['cpu_pct']):.2f}x "
              f"({sim_r['cpu_pct']:.0f}% vs {base['cpu_pct']:.0f}% of one core)")
    print(f"  simulator's own count: {stats['ok']} ok, {stats['rate_limited_429']} 429, requests {stats['requests']}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"latency": lat, "results": results}, indent=1))
    print(f"  results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
