"""`hazardctl consume` as a real process for tests: results in on stdin (or Kafka), ports from its log."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from tests.conftest import HAZARDCTL, ROOT

_READY = re.compile(r"serving websocket=ws://[^ ]+:(\d+)/ws http=http://[^ ]+:(\d+)/")


class ConsumeProcess:
    """Starts consume on free ports (port 0), reads the bound ports from its log line."""

    def __init__(self, *args: str, env: dict | None = None, stdin: bool = True, timeout: float = 20.0):
        env = dict(env or os.environ)
        env["PYTHONPATH"] = str(ROOT)
        env.setdefault("HAZARDCTL_LOG_LEVEL", "INFO")
        cmd = [*HAZARDCTL, "consume", "--ws", "127.0.0.1:0", *args]
        if stdin and "--in" not in args:
            cmd += ["--in", "-"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        self.stderr: list[str] = []
        self._ready = threading.Event()
        self.ws_port = self.http_port = 0
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self._ready.wait(timeout):
            self.kill()
            raise AssertionError("consume did not start:\n" + "".join(self.stderr[-30:]))

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.stderr.append(line)
            m = _READY.search(line)
            if m:
                self.ws_port, self.http_port = int(m.group(1)), int(m.group(2))
                self._ready.set()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws"

    def send(self, *items: Any) -> None:
        """Write results (models, dicts, bytes or str lines) to consume's stdin."""
        for item in items:
            if hasattr(item, "model_dump_json"):
                data = item.model_dump_json().encode()
            elif isinstance(item, dict):
                data = json.dumps(item).encode()
            elif isinstance(item, str):
                data = item.encode()
            else:
                data = item
            self.proc.stdin.write(data.rstrip(b"\n") + b"\n")
        self.proc.stdin.flush()

    def get(self, path: str, port: int | None = None) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{port or self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body, status, ctype = r.read(), r.status, r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            body, status, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
        return status, (json.loads(body) if ctype.startswith("application/json") else body.decode())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n" + "".join(self.stderr[-20:]))

    def applied(self, n: int, timeout: float = 10.0) -> None:
        """Wait until consume has read `n` results (whatever their outcome)."""
        self.wait_for(lambda: self.metric("hazardctl_messages_in_total", stage="consume") >= n, timeout,
                      f"{n} results read")

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.stdin:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> ConsumeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.kill()


async def recv_json(ws, timeout: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws, predicate, timeout: float = 10.0) -> list[dict]:
    """Messages received until (and including) the first one for which `predicate` is true."""
    out: list[dict] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise AssertionError(f"no matching message within {timeout}s; got {[m.get('type') for m in out]}")
        msg = await recv_json(ws, left)
        out.append(msg)
        if predicate(msg):
            return out
