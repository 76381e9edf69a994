"""The pipeline's stages as real `hazardctl` processes, for the end-to-end tests (pipes and Kafka)."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


from tests.conftest import HAZARDCTL, ROOT

MODEL = ROOT / ".cache" / "models" / "centernet-coco.onnx"
IMAGE = ROOT / "tests" / "data" / "bus.jpg"
CAMERA = "e2e-bus"
#: the stage times a result must carry, in the order the stages stamp them
TIME_ORDER = ("capture", "detect", "published", "expand", "dequeue", "llm_start", "llm_end", "result")
SERVING = re.compile(r"serving websocket=ws://[^ ]+:(\d+)/ws")



class Stage:
    """One stage as a real process in its own session (so a kill also takes the simulator it started).

    stderr goes to a file: a pipe nobody reads would block the stage once full."""

    def __init__(self, name: str, args: list[str], logdir: Path, *, env: dict, cwd: Path,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL):
        self.name = name
        self.log = logdir / f"{name}.log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen([*HAZARDCTL, name, *args], stdin=stdin, stdout=stdout, stderr=err,
                                         env=env, cwd=cwd, start_new_session=True)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL the whole process group (the stage and anything it started), then reap."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def text(self) -> str:
        return self.log.read_text("utf-8", "replace")

    def tail(self, n: int = 15) -> str:
        return f"--- {self.name} (exit {self.proc.poll()}) ---\n" + "\n".join(self.text().splitlines()[-n:])


def stage_env(base: dict | None = None) -> dict:
    """`base` (default: this process's environment) minus anything that would make schedule use real keys."""
    env = {k: v for k, v in (base or os.environ).items()
           if k != "HAZARDCTL_KEYS" and not k.startswith("DASHSCOPE_KEY_")}
    env["PYTHONPATH"] = str(ROOT)
    env["HAZARDCTL_LOG_LEVEL"] = "INFO"
    return env


def http_json(port: int, path: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


def wait_until(predicate, timeout: float, what: str, stages: list[Stage]):
    """Poll `predicate` until truthy; on timeout (or a stage dying) fail with every stage's log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        dead = [s for s in stages if s.proc.poll() is not None]
        if dead:
            break
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(s.tail() for s in stages))


def wait_js(page, expression: str, timeout_s: float, stages: list[Stage]) -> None:
    """Poll a JS expression (page.wait_for_function would need 'unsafe-eval', which the page's CSP forbids)."""
    wait_until(lambda: page.evaluate(expression), timeout_s, f"the page: {expression}", stages)


def serving_port(consume: Stage, stages: list[Stage]) -> int:
    """consume's bound port, from its log line (it was started with port 0: no race for a free port)."""
    found = wait_until(lambda: SERVING.search(consume.text()), 30, "consume to serve", stages)
    return int(found.group(1))


def assert_times_ordered(result: dict) -> None:
    times = result["times"]
    missing = [k for k in TIME_ORDER if times.get(k) is None]
    assert not missing, f"result {result['task_id']} lacks stage times {missing}: {times}"
    bad = [f"{a}={times[a]:.6f} > {b}={times[b]:.6f}" for a, b in itertools.pairwise(TIME_ORDER) if times[a] > times[b]]
    assert not bad, f"result {result['task_id']} has stage times out of order: {bad}"
