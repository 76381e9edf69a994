"""A simulated OpenAI-compatible vision LLM on loopback, for the loadtest, benchmarks and the demo.

It behaves like DashScope / OpenAI from the scheduler's side: `POST /v1/chat/completions` with a
Bearer key answers one strict JSON RiskAssessment after a configurable latency; every key has
server-side limits (qps token bucket, rpm window) that answer 429 + Retry-After; faults (a revoked
key, 429 storms, 5xx bursts, hangs, malformed output, latency spikes) can be injected per key at
start or at run time (`POST /faults`). `GET /stats` counts what each key saw, so a test can check
how the client behaved (did it pace itself, did it stop using a key after a 401).

Where things are (package `tools.llm_sim`): the rules are pure modules (`limits`: rate limits;
`answers`: answers, latency, faults); `config` is the config; `app` is the aiohttp app. This
module runs it three ways: `run()` for the `llm-sim` command, `SimServer` on a thread (tests),
`start_sim_process()` in its own OS process (benchmarks, loadtest: no GIL shared with the client).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable

from hazardctl.errors import ConfigError, ServiceUnavailable
from tools.llm_sim.app import Sim, listen, url_for
from tools.llm_sim.config import SimConfig, SimKey, UnknownKey, build_config, generated_keys

__all__ = ["SimConfig", "SimKey", "SimProcess", "SimServer", "UnknownKey", "build_config", "generated_keys", "run",
           "start_sim_process"]

log = logging.getLogger("hazardctl.llm_sim")

# ------------------------------------------------------------------------- in a thread (tests)


class SimServer:
    """The simulator on a background thread with its own event loop: `with SimServer(cfg) as sim:`."""

    def __init__(self, cfg: SimConfig):
        self.cfg = cfg
        self.sim = Sim(cfg)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return url_for(self.cfg.host, self.port)

    def start(self) -> "SimServer":
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                runner, self.port = loop.run_until_complete(listen(self.sim, self.cfg.host, self.cfg.port))
            except BaseException as e:  # reported to start()'s caller
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=main, name="llm-sim", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread and self._loop:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._thread = None

    def _on_loop(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        async def call() -> Any:
            return fn(*args, **kw)

        assert self._loop is not None, "SimServer is not started"
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=10)

    def stats(self) -> dict[str, Any]:
        return self._on_loop(self.sim.stats)

    def requests(self, limit: int | None = None, key: str | None = None) -> list[dict[str, Any]]:
        """The last requests the server received (GET /requests), oldest first."""
        return self._on_loop(self.sim.requests, limit, key)

    def set_fault(self, name: str, fault: str | None, **params: Any) -> dict[str, Any]:
        return self._on_loop(self.sim.set_fault, name, fault, **params)

    def set_answer_mix(self, spec: str) -> dict[str, Any]:
        return self._on_loop(self.sim.set_answer_mix, spec)

    def reset_stats(self) -> None:
        self._on_loop(self.sim.reset_stats)

    def __enter__(self) -> "SimServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------- in a process (benchmarks)


class SimProcess:
    """The simulator in its own OS process (no shared GIL); the same methods, over HTTP."""

    def __init__(self, proc: subprocess.Popen, base_url: str):
        self.proc = proc
        self.base_url = base_url
        self.root = base_url.removesuffix("/v1")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _http(self, method: str, path: str, body: dict | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.root + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            error = UnknownKey if e.code == 404 else ConfigError
            raise error(json.loads(e.read())["error"]["message"]) from None

    def stats(self) -> dict[str, Any]:
        return self._http("GET", "/stats")

    def requests(self, limit: int | None = None, key: str | None = None) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({k: v for k, v in (("limit", limit), ("key", key)) if v})
        return self._http("GET", "/requests" + (f"?{query}" if query else ""))["requests"]

    def set_fault(self, name: str, fault: str | None, **params: Any) -> dict[str, Any]:
        return self._http("POST", "/faults", {"key": name, "fault": fault, **params})

    def set_answer_mix(self, spec: str) -> dict[str, Any]:
        return self._http("POST", "/answer-mix", {"mix": spec})

    def reset_stats(self) -> None:
        self._http("POST", "/reset-stats", {})

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait; returns the exit code (0 for a clean stop)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe:
                pipe.close()
        return self.proc.returncode

    def __enter__(self) -> "SimProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sim_process(cfg: SimConfig, startup_timeout: float = 30.0) -> SimProcess:
    """Run the simulator as `python -m tools.llm_sim` and wait for its URL.

    The config goes in as one JSON line on stdin, which then stays open: if this process dies
    without calling stop(), the pipe closes and the simulator exits instead of lingering.
    """
    proc = subprocess.Popen([sys.executable, "-m", "tools.llm_sim"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert proc.stdin and proc.stdout
    proc.stdin.write(cfg.model_dump_json().encode() + b"\n")
    proc.stdin.flush()
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    ready = sel.select(startup_timeout)
    sel.close()
    line = proc.stdout.readline().decode().strip() if ready else ""
    if not line.startswith("http"):
        proc.kill()
        proc.wait()
        raise ServiceUnavailable(f"llm-sim process did not start within {startup_timeout:g} s (exit {proc.returncode})")
    return SimProcess(proc, line)


# ---------------------------------------------------------------------------------- the command


def run(cfg: SimConfig, stop_on_stdin_eof: bool = False) -> None:
    """Serve until SIGTERM/SIGINT (or EOF on stdin); print the base URL (one line on stdout) once listening."""
    asyncio.run(_serve(cfg, stop_on_stdin_eof))


async def _serve(cfg: SimConfig, stop_on_stdin_eof: bool) -> None:
    sim = Sim(cfg)
    runner, port = await listen(sim, cfg.host, cfg.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if stop_on_stdin_eof:  # the parent of start_sim_process() is gone
        fd = sys.stdin.fileno()

        def on_stdin() -> None:
            if not os.read(fd, 4096):
                loop.remove_reader(fd)
                stop.set()

        loop.add_reader(fd, on_stdin)
    if cfg.metrics_port is not None:
        from prometheus_client import REGISTRY

        from hazardctl.metrics import serve_metrics
        from tools.llm_sim.metrics import SimCollector

        REGISTRY.register(SimCollector(sim.stats))
        serve_metrics(cfg.metrics_port, cfg.host)
    print(url_for(cfg.host, port), flush=True)
    faults = {k.name: k.fault.kind for k in cfg.keys if k.fault}
    faults.update({k.name: "billing" for k in cfg.keys if k.billing})
    log.info("llm-sim: %d keys (qps %s), %d accounts, limiter %s%s, jitter 0..%g ms, %s errors%s, latency %s, "
             "model %s, seed %d%s", len(cfg.keys), ",".join(sorted({f"{k.qps:g}" for k in cfg.keys})),
             len(cfg.accounts), cfg.limiter, ", surge protection" if cfg.surge else "", cfg.jitter_ms, cfg.errors,
             "" if cfg.retry_after else " without Retry-After", cfg.latency, cfg.model, cfg.seed,
             (f", faults {faults}" if faults else "") + (f", answers {cfg.answer_mix}" if cfg.answer_mix != "strict:1" else ""))
    await stop.wait()
    log.info("llm-sim: stopping; totals %s", {k: v for k, v in sim.stats()["totals"].items() if isinstance(v, int) and v})
    await runner.cleanup()
