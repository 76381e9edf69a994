"""The pipeline under test: the simulated LLM and the real stages, each its own `hazardctl` process.

Kafka: expand, schedule and consume read and write fresh topics of this run (consumer groups named
after the run), the cameras produce to the detections topic, and readers watch tasks, results and
dead letters. Pipes: cameras → expand's stdin; expand's stdout → the loadtest (counts the tasks) →
schedule's stdin; schedule's stdout → the loadtest (counts the results) → consume's stdin; dead
letters go to one file per stage, read at the end.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import yaml

from hazardctl.errors import ConfigError, ServiceUnavailable
from tools.loadtest.ledger import Ledger
from tools.loadtest.procs import Proc, wait_for

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SCRIPT = ROOT / "scripts" / "kafka-local.sh"
SERVING = re.compile(rb"serving websocket=ws://[^ ]+:(\d+)/ws")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stage_env() -> dict:
    """This environment minus anything that would point schedule at real keys; PYTHONPATH = the repo."""
    env = {k: v for k, v in os.environ.items() if k != "HAZARDCTL_KEYS" and not k.startswith("DASHSCOPE_KEY_")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HAZARDCTL_LOG_LEVEL", "INFO")
    return env


class Simulator:
    """`hazardctl llm-sim` as a child; faults and stats over its HTTP API."""

    def __init__(self, logdir: Path, env: dict, *, keys: int, qps: float, latency: str, seed: int, extra: list[str]):
        args = ["--port", "0", "--keys", str(keys), "--qps", f"{qps:g}", "--latency", latency, "--seed", str(seed),
                *extra]
        self.proc = Proc("llm-sim", args, logdir, env=env, stdout=subprocess.PIPE)
        line = self._first_line(30.0)
        if not line.startswith("http"):
            raise ServiceUnavailable(f"the LLM simulator did not start (hazardctl llm-sim {' '.join(args)}): "
                                     f"{self.proc.last_line()} ({self.proc.log})")
        self.base_url = line.strip()
        self.root = self.base_url.removesuffix("/v1")
        self.key_names = [f"sim-key-{i:02d}" for i in range(1, keys + 1)]

    def _first_line(self, timeout: float) -> str:
        out: list[str] = []
        t = threading.Thread(target=lambda: out.append(self.proc.proc.stdout.readline().decode()), daemon=True)
        t.start()
        t.join(timeout)
        return out[0] if out else ""

    def _http(self, method: str, path: str, body: dict | None = None, timeout: float = 3.0) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.root + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def stats(self) -> dict | None:
        try:
            return self._http("GET", "/stats")
        except Exception:
            return None

    def set_fault(self, key: str, fault: str | None, **params) -> None:
        self._http("POST", "/faults", {"key": key, "fault": fault, **params})

    def keys_file(self, path: Path, qps: float, jitter_allowance_ms: float | None = None) -> Path:
        """The scheduler's keys YAML: the simulator's fake keys (sim-secret-NN), paced at `qps`; the key
        pool's pacing margin for network jitter as given (default: the pool's own, 40 ms = 3.8 %)."""
        keys = [{"name": n, "api_key": f"sim-secret-{n[-2:]}", "qps_limit": qps, "base_url": self.base_url,
                 "model": "qwen-vl-plus"} for n in self.key_names]
        data: dict = {"strategy": "round_robin"}
        if jitter_allowance_ms is not None:
            data["jitter_allowance_ms"] = jitter_allowance_ms
        path.write_text(yaml.safe_dump({**data, "keys": keys}, sort_keys=False))
        return path


def ensure_local_broker(bootstrap: str, logdir: Path) -> None:
    """Start the local broker with scripts/kafka-local.sh when it is the one asked for and not running."""
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=3)
        return
    except Exception:
        pass
    host, _, port = bootstrap.partition(":")
    if host not in ("127.0.0.1", "localhost") or not KAFKA_SCRIPT.is_file():
        raise ServiceUnavailable(f"Kafka at {bootstrap} does not answer; start it or name another with --bootstrap")
    env = {**os.environ, "KAFKA_LOCAL_PORT": port or "9092"}
    with open(logdir / "kafka-local.log", "wb") as log:
        code = subprocess.call(["bash", str(KAFKA_SCRIPT), "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        raise ServiceUnavailable(f"could not start the local broker (scripts/kafka-local.sh up): see {logdir / 'kafka-local.log'}")


def static_member_config(base: Path | None, path: Path, instance_id: str) -> Path:
    """A copy of the Kafka settings YAML (unresolved: `${VAR}` secrets stay references) whose consumer
    is a *static* group member (`group.instance.id`): a stage restarted after a crash takes its
    partitions back at once, as a StatefulSet pod would, instead of waiting out the session timeout
    of its dead predecessor (10 s, the length of a task's deadline)."""
    from hazardctl.config import CONFIG_DIR

    src = Path(base or os.environ.get("HAZARDCTL_KAFKA_CONFIG") or CONFIG_DIR / "kafka.yaml")
    if not src.is_file() and not base:
        src = ROOT / "config" / "kafka.yaml"
    data = yaml.safe_load(Path(src).read_text()) if Path(src).is_file() else {}
    data = data or {}
    data["consumer"] = {**(data.get("consumer") or {}), "group.instance.id": instance_id}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Pipeline:
    """The running stages of one loadtest (Kafka or pipes)."""

    def __init__(self, transport: str, logdir: Path, env: dict, *, keys_file: Path, engine: str, refresh: float,
                 deadline: float, kafka_config: Path | None, topics: dict[str, str] | None, run_id: str,
                 ledger: Ledger, expand_extra: list[str] | None = None):
        self.transport, self.logdir, self.env, self.ledger = transport, logdir, env, ledger
        self.procs: dict[str, Proc] = {}
        self.metrics_port = {"expand": free_port(), "schedule": free_port()}
        self.consume_port: int | None = None
        self._threads: list[threading.Thread] = []
        def kcfg(stage: str) -> list[str]:
            if stage == "expand" and engine == "flink":  # Flink's KafkaSource assigns partitions itself
                return ["--kafka-config", str(kafka_config)] if kafka_config else []
            return ["--kafka-config", str(static_member_config(kafka_config, logdir / f"kafka.{stage}.yaml",
                                                               f"loadtest-{run_id}-{stage}"))]

        expand_args = ["--engine", engine, "--refresh", f"{refresh:g}", "--deadline", f"{deadline:g}",
                       "--metrics-port", str(self.metrics_port["expand"]), *(expand_extra or [])]
        schedule_args = ["--keys", str(keys_file), "--metrics-port", str(self.metrics_port["schedule"])]
        consume_args = ["--ws", "127.0.0.1:0", "--min-level", "low", "--replay", "0"]
        if transport == "kafka":
            t = topics or {}
            dlq = ["--dlq", f"kafka://{t['dead']}"]
            self.groups = {s: f"loadtest-{run_id}-{s}" for s in ("expand", "schedule", "consume")}
            self.member_groups = [g for s, g in self.groups.items() if not (s == "expand" and engine == "flink")]
            # downstream first: each stage is in its consumer group before its input arrives
            self._start("consume", [*consume_args, "--in", f"kafka://{t['results']}", "--group", self.groups["consume"],
                                    *dlq, *kcfg("consume")])
            self._start("schedule", [*schedule_args, "--in", f"kafka://{t['tasks']}", "--out", f"kafka://{t['results']}",
                                     "--group", self.groups["schedule"], *dlq, *kcfg("schedule")])
            self._start("expand", [*expand_args, "--in", f"kafka://{t['detections']}", "--out", f"kafka://{t['tasks']}",
                                   "--group", self.groups["expand"], *dlq, *kcfg("expand")])
        else:
            self.groups = {}
            self.dead_files = {s: logdir / f"dead-{s}.jsonl" for s in ("expand", "schedule", "consume")}
            self._start("consume", [*consume_args, "--in", "-", "--dlq", str(self.dead_files["consume"])],
                        stdin=subprocess.PIPE)
            self._start("schedule", [*schedule_args, "--in", "-", "--out", "-", "--dlq", str(self.dead_files["schedule"])],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self._start("expand", [*expand_args, "--in", "-", "--out", "-", "--dlq", str(self.dead_files["expand"])],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self._pump(self.procs["expand"], self.procs["schedule"], ledger.on_task)
            self._pump(self.procs["schedule"], self.procs["consume"], ledger.on_result)

    def _start(self, name: str, args: list[str], **io) -> None:
        self.procs[name] = Proc(name, args, self.logdir, env=self.env, **io)

    def _pump(self, src: Proc, dst: Proc, on_line) -> None:
        """Pipes: copy src's stdout to dst's stdin line by line, telling the ledger about each line."""

        def run() -> None:
            out, into = src.proc.stdout, dst.proc.stdin
            for line in out:
                try:
                    on_line(line, time.time())
                except Exception:
                    pass
                try:
                    into.write(line)
                    into.flush()
                except (BrokenPipeError, ValueError, OSError):
                    pass
            try:
                into.close()
            except OSError:
                pass

        t = threading.Thread(target=run, name=f"pump-{src.name}", daemon=True)
        t.start()
        self._threads.append(t)

    # -- readiness ---------------------------------------------------------------------------------------
    def wait_ready(self, settings, timeout: float = 60.0) -> None:
        """Every stage alive and serving; over Kafka, every stage's consumer group has its partitions."""
        consume = self.procs["consume"]
        found = wait_for(lambda: SERVING.search(consume.log.read_bytes()) or self.dead(), timeout)
        if self.dead() or not found:
            raise ServiceUnavailable(f"a stage did not start: {self.why()}")
        self.consume_port = int(found.group(1))
        if self.transport == "kafka":
            from tools.loadtest.kafka_io import groups_stable

            ok = wait_for(lambda: self.dead() or groups_stable(settings, self.member_groups), timeout, 0.5)
            if self.dead() or not ok:
                raise ServiceUnavailable(f"the stages did not join their consumer groups within {timeout:g} s: {self.why()}")

    def status_command(self) -> str:
        """The `hazardctl status` command that watches this run from another terminal."""
        stages = [f"--stage {n}=127.0.0.1:{p}" for n, p in self.metrics_port.items()]
        if self.consume_port:
            stages.append(f"--stage consume=127.0.0.1:{self.consume_port}")
        groups = [f"--group {g}" for g in getattr(self, "member_groups", [])] or ["--no-kafka"]
        return " ".join(["hazardctl status", *stages, *groups])

    def dead(self) -> list[str]:
        return [n for n, p in self.procs.items() if not p.alive()]

    def why(self) -> str:
        """One line: each dead stage with its exit code and last log line (else: where the logs are)."""
        dead = [self.procs[n] for n in self.dead()]
        if not dead:
            return f"all alive; logs in {self.logdir}"
        return "; ".join(f"{p.name} exited {p.proc.returncode}: {p.last_line()} ({p.log})" for p in dead)

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.procs.values())

    # -- pipes input ---------------------------------------------------------------------------------------
    def send_pipe(self, _key: bytes, value: bytes) -> None:
        stdin = self.procs["expand"].proc.stdin
        stdin.write(value + b"\n")
        stdin.flush()

    def close_input(self) -> None:
        """Pipes: end expand's input, so the stages drain and exit in turn."""
        if self.transport == "pipes":
            try:
                self.procs["expand"].proc.stdin.close()
            except OSError:
                pass

    def read_dead_files(self) -> None:
        if self.transport != "pipes":
            return
        for path in self.dead_files.values():
            if path.is_file():
                for line in path.read_bytes().splitlines():
                    if line.strip():
                        self.ledger.on_dead_letter(line, path.stat().st_mtime)

    # -- end -------------------------------------------------------------------------------------------------
    def stop(self) -> dict[str, int | None]:
        """SIGTERM head first (expand, schedule, consume), so what is on its way is drained downstream."""
        codes = {}
        for name in ("expand", "schedule", "consume"):
            if name in self.procs:
                if self.transport == "pipes" and name != "consume":
                    # their input has ended (close_input): let them finish on EOF rather than race a SIGTERM
                    # into their shutdown
                    wait_for(lambda p=self.procs[name]: not p.alive(), 10.0)
                codes[name] = self.procs[name].terminate()
        for t in self._threads:
            t.join(5)
        return codes

    def kill_all(self) -> None:
        for p in self.procs.values():
            p.kill()

    def metrics_text(self, stage: str) -> str | None:
        port = self.metrics_port.get(stage)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                return r.read().decode()
        except Exception:
            return None


def check_engine(engine: str) -> None:
    if engine not in ("local", "flink"):
        raise ConfigError(f"--engine {engine!r}: one of local, flink")
