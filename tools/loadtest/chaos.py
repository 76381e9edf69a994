"""Chaos at a chosen second of a loadtest: `--chaos NAME@SECONDS`, several allowed.

| name | what happens |
|---|---|
| key-401 | one key (sim-key-03, or the last if fewer) answers 401 from then on: a revoked key |
| key-429-storm | one key answers 429 (Retry-After 5 s) to everything for 15 s |
| latency-spike | every call takes 2 s longer for 10 s |
| 5xx-burst | the next 5 calls on every key answer 500/502/503 |
| kill-schedule | SIGKILL the schedule stage, start it again at once (Kafka only) |
| kill-expand | SIGKILL the expand stage, start it again at once (Kafka only) |
| broker-restart | stop and start the local broker (scripts/kafka-local.sh; Kafka only, local broker only) |
| kill-broker | kill -9 the broker of the local 3-broker cluster that leads most partitions of the tasks topic (`kafka-local.sh cluster`) |
| restart-broker | start the broker that kill-broker killed again, on its old data (`kafka-local.sh cluster start N`) |

The fault kinds are the simulator's run-time faults (docs/llm-sim.md). Over pipes, a killed stage
takes whatever was in its pipes with it, so the kill chaos is refused there: use Kafka.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hazardctl.errors import ConfigError

NAMES = ("key-401", "key-429-storm", "latency-spike", "5xx-burst", "kill-schedule", "kill-expand", "broker-restart",
         "kill-broker", "restart-broker")
KAFKA_ONLY = ("kill-schedule", "kill-expand", "broker-restart", "kill-broker", "restart-broker")
CLUSTER_ONLY = ("kill-broker", "restart-broker")
STORM_S = 15.0
SPIKE_S = 10.0


@dataclass(frozen=True, order=True)
class Chaos:
    at: float
    name: str

    def __str__(self) -> str:
        return f"{self.name}@{self.at:g}"


def parse(spec: str, transport: str, duration: float) -> Chaos:
    name, sep, at = spec.partition("@")
    if name not in NAMES or not sep:
        raise ConfigError(f"--chaos {spec!r}: expected NAME@SECONDS with NAME one of {', '.join(NAMES)}")
    try:
        t = float(at)
    except ValueError:
        raise ConfigError(f"--chaos {spec!r}: {at!r} is not a number of seconds") from None
    if not 0 <= t < duration:
        raise ConfigError(f"--chaos {spec!r}: the second must be within the run (0..{duration:g})")
    if name in KAFKA_ONLY and transport != "kafka":
        raise ConfigError(f"--chaos {name} needs --transport kafka: over pipes a killed stage or broker loses what "
                          "was in the pipes, so nothing could be checked for loss")
    return Chaos(t, name)


def local_broker_home(bootstrap: str) -> Path:
    """The kafka-local.sh home of the broker at `bootstrap` ($KAFKA_LOCAL_HOME, default .cache/kafka),
    checked: its server.properties must listen on that very port, so a restart can never stop another
    broker (the script finds its broker by the home's pid file, not by the port)."""
    from tools.loadtest.pipeline import ROOT

    host, _, port = bootstrap.partition(":")
    if host not in ("127.0.0.1", "localhost") or "," in bootstrap:
        raise ConfigError(f"--chaos broker-restart: {bootstrap} is not one local broker this machine can restart")
    home = Path(os.environ.get("KAFKA_LOCAL_HOME") or ROOT / ".cache" / "kafka")
    try:
        props = (home / "server.properties").read_text()
    except OSError:
        props = ""
    if not re.search(rf"PLAINTEXT://127\.0\.0\.1:{port or 9092}\b", props):
        raise ConfigError(f"--chaos broker-restart: the kafka-local.sh home {home} is not the broker on port "
                          f"{port or 9092}; set KAFKA_LOCAL_HOME to the home of the broker at {bootstrap}")
    return home


def local_cluster_brokers(bootstrap: str) -> dict[int, int]:
    """node id → port of the `kafka-local.sh cluster` brokers ($KAFKA_CLUSTER_HOME, default
    .cache/kafka-cluster), checked against `bootstrap`: every address in it must be a loopback port one
    of those brokers listens on, so kill-broker can never kill a broker this loadtest was not given."""
    from tools.loadtest.pipeline import ROOT

    home = Path(os.environ.get("KAFKA_CLUSTER_HOME") or ROOT / ".cache" / "kafka-cluster")
    brokers: dict[int, int] = {}
    for props in sorted(home.glob("b[0-9]/server.properties")):
        text = props.read_text()
        node = re.search(r"^node\.id=(\d+)$", text, re.M)
        port = re.search(r"^listeners=PLAINTEXT://127\.0\.0\.1:(\d+)", text, re.M)
        if node and port:
            brokers[int(node.group(1))] = int(port.group(1))
    given = [a.strip() for a in bootstrap.split(",") if a.strip()]
    ok = bool(given) and all(a.partition(":")[0] in ("127.0.0.1", "localhost") and a.partition(":")[2].isdigit()
                             and int(a.partition(":")[2]) in brokers.values() for a in given)
    if len(brokers) < 3 or not ok:
        raise ConfigError(f"--chaos kill-broker/restart-broker: {bootstrap or '(no bootstrap)'} is not the local "
                          f"3-broker cluster of {home} (start it with `scripts/kafka-local.sh cluster up` and pass "
                          "--bootstrap $(scripts/kafka-local.sh cluster bootstrap)); other brokers are never touched")
    return brokers


def most_leading(leaders: dict[int, int]) -> int:
    """The broker that leads the most partitions (partition → leader node id; the lowest id on a tie)."""
    counts: dict[int, int] = {}
    for node in leaders.values():
        if node >= 0:
            counts[node] = counts.get(node, 0) + 1
    if not counts:
        raise ValueError("no partition has a leader")
    return min(counts, key=lambda n: (-counts[n], n))


def target_key(key_names: list[str]) -> str:
    return key_names[min(2, len(key_names) - 1)]


class ChaosRunner:
    """Fires due chaos (from the main loop, which owns the child processes) and undoes timed faults."""

    def __init__(self, plan: list[Chaos], sim, pipeline, *, bootstrap: str | None, script: str,
                 say: Callable[[str], None], tasks_topic: str | None = None, settings=None):
        self.pending = sorted(plan)
        self.tasks_topic, self.settings = tasks_topic, settings
        self.killed_broker: int | None = None
        self.undo: list[tuple[float, str, Callable[[], None]]] = []
        self.sim, self.pipeline, self.bootstrap, self.script, self.say = sim, pipeline, bootstrap, script, say
        self.fired: list[dict] = []  # {"at", "name", "detail", "took_s"}

    def tick(self, elapsed: float) -> None:
        for u in [u for u in self.undo if u[0] <= elapsed]:
            self.undo.remove(u)
            u[2]()
            self.say(f"chaos: {u[1]} over at {elapsed:.1f} s")
        while self.pending and self.pending[0].at <= elapsed:
            c = self.pending.pop(0)
            t0 = time.monotonic()
            detail = self.fire(c, elapsed)
            self.fired.append({"at": elapsed, "name": c.name, "detail": detail,
                               "took_s": round(time.monotonic() - t0, 2)})
            self.say(f"chaos: {c.name} at {elapsed:.1f} s: {detail}")

    def fire(self, c: Chaos, elapsed: float) -> str:
        keys = self.sim.key_names
        if c.name == "key-401":
            k = target_key(keys)
            self.sim.set_fault(k, "unauthorized")
            return f"{k} answers 401 from now on"
        if c.name == "key-429-storm":
            k = target_key(keys)
            self.sim.set_fault(k, "rate_limit_storm", retry_after=5)
            self.undo.append((elapsed + STORM_S, c.name, lambda: self.sim.set_fault(k, None)))
            return f"{k} answers 429 (Retry-After 5 s) to everything for {STORM_S:g} s"
        if c.name == "latency-spike":
            self.sim.set_fault("*", "latency_spike", extra_s=2, probability=1)
            self.undo.append((elapsed + SPIKE_S, c.name, lambda: self.sim.set_fault("*", None)))
            return f"every call +2 s for {SPIKE_S:g} s"
        if c.name == "5xx-burst":
            self.sim.set_fault("*", "server_error_burst", count=5)
            return "the next 5 calls on every key answer 5xx"
        if c.name in ("kill-schedule", "kill-expand"):
            stage = c.name.removeprefix("kill-")
            p = self.pipeline.procs[stage]
            old = p.pid
            p.restart()
            return f"SIGKILL {stage} (pid {old}), restarted as pid {p.pid}"
        if c.name == "broker-restart":
            return self.restart_broker()
        if c.name == "kill-broker":
            return self.kill_broker()
        if c.name == "restart-broker":
            return self.start_broker()
        raise AssertionError(c.name)

    def _cluster(self, *args: str) -> int:
        with open(self.pipeline.logdir / "cluster-chaos.log", "ab") as log:
            return subprocess.call(["bash", self.script, "cluster", *args], stdout=log, stderr=subprocess.STDOUT)

    def kill_broker(self) -> str:
        """kill -9 the cluster broker that leads the most partitions of the tasks topic (asked of the cluster)."""
        from hazardctl.transports.kafka import admin_client

        brokers = local_cluster_brokers(self.bootstrap or "")
        md = admin_client(self.settings, quiet=True).list_topics(self.tasks_topic, timeout=10)
        leaders = {p: pm.leader for p, pm in md.topics[self.tasks_topic].partitions.items()}
        node = most_leading(leaders)
        led = sum(1 for n in leaders.values() if n == node)
        code = self._cluster("kill", str(node))
        self.killed_broker = node
        return (f"kill -9 broker {node} (127.0.0.1:{brokers[node]}), leader of {led} of {len(leaders)} partitions "
                f"of {self.tasks_topic} (exit {code})")

    def start_broker(self) -> str:
        """Start the killed broker again, in the background (the main loop keeps the cameras' clock)."""
        local_cluster_brokers(self.bootstrap or "")
        node = self.killed_broker
        if node is None:
            return "no broker was killed in this run: nothing to start"
        log = open(self.pipeline.logdir / "cluster-chaos.log", "ab")
        subprocess.Popen(["bash", self.script, "cluster", "start", str(node)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.killed_broker = None
        return f"starting broker {node} again on its data (log {self.pipeline.logdir / 'cluster-chaos.log'})"

    def restart_broker(self) -> str:
        home = local_broker_home(self.bootstrap or "")
        port = (self.bootstrap or "").partition(":")[2] or "9092"
        env = {**os.environ, "KAFKA_LOCAL_PORT": port, "KAFKA_LOCAL_HOME": str(home)}
        logf = self.pipeline.logdir / "broker-restart.log"
        with open(logf, "ab") as log:
            down = subprocess.call(["bash", self.script, "down"], env=env, stdout=log, stderr=subprocess.STDOUT)
            up = subprocess.call(["bash", self.script, "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
        return f"kafka-local.sh down (exit {down}) and up (exit {up}) on port {port} (log {logf})"
