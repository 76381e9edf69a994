"""Helpers for the Flink engine's tests (tests/test_flink_*.py): fixtures of detections, the expected
tasks (the local engine's gate run in-process), reading a topic, a throwaway session cluster."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import orjson

from hazardctl.deadletter import BadInput
from hazardctl.synthetic import detection
from hazardctl.transports.base import Record
from stages.expand import ExpandConfig, Expander
from tests.conftest import ROOT
from tests.kafka_util import consume_until

T0 = 1_800_000_000.0
FLINK_LOCAL = ["bash", str(ROOT / "scripts" / "flink-local.sh")]
BAD = [b'{"truncated": ', b"\xff\xfe not json", b'{"schema_version": 1, "camera_id": "cam-bad"}']


def detections(cameras: int, frames: int, first: int = 0, bad_every: int = 0,
               cues: bool = False) -> list[tuple[bytes, bytes]]:
    """Frames interleaved across cameras; the synthetic groups keep their tracks and drift slowly,
    so the gate suppresses most frames (new, then refresh every 10 s, changed when a box jumps).
    With `cues`, groups carry motion cues (`with_cues`): calm ones, approaching pairs, and none."""
    out = []
    for f in range(first, first + frames):
        for c in range(cameras):
            d = detection(f"cam-{c:03d}", f, T0 + f * 0.5, groups=3, seed=c)
            if cues:
                with_cues(d, f, c)
            out.append((d.camera_id.encode(), d.model_dump_json().encode()))
    if bad_every:
        for i, bad in enumerate(BAD):
            out.insert(min(len(out), (i + 1) * bad_every), (b"cam-bad", bad))
    return out


def regrouping(cameras: int, frames: int) -> list[tuple[bytes, bytes]]:
    """Calm crowds whose groups keep re-forming: every 4 s (8 frames) both groups of a camera get new ids
    and their 5 walkers are dealt out again from a pool of 6 tracks; every 20 s two walkers leave and two
    new ones arrive. The danger gate holds a new group made of walkers it assessed within the calm
    refresh (`calm_regroup`) and sends one with a walker it has not."""
    from hazardctl.messages import GroupCues

    out = []
    for f in range(frames):
        for c in range(cameras):
            d = detection(f"crowd-{c:02d}", f, T0 + f * 0.5, groups=2, seed=c)
            base = (f // 40) * 2 + c * 1000
            pool = [base + i + 1 for i in range(6)]
            rot = f // 8
            for i, o in enumerate(d.objects):
                o.track_id = pool[(rot + i) % 6]
            for g in d.groups:
                g.group_id = f"{d.camera_id}-r{rot}-{g.group_id[-2:]}"
                g.cues = GroupCues(conflict_possible=False)
            out.append((d.camera_id.encode(), d.model_dump_json().encode()))
    return out


def with_cues(d, frame: int, camera: int) -> None:
    """Motion cues on the synthetic groups (hand-made `GroupCues`, as detect's cues would be):
    g1 is calm (a crowd: no possible conflict) on two cameras in three, else untracked (no cues);
    g2 is a car approaching a pedestrian every 10 s: TTC falls 4.0 → 0.25 s in 0.125 s steps a frame
    (suspect at 1.5 s, again when markedly worse), then the car has passed (opening, no TTC);
    g3 closes slowly, never near (conflict possible, nothing crossed)."""
    from hazardctl.messages import GroupCues

    g1, g2, g3 = d.groups
    if camera % 3 != 2:
        g1.cues = GroupCues(conflict_possible=False)
    phase = (frame + camera) % 20
    if phase < 16:
        t = 4.0 - 0.25 * phase
        g2.cues = GroupCues(conflict_possible=True, min_ttc_s=t, max_closing_speed=140.0, min_gap_ratio=t / 3)
    else:
        g2.cues = GroupCues(conflict_possible=True, max_closing_speed=-50.0, min_gap_ratio=1.0)
    g3.cues = GroupCues(conflict_possible=True, min_ttc_s=9.0, max_closing_speed=10.0, min_gap_ratio=2.0)


def expected_tasks(items: list[tuple[bytes, bytes]], cfg: ExpandConfig = ExpandConfig()) -> dict[str, dict]:
    """task id → task, as one uninterrupted run of the local engine's code emits them."""
    expander = Expander(cfg)
    out = {}
    for key, value in items:
        try:
            for _k, task in expander(Record(value=value, key=key)):
                t = orjson.loads(task)
                out[t["task_id"]] = t
        except BadInput:
            pass
    return out


def read_all(bootstrap: str, topic: str, done, timeout: float) -> list:
    return consume_until(bootstrap, topic, done, timeout=timeout)


def ids_of(msgs) -> set[str]:
    return {orjson.loads(m.value())["task_id"] for m in msgs}


def has_all(expected: set[str]):
    return lambda msgs: expected <= ids_of(msgs)


def per_camera_order(msgs) -> dict[str, list[str]]:
    """Task ids per camera in the order they were read (each camera is on one partition)."""
    out: dict[str, list[str]] = defaultdict(list)
    for m in msgs:
        t = orjson.loads(m.value())
        out[t["camera_id"]].append(t["task_id"])
    return dict(out)


def free_port_pair() -> int:
    """A port p with p and p+1 free (REST and JobManager RPC)."""
    for _ in range(50):
        p = random.randint(20000, 45000)
        try:
            for q in (p, p + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", q))
            return p
        except OSError:
            continue
    raise RuntimeError("no free port pair")


class SessionCluster:
    """A real standalone session cluster (scripts/flink-local.sh) in its own folder and ports."""

    def __init__(self, home: Path, slots: int = 2):
        self.home = home
        self.port = free_port_pair()
        prom = random.randint(46000, 55000)
        self.prom_ports = range(prom, prom + 10)
        self.env = {**os.environ, "FLINK_LOCAL_HOME": str(home), "FLINK_LOCAL_PORT": str(self.port),
                    "FLINK_LOCAL_PROM": f"{prom}-{prom + 9}", "FLINK_LOCAL_SLOTS": str(slots)}
        self.address = f"127.0.0.1:{self.port}"

    def sh(self, *args: str, timeout: float = 120) -> str:
        p = subprocess.run([*FLINK_LOCAL, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert p.returncode == 0, f"flink-local.sh {args}: {p.stdout}{p.stderr}"
        return p.stdout

    def pids(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {"jobmanager": [], "taskmanager": []}
        for line in self.sh("pids").splitlines():
            role, pid = line.split()
            out[role].append(int(pid))
        return out

    def down(self) -> None:
        subprocess.run([*FLINK_LOCAL, "down"], env=self.env, capture_output=True, timeout=120)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def python_workers(parent_pids: list[int]) -> list[int]:
    """The PyFlink Python worker processes below these JVMs (any depth)."""
    children: dict[int, list[int]] = defaultdict(list)
    for p in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[ppid].append(int(p.name))
    out, todo = [], list(parent_pids)
    while todo:
        for c in children.get(todo.pop(), []):
            todo.append(c)
            try:
                cmd = (Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" "))
            except OSError:
                continue
            if b"python" in cmd and b"java" not in cmd.split(b" ")[0]:
                out.append(c)
    return out


def wait_for(cond, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def flink_yaml(path: Path, checkpoints: Path, **gate) -> Path:
    lines = ["parallelism: {source: 1, process: 1, sink: 1}",
             f"checkpoints: {{interval_s: 1, dir: {checkpoints}, timeout_s: 30}}",
             "restart: {attempts: 20, delay_s: 1}"]
    if gate:
        lines.append("gate: {" + ", ".join(f"{k}: {v}" for k, v in gate.items()) + "}")
    path.write_text("\n".join(lines) + "\n")
    return path

