"""No hazardctl listener on a wildcard address unless asked (issue 17.8).

`make demo` (scripts/demo.sh: detect → expand → schedule with its simulated LLM → consume, over pipes)
and a short `hazardctl loadtest` (expand and schedule with `--metrics-port`, the simulated LLM,
consume) run at the same time, each in its own session; while they run, `ss -ltnpH` is read every
0.3 s and every listening socket of a process below either is kept. Checked: the listeners the
runs are known to open were seen (consume's WebSocket and HTTP ports of the demo; expand's and
schedule's metrics ports of the loadtest), and none is on 0.0.0.0, [::] or *. Control: a stage
started with `--metrics-bind 0.0.0.0` IS seen on the wildcard address by the same reader, and
without it on 127.0.0.1 (so the check can fail).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import HAZARDCTL, ROOT

pytestmark = pytest.mark.timeout(150)

WILDCARD = ("0.0.0.0", "[::]", "*", "::")
_USERS = re.compile(r"pid=(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(roots: set[int]) -> set[int]:
    """`roots` and every process below them now (parent ids from /proc/PID/stat; the loadtest starts
    its stages in sessions of their own, so a session id would miss them)."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, grew = set(roots), True
    while grew:
        below = {pid for pid, pp in parent.items() if pp in out} - out
        out |= below
        grew = bool(below)
    return out


def listeners() -> list[tuple[str, int, int]]:
    """(local address, port, pid) of every listening TCP socket, from `ss -ltnpH`."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=10, check=True).stdout
    rows = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 6:
            continue
        addr, _, port = cols[3].rpartition(":")
        for pid in _USERS.findall(line):
            rows.append((addr, int(port), int(pid)))
    return rows


def listeners_of(pids: set[int]) -> set[tuple[str, int, int]]:
    return {(a, p, pid) for a, p, pid in listeners() if pid in pids}


def metrics_ports_asked(pids: set[int]) -> set[int]:
    """The `--metrics-port N` on the command lines of `pids`."""
    out = set()
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")
        except OSError:
            continue
        if "--metrics-port" in argv[:-1]:
            out.add(int(argv[argv.index("--metrics-port") + 1]))
    return out


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if k != "HAZARDCTL_KEYS" and not k.startswith("DASHSCOPE_KEY_")}
    e["PYTHONPATH"] = str(ROOT)
    return e


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_demo_and_loadtest_listen_on_loopback_only(tmp_path):
    if not (ROOT / ".cache/models/centernet-coco.onnx").exists():
        pytest.fail("the demo's detector model is missing: run `make models`")
    ws, http = free_port(), free_port()
    demo = subprocess.Popen(
        ["bash", "scripts/demo.sh"], cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "demo.log", "wb"),
        env={**env(), "DEMO_SECONDS": "12", "DEMO_WS": f"127.0.0.1:{ws}", "DEMO_HTTP": f"127.0.0.1:{http}"})
    load = subprocess.Popen(
        [*HAZARDCTL, "loadtest", "--cameras", "2", "--rate", "0.5", "--duration", "4", "--transport", "pipes",
         "--out", str(tmp_path / "loadtest")],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "loadtest.log", "wb"), env=env())
    seen: set[tuple[str, int, int]] = set()
    asked: set[int] = set()  # the --metrics-port of every process of the two runs
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (demo.poll() is None or load.poll() is None):
            tree = descendants({demo.pid, load.pid})
            seen |= listeners_of(tree)
            asked |= metrics_ports_asked(tree)
            time.sleep(0.3)
        assert demo.poll() is not None and load.poll() is not None, "demo/loadtest still running after 120 s"
    finally:
        stop(demo)
        stop(load)
    logs = "\n".join(f"--- {n}\n" + (tmp_path / n).read_text("utf-8", "replace")[-3000:]
                     for n in ("demo.log", "loadtest.log"))
    assert demo.returncode == 0 and load.returncode == 0, logs
    ports = {p for _a, p, _pid in seen}
    assert {ws, http} <= ports, (sorted(seen), logs)  # the demo's consume was seen listening
    assert len(asked) >= 2 and asked <= ports, (sorted(asked), sorted(seen))  # the loadtest's metrics ports
    wide = sorted(x for x in seen if x[0] in WILDCARD)
    assert not wide, f"listening on every interface: {wide}\n{logs}"


@pytest.mark.parametrize("bind, expected", [(None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")])
def test_the_listener_check_sees_a_wildcard_metrics_port(bind, expected):
    """Control for the test above: `--metrics-bind 0.0.0.0` shows as 0.0.0.0 in the same reader;
    the default is 127.0.0.1."""
    port = free_port()
    args = [*HAZARDCTL, "expand", "--in", "-", "--out", os.devnull, "--metrics-port", str(port)]
    if bind:
        args += ["--metrics-bind", bind]
    proc = subprocess.Popen(args, cwd=ROOT, start_new_session=True, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env())
    try:
        deadline, mine = time.monotonic() + 30, set()
        while time.monotonic() < deadline and not mine and proc.poll() is None:
            mine = {a for a, p, _pid in listeners_of(descendants({proc.pid})) if p == port}
            time.sleep(0.2)
        assert mine == {expected}, (mine, proc.poll())
    finally:
        stop(proc)
