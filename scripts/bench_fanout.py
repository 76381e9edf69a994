#!/usr/bin/env python3
"""Fan-out benchmark of `hazardctl consume`: N WebSocket clients, R results/s in, for D seconds.

Measures, per event, the time from the result being read by consume (`consumed_at`, stamped by its
input thread) to the moment the LAST of the N clients has it, and prints its percentiles next to a
bare `websockets.broadcast` server fed the very same event messages at the same times (its clock
starts when it reads the line from its stdin, as consume's does). Same run, same machine, same
clients: the ratio is the cost of consume's own work (validate, aggregate, encode once, route,
per-client flow control) over the library's plain broadcast.

Processes (so the measurement is honest): this driver; the server (consume, then the bare one);
the clients, spread over --client-procs processes. All clocks are time.time() on one host.

    .venv/bin/python scripts/bench_fanout.py                    # 200 clients, 100 results/s, 10 s
    .venv/bin/python scripts/bench_fanout.py --clients 50 --duration 3 --json bench-results/fanout.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LEVELS = ("none", "low", "medium", "high")


# ---- clients process ----------------------------------------------------------------------------

_SEQ = re.compile(rb'"seq":(\d+)')
_CONSUMED = re.compile(rb'"consumed_at":([0-9.]+)')


class RawClient(asyncio.Protocol):
    """A minimal WebSocket client (RFC 6455 framing, server frames are unmasked): cheap per message,
    so 200 of them in one process measure the server, not the client library."""

    def __init__(self, on_message, on_close):
        self.on_message, self.on_close = on_message, on_close
        self.buf = bytearray()
        self.handshaken = asyncio.get_running_loop().create_future()
        self.transport = None
        self.close_code: int | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        t = time.time()
        buf = self.buf
        buf += data
        if not self.handshaken.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.handshaken.set_exception(ConnectionError(bytes(buf[:80]).decode("latin-1")))
                return
            del buf[: end + 4]
            self.handshaken.set_result(None)
        pos = 0
        while len(buf) - pos >= 2:
            op, n = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if len(buf) - pos < head + n:
                break
            payload = bytes(buf[pos + head:pos + head + n])
            pos += head + n
            if op == 1:
                self.on_message(payload, t)
            elif op == 9:  # ping → pong (client frames are masked; a zero mask keeps the payload as is)
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif op == 8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        del buf[:pos]

    def connection_lost(self, exc) -> None:
        self.on_close(self.close_code)


async def run_raw_clients(url: str, n: int, record_first: str | None) -> None:
    import base64 as b64
    from urllib.parse import urlsplit

    last: dict[int, float] = {}
    count: dict[int, int] = {}
    consumed: dict[int, float | None] = {}
    closes: list[int | None] = []
    recorded: list[bytes] = []
    snapshots = 0
    ready = asyncio.Event()
    u = urlsplit(url)
    loop = asyncio.get_running_loop()

    def make(i: int):
        def on_message(payload: bytes, t: float) -> None:
            nonlocal snapshots
            m = _SEQ.search(payload)
            if payload.startswith(b'{"type":"snapshot"'):
                snapshots += 1
                if snapshots == n:
                    ready.set()
                return
            seq = int(m.group(1))
            if seq in count:
                count[seq] += 1
                last[seq] = max(last[seq], t)
            else:
                c = _CONSUMED.search(payload)
                count[seq], last[seq], consumed[seq] = 1, t, float(c.group(1)) if c else None
            if i == 0 and record_first:
                recorded.append(payload)
        return RawClient(on_message, closes.append)

    conns = []
    for i in range(n):
        _t, proto = await loop.create_connection(lambda i=i: make(i), u.hostname, u.port)
        key = b64.b64encode(os.urandom(16)).decode()
        proto.transport.write((f"GET {u.path or '/'}{'?' + u.query if u.query else ''} HTTP/1.1\r\n"
                               f"Host: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        conns.append(proto)
    await asyncio.gather(*(p.handshaken for p in conns))
    await asyncio.wait_for(ready.wait(), 120)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # "stop"
    for p in conns:
        p.transport.abort()
    await asyncio.sleep(0.1)
    if record_first:
        Path(record_first).write_bytes(b"\n".join(recorded) + b"\n")
    dropped = sum(1 for c in closes if c not in (None, 1000, 1001, 1005))
    print(json.dumps({"seqs": {s: [last[s], count[s], consumed[s]] for s in count}, "dropped": dropped}), flush=True)


async def run_clients(url: str, n: int, record_first: str | None) -> None:
    """Connect n clients, wait for "go"/"stop" on stdin; print per-seq (last receive, count, consumed_at)."""
    import orjson
    from websockets.asyncio.client import connect

    last: dict[int, float] = {}
    count: dict[int, int] = {}
    consumed: dict[int, float | None] = {}
    closes: list[int | None] = []
    recorded: list[bytes] = []
    ready = asyncio.Event()
    connected = 0

    async def client(i: int) -> None:
        nonlocal connected
        async with connect(url, max_size=None, compression=None, open_timeout=60) as ws:
            first = True
            try:
                async for msg in ws:
                    t = time.time()
                    if first:  # the snapshot
                        first = False
                        connected += 1
                        if connected == n:
                            ready.set()
                        continue
                    m = orjson.loads(msg)
                    seq = m["seq"]
                    if seq in count:
                        count[seq] += 1
                        last[seq] = max(last[seq], t)
                    else:
                        count[seq], last[seq], consumed[seq] = 1, t, m.get("consumed_at")
                    if i == 0 and record_first:
                        recorded.append(msg if isinstance(msg, bytes) else msg.encode())
            finally:
                closes.append(ws.close_code)

    tasks = [asyncio.create_task(client(i)) for i in range(n)]
    await asyncio.wait_for(ready.wait(), 120)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # "stop"
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if record_first:
        Path(record_first).write_bytes(b"\n".join(recorded) + b"\n")
    dropped = sum(1 for c in closes if c not in (None, 1000, 1001, 1005))
    print(json.dumps({"seqs": {s: [last[s], count[s], consumed[s]] for s in count}, "dropped": dropped}), flush=True)


# ---- bare broadcast server ----------------------------------------------------------------------


async def run_bare_server() -> None:
    """A plain websockets server: each stdin line is one message, broadcast as soon as it is read."""
    import orjson
    from websockets.asyncio.server import broadcast, serve

    clients: set = set()
    sent: dict[int, float] = {}
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    async def handler(ws) -> None:
        clients.add(ws)
        try:
            await ws.send('{"type":"snapshot","seq":0}')
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    def publish(line: bytes, t_read: float) -> None:
        sent[orjson.loads(line)["seq"]] = t_read
        broadcast(clients, line, text=True)

    def reader() -> None:
        for line in sys.stdin.buffer:
            line = line.rstrip(b"\n")
            if line:
                loop.call_soon_threadsafe(publish, line, time.time())
        loop.call_soon_threadsafe(done.set)

    async with serve(handler, "127.0.0.1", 0, compression=None, write_limit=64 * 1024, max_size=64 * 1024) as srv:
        print(f"port {srv.sockets[0].getsockname()[1]}", flush=True)
        threading.Thread(target=reader, daemon=True).start()
        await done.wait()
        print(json.dumps({"sent": sent}), flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # wait for the driver (stdin is closed: returns at once)
        while any(ws.transport.get_write_buffer_size() for ws in clients):  # let the clients have it all
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)


# ---- driver -------------------------------------------------------------------------------------


def make_results(rate: float, duration: float, cameras: int, seed: int = 7) -> list[bytes]:
    """Open-loop input: rate × duration results over `cameras` cameras × 3 groups, levels varying."""
    from hazardctl.synthetic import risk_result

    rng = random.Random(seed)
    start = time.time()
    out = []
    for i in range(int(rate * duration)):
        cam = f"cam-{rng.randrange(cameras):03d}"
        level = rng.choice(LEVELS)
        r = risk_result(cam, f"{cam}-g{rng.randrange(3) + 1}", i, start + i / rate, level=level)
        out.append(r.model_dump_json().encode() + b"\n")
    return out


def pace(write, lines: list[bytes], rate: float) -> float:
    """Write lines at `rate` per second (open loop, from a fixed start); returns the start time."""
    t0 = time.perf_counter()
    for i, line in enumerate(lines):
        ahead = t0 + i / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        write(line)
    return t0


class Clients:
    def __init__(self, url: str, total: int, procs: int, record: str | None, lib: str):
        per = [total // procs + (1 if i < total % procs else 0) for i in range(procs)]
        self.procs = [subprocess.Popen([sys.executable, __file__, "--role", "clients", "--url", url, "--client-lib", lib,
                                        "--clients", str(n)] + (["--record", record] if record and i == 0 else []),
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
                      for i, n in enumerate(per) if n]
        for p in self.procs:
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise SystemExit(f"clients did not connect: {line!r}")

    def finish(self) -> tuple[dict[int, list], int]:
        merged: dict[int, list] = {}
        dropped = 0
        for p in self.procs:
            p.stdin.write("stop\n")
            p.stdin.flush()
        for p in self.procs:
            out = json.loads(p.stdout.readline())
            p.wait(30)
            dropped += out["dropped"]
            for s, (last, n, consumed) in out["seqs"].items():
                m = merged.setdefault(int(s), [0.0, 0, consumed])
                m[0], m[1] = max(m[0], last), m[1] + n
        return merged, dropped


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (Linux /proc): a figure that contention does not inflate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {k: float("nan") for k in ("p50", "p90", "p95", "p99", "max")}
    v = sorted(values)

    def at(q: float) -> float:  # nearest-rank, exact on the samples we have
        return v[min(len(v) - 1, max(0, int(round(q * len(v) + 0.5)) - 1))]

    return {"p50": at(0.50), "p90": at(0.90), "p95": at(0.95), "p99": at(0.99), "max": v[-1]}


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def start_consume(args) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen([sys.executable, "-m", "hazardctl.cli", "consume", "--ws", "127.0.0.1:0",
                               "--client-queue", str(args.client_queue)],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=env, cwd=ROOT)
    pattern = re.compile(rb"serving websocket=ws://[^ ]+:(\d+)/ws")
    for line in server.stderr:
        m = pattern.search(line)
        if m:
            threading.Thread(target=server.stderr.read, daemon=True).start()  # keep its stderr drained
            return server, int(m.group(1))
    raise SystemExit("consume did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--rate", type=float, default=100.0, help="results per second into consume")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of input")
    ap.add_argument("--cameras", type=int, default=50)
    ap.add_argument("--client-procs", type=int, default=2, help="processes the clients are spread over")
    ap.add_argument("--client-queue", type=int, default=256)
    ap.add_argument("--client-lib", choices=["raw", "websockets"], default="raw",
                    help="clients: a minimal frame reader (default, cheap per message) or the websockets library")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of (consume, bare), alternating the order")
    ap.add_argument("--target-ms", type=float, default=50.0, help="P95 goal for consume (exit 1 above it)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--role", choices=["driver", "clients", "bare"], default="driver", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--record", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.role == "clients":
        run = run_raw_clients if args.client_lib == "raw" else run_clients
        asyncio.run(run(args.url, args.clients, args.record))
        return
    if args.role == "bare":
        asyncio.run(run_bare_server())
        return

    print(f"fan-out: {args.clients} clients ({args.client_lib} frame reader) in {args.client_procs} processes, "
          f"{args.rate:.0f} results/s for {args.duration:.0f} s over {args.cameras} cameras, "
          f"{args.rounds} round(s)", flush=True)
    consume_runs: list[Phase] = []
    bare_runs: list[Phase] = []
    events: list[bytes] = []
    for r in range(args.rounds):  # A B, then B A, ...: both sides see the same share of a noisy machine
        for side in (("consume", "bare") if r % 2 == 0 else ("bare", "consume")):
            if side == "consume":
                phase, recorded = consume_phase(args)
                consume_runs.append(phase)
                events = events or recorded
            else:
                if not events:
                    phase, events = consume_phase(args)
                    consume_runs.append(phase)
                bare_runs.append(bare_phase(args, events))

    c, b = Phase.merge(consume_runs), Phase.merge(bare_runs)
    cp, bp = percentiles(c.latencies), percentiles(b.latencies)
    ok = cp["p95"] <= args.target_ms and not c.dropped and not c.missing
    print(f"consume: {int(c.results)} results read, {c.events} events ({c.events / max(1, c.results):.2f} per result), "
          f"{c.delivered} messages delivered; events missing at some client: {c.missing}; "
          f"clients dropped: {c.dropped}")
    print(f"bare:    {b.events} events, {b.delivered} messages delivered; missing: {b.missing}")
    print(f"{'from read to the last of ' + str(args.clients) + ' clients':44s} {'p50':>8s} {'p90':>8s} "
          f"{'p95':>8s} {'p99':>8s} {'max':>8s}")
    for name, p in (("hazardctl consume (result read -> event)", cp), ("bare websockets.broadcast (line read ->)", bp)):
        print(f"{name:44s} " + " ".join(f"{p[k]:6.1f}ms" for k in ("p50", "p90", "p95", "p99", "max")))
    ratio = cp["p95"] / bp["p95"] if bp["p95"] > 0 else float("nan")
    c_us, b_us = c.cpu / max(1, c.delivered) * 1e6, b.cpu / max(1, b.delivered) * 1e6
    print(f"server CPU per delivered message: consume {c_us:.1f} us (all of it: input, validation, board, encoding, "
          f"fan-out), bare broadcast {b_us:.1f} us: ratio {c_us / max(b_us, 1e-9):.2f}x")
    print(f"ratio consume / bare broadcast at p95: {ratio:.2f}x   goal p95 <= {args.target_ms:.0f} ms: "
          f"{'PASS' if ok else 'FAIL'}   (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "clients": args.clients, "rate": args.rate, "duration": args.duration, "rounds": args.rounds,
            "events": c.events, "results_read": c.results, "missing": c.missing, "clients_dropped": c.dropped,
            "consume_ms": cp, "bare_broadcast_ms": bp, "ratio_p95": ratio, "target_ms": args.target_ms, "pass": ok,
            "server_cpu_us_per_message": {"consume": c_us, "bare": b_us}, "loadavg": os.getloadavg()[0],
        }, indent=2))
    sys.exit(0 if ok else 1)


class Phase:
    def __init__(self, latencies: list[float], events: int, delivered: int, missing: int, cpu: float,
                 dropped: int = 0, results: float = 0.0):
        self.latencies, self.events, self.delivered, self.missing = latencies, events, delivered, missing
        self.cpu, self.dropped, self.results = cpu, dropped, results

    @staticmethod
    def merge(runs: list[Phase]) -> Phase:
        return Phase([x for r in runs for x in r.latencies], sum(r.events for r in runs),
                     sum(r.delivered for r in runs), sum(r.missing for r in runs), sum(r.cpu for r in runs),
                     sum(r.dropped for r in runs), sum(r.results for r in runs))


def consume_phase(args) -> tuple[Phase, list[bytes]]:
    """hazardctl consume with the results on its stdin, paced; returns the figures and the events."""
    import tempfile

    results = make_results(args.rate, args.duration, args.cameras)  # same content, frame times from now

    record = tempfile.NamedTemporaryFile(prefix="fanout-events-", suffix=".jsonl", delete=False).name
    server, port = start_consume(args)
    clients = Clients(f"ws://127.0.0.1:{port}/ws", args.clients, args.client_procs, record, args.client_lib)
    cpu0 = cpu_seconds(server.pid)
    pace(lambda line: (server.stdin.write(line), server.stdin.flush()), results, args.rate)
    time.sleep(1.5)
    cpu = cpu_seconds(server.pid) - cpu0
    seqs, _ = clients.finish()
    dropped = int(metric(port, "hazardctl_consume_clients_dropped_total"))
    read = metric(port, "hazardctl_messages_in_total")
    server.stdin.close()
    server.terminate()
    server.wait(30)
    complete = {s: v for s, v in seqs.items() if v[1] == args.clients}
    lat = [(last - consumed) * 1000 for last, _n, consumed in complete.values() if consumed]
    events = [line for line in Path(record).read_bytes().splitlines() if line]
    os.unlink(record)
    return Phase(lat, len(seqs), sum(v[1] for v in seqs.values()), len(seqs) - len(complete), cpu, dropped,
                 read), events


def bare_phase(args, events: list[bytes]) -> Phase:
    """The same event messages, at the same offsets, through a bare websockets.broadcast server."""
    bare = subprocess.Popen([sys.executable, __file__, "--role", "bare"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=ROOT)
    port = int(bare.stdout.readline().split()[1])
    clients = Clients(f"ws://127.0.0.1:{port}/ws", args.clients, args.client_procs, None, args.client_lib)
    offsets = [json.loads(line)["consumed_at"] for line in events]
    cpu0 = cpu_seconds(bare.pid)
    t0 = time.perf_counter()
    for line, at in zip(events, offsets):
        ahead = t0 + (at - offsets[0]) - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        bare.stdin.write(line + b"\n")
        bare.stdin.flush()
    bare.stdin.close()  # the server broadcasts what it has read, reports, then waits for its clients
    sent = {int(k): v for k, v in json.loads(bare.stdout.readline())["sent"].items()}
    time.sleep(1.5)
    cpu = cpu_seconds(bare.pid) - cpu0
    seqs, _ = clients.finish()
    bare.wait(30)
    complete = {s: v for s, v in seqs.items() if v[1] == args.clients and s in sent}
    lat = [(last - sent[s]) * 1000 for s, (last, _n, _c) in complete.items()]
    return Phase(lat, len(seqs), sum(v[1] for v in seqs.values()), len(seqs) - len(complete), cpu)


if __name__ == "__main__":
    main()
