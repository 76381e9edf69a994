"""Child processes of a loadtest: start, stop, kill, restart, and what CPU each one used.

Each child runs in its own session (a kill takes its whole process group) and gets SIGTERM from
the kernel if the loadtest itself dies (PR_SET_PDEATHSIG), so no stage outlives a run. stderr goes
to a log file per incarnation (`schedule.log`, after a restart `schedule.2.log`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HAZARDCTL = [sys.executable, "-m", "hazardctl.cli"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def cpu_seconds(pid: int, children: dict[int, list[int]] | None = None) -> float | None:
    """User + system CPU time of `pid` and its reaped children (from /proc), plus, with `children`
    (see `process_tree`), that of its live descendants (a Flink expand's JVM and Python workers);
    None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        total = sum(int(x) for x in fields[11:15]) / CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return None
    for child in (children or {}).get(pid, ()):
        total += cpu_seconds(child, children) or 0.0
    return total


def process_tree() -> dict[int, list[int]]:
    """parent pid → child pids, for every process on the machine."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    return kids


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (all cores, from /proc/stat)."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


class Proc:
    """One stage (or the simulator) as a `hazardctl` child process."""

    def __init__(self, name: str, args: list[str], logdir: Path, *, env: dict, cwd: Path | None = None,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL):
        self.name, self.args, self.logdir, self.env, self.cwd = name, args, logdir, env, cwd
        self.incarnation = 0
        self.cpu_done = 0.0  # CPU of earlier incarnations
        self._cpu_last = 0.0
        self.proc: subprocess.Popen | None = None
        self._io = (stdin, stdout)
        self.start()

    @property
    def log(self) -> Path:
        suffix = "" if self.incarnation <= 1 else f".{self.incarnation}"
        return self.logdir / f"{self.name}{suffix}.log"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else -1

    def start(self) -> None:
        self.incarnation += 1
        stdin, stdout = self._io
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen([*HAZARDCTL, self.name, *self.args], stdin=stdin, stdout=stdout, stderr=err,
                                         env=self.env, cwd=self.cwd, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        self._cpu_last = 0.0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sample_cpu(self, children: dict[int, list[int]] | None = None) -> float:
        """CPU seconds of all incarnations so far, with their descendants when `children` is given
        (sample it often: a killed process takes its count along)."""
        now = cpu_seconds(self.pid, children) if self.alive() else None
        if now is not None:
            self._cpu_last = now
        return self.cpu_done + self._cpu_last

    def kill(self) -> None:
        """SIGKILL the process group, then reap."""
        self.sample_cpu(process_tree())
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.cpu_done += self._cpu_last
        self._cpu_last = 0.0

    def restart(self) -> None:
        self.kill()
        self.start()

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code (None when it was killed)."""
        if self.proc is None:
            return None
        self.sample_cpu(process_tree())
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
        else:
            code = self.proc.returncode
        self.kill()  # also reaps anything left in its process group
        return code

    def last_line(self) -> str:
        """The last line of the log that says something (typer's error boxes stripped of their frame)."""
        try:
            text = self.log.read_text("utf-8", "replace")
        except OSError:
            return ""
        lines = [x.strip(" │╭╮╰╯─") for x in text.splitlines()]
        lines = [x for x in lines if any(c.isalnum() for c in x)]
        return lines[-1][-300:] if lines else ""

    def tail(self, n: int = 12) -> str:
        try:
            lines = self.log.read_text("utf-8", "replace").splitlines()[-n:]
        except OSError:
            lines = []
        return f"--- {self.name} (pid {self.pid}, exit {self.proc.poll() if self.proc else None}, log {self.log}) ---\n" \
            + "\n".join(lines)


def wait_for(predicate, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None
