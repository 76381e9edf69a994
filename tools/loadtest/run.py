"""One loadtest run, top to bottom: set up → cameras on → chaos → drain → tear down → report.

    topics (Kafka) → simulator → stages (downstream first) → readers → wait until every stage is in
    its consumer group → cameras, open loop, for `duration` s (chaos fired at its second, the live
    view refreshed) → drain: wait until every offered task has an outcome (or the deadline has
    passed for all) → SIGTERM the stages head first → figures, files, asserts.

Everything started is torn down in `finally`, also on Ctrl-C or SIGTERM (turned into KeyboardInterrupt).
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from hazardctl.errors import ConfigError, ServiceUnavailable
from hazardctl.gating import GateConfig
from tools.loadtest import chaos as chaos_mod
from tools.loadtest import hazards, report
from tools.loadtest.cameras import Cameras
from tools.loadtest.crops import real_crops
from tools.loadtest.ledger import Ledger
from tools.loadtest.pipeline import KAFKA_SCRIPT, Pipeline, Simulator, check_engine, ensure_local_broker, stage_env
from tools.loadtest.procs import cpu_seconds, machine_busy, process_tree, wait_for
from tools.loadtest.scene import SceneConfig


@dataclass
class Options:
    cameras: int = 50
    rate: float = 0.5
    duration: float = 60.0
    keys: int = 10
    qps_per_key: float = 5.0
    llm_latency: str = "uniform:1,2"
    transport: str = "kafka"
    engine: str = "local"
    sim_args: list[str] = field(default_factory=list)
    chaos: list[str] = field(default_factory=list)
    asserts: list[str] = field(default_factory=list)
    out: Path | None = None
    fps: float = 1.0
    refresh: float = 10.0
    deadline: float = 10.0
    kafka_config: Path | None = None
    bootstrap: str | None = None
    keep_topics: bool = False
    seed: int = 1
    live: bool | None = None
    plot: bool = True
    jitter_allowance_ms: float | None = None
    cameras_from: Path | None = None
    """a video file: the real detect stage reads one looping copy per camera (tools/loadtest/video.py)"""
    expand_args: list[str] = field(default_factory=list)
    """extra flags for `hazardctl expand` (e.g. a gate setting the prediction does not share)"""
    motion: bool = False
    """objects with motion, groups with cues, and labelled hazards (scene.py); `rate` stays the road's activity"""
    hazard_every: float = 60.0
    """with motion: one approaching car–pedestrian pair per camera this often (s; 0: none)"""


def sim_latency(spec: str) -> str:
    """`uniform:1,2` (the loadtest's spelling) → `uniform:1:2` (the simulator's); others pass through."""
    return spec.replace(",", ":")


def gate_config(o: Options) -> GateConfig:
    # refresh a quarter frame early: the refresh lands on the frame `refresh` s after the last send,
    # not one frame later by float rounding of the frame times
    return GateConfig(refresh_interval_s=o.refresh - 0.25 / o.fps)


def validate(o: Options) -> tuple[SceneConfig, list, list]:
    if o.transport not in ("kafka", "pipes"):
        raise ConfigError(f"--transport {o.transport!r}: one of kafka, pipes")
    check_engine(o.engine)
    if o.engine == "flink" and o.transport != "kafka":
        raise ConfigError("--engine flink needs --transport kafka (the Flink job reads and writes Kafka topics)")
    if o.cameras < 1 or o.keys < 1 or o.duration <= 0 or o.qps_per_key <= 0:
        raise ConfigError("--cameras, --keys, --duration and --qps-per-key must be > 0")
    scene = SceneConfig(rate=o.rate, fps=o.fps, refresh_s=o.refresh, motion=o.motion, hazard_every_s=o.hazard_every)
    problem = scene.check()
    if problem:
        raise ConfigError(problem)
    plan = [chaos_mod.parse(c, o.transport, o.duration) for c in o.chaos]
    asserts = [report.parse_assert(a) for a in o.asserts]
    if o.cameras_from is not None:
        from tools.loadtest.video import check_video

        check_video(Path(o.cameras_from))
    return scene, plan, asserts


def mode(o: Options) -> str:
    """Which cameras ran, in words (the report says it first)."""
    if o.cameras_from is None:
        return "simulated cameras (detections generated; detect's inference is not in end to end)"
    return (f"real detect stage on {o.cameras_from} (one looping copy per camera, CenterNet ONNX on CPU; "
            "end to end includes decoding and inference)")


def key_states(metrics_text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (metrics_text or "").splitlines():
        if line.startswith("hazardctl_key_state{") and line.rstrip().endswith(" 1.0"):
            k = re.search(r'key="([^"]+)"', line)
            s = re.search(r'state="([^"]+)"', line)
            if k and s:
                out[k.group(1)] = s.group(1)
    return out


def broker_pid(home: Path | None) -> int | None:
    """The pid of the kafka-local.sh broker of `home` (None: not a local broker of ours)."""
    if home is None:
        return None
    try:
        return int((home / "kafka.pid").read_text().strip())
    except (OSError, ValueError):
        return None


class CpuMeter:
    """CPU seconds of each child (all its incarnations), this process, the broker, and the machine."""

    BROKER = "kafka broker (all its clients)"

    def __init__(self, pipeline: Pipeline, sim: Simulator, broker_home: Path | None, extra: dict | None = None):
        self.pipeline, self.sim, self.broker_home = pipeline, sim, broker_home
        self.extra = extra or {}  # name → Proc started outside the pipeline (the video mode's detect)
        self.broker_last: int | None = None
        self.broker_cpu: dict[int, float] = {}  # per pid: a broker-restart starts a new JVM
        self.t0 = self.m0 = None

    def sample(self) -> dict:
        kids = process_tree()
        d = {name: p.sample_cpu(kids) for name, p in {**self.pipeline.procs, **self.extra}.items()}
        d["llm-sim"] = self.sim.proc.sample_cpu(kids)
        d["loadtest (cameras, readers)"] = sum(os.times()[:2])
        pid = broker_pid(self.broker_home)
        if pid:
            c = cpu_seconds(pid)
            if c is not None:
                self.broker_cpu[pid], self.broker_last = c, pid
        if self.broker_cpu:
            d[self.BROKER] = sum(self.broker_cpu.values())
        return d

    def begin(self) -> None:
        self.t0, self.c0, self.m0 = time.time(), self.sample(), machine_busy()

    def end(self) -> dict:
        wall = time.time() - self.t0
        c1, m1 = self.sample(), machine_busy()
        pids = {name: p.pid for name, p in {**self.pipeline.procs, **self.extra}.items()}
        pids["llm-sim"], pids["loadtest (cameras, readers)"] = self.sim.proc.pid, os.getpid()
        if self.broker_cpu:
            pids[self.BROKER] = self.broker_last
        procs = {name: {"pid": pids.get(name), "cpu_s": round(c1[name] - self.c0.get(name, 0.0), 2),
                        "pct_of_one_core": round(100 * (c1[name] - self.c0.get(name, 0.0)) / wall, 1)}
                 for name in c1}
        busy, total = m1[0] - self.m0[0], m1[1] - self.m0[1]
        ours = sum(p["cpu_s"] for p in procs.values())
        cores = os.cpu_count() or 1
        return {"wall_s": round(wall, 1), "cores": cores, "processes": procs,
                "machine_busy_pct": round(100 * busy / total, 1) if total else None,
                "others_pct_of_one_core": round(100 * max(0.0, busy - ours) / wall, 1)}


def run(o: Options, console: Console | None = None) -> dict:
    """One run; returns the summary (also written to OUT/summary.json). Raises HazardError on setup problems."""
    from tools.loadtest import live as live_mod
    from tools.loadtest import plot as plot_mod
    from tools.loadtest import show

    console = console or Console()
    if not console.is_terminal and console.width < 140:
        console = Console(width=140)  # logs and CI: room for the tables
    scene_cfg, plan, asserts = validate(o)
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    out = Path(o.out or Path("loadtest-results") / run_id)
    logdir = out / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    env = stage_env()
    settings = topics = None
    if o.transport == "kafka":
        from hazardctl.config import load_kafka_settings

        settings = load_kafka_settings(o.kafka_config)
        if o.bootstrap:
            settings = settings.model_copy(update={"bootstrap_servers": o.bootstrap})
        env["HAZARDCTL_KAFKA_BOOTSTRAP"] = settings.bootstrap_servers
        if any(c.name == "broker-restart" for c in plan):
            chaos_mod.local_broker_home(settings.bootstrap_servers)  # refuse before anything starts
        if any(c.name in chaos_mod.CLUSTER_ONLY for c in plan):
            chaos_mod.local_cluster_brokers(settings.bootstrap_servers)  # refuse before anything starts
    crops = real_crops()
    ledger = Ledger()
    sim = pipeline = alerts = None
    readers: list = []
    cameras: Cameras | None = None
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    phases: dict[str, float] = {}
    t_phase = [time.time()]

    def phase(name: str) -> None:
        now = time.time()
        phases[name] = round(now - t_phase[0], 1)
        t_phase[0] = now

    try:
        if o.transport == "kafka":
            from tools.loadtest.kafka_io import create_topics

            ensure_local_broker(settings.bootstrap_servers, logdir)
            topics = create_topics(settings, run_id.replace("-", ""))
        sim = Simulator(logdir, env, keys=o.keys, qps=o.qps_per_key, latency=sim_latency(o.llm_latency),
                        seed=o.seed, extra=o.sim_args)
        keys_file = sim.keys_file(out / "api_keys.loadtest.yaml", o.qps_per_key, o.jitter_allowance_ms)
        gate = gate_config(o)
        pipeline = Pipeline(o.transport, logdir, env, keys_file=keys_file, engine=o.engine,
                            refresh=gate.refresh_interval_s, deadline=o.deadline, kafka_config=o.kafka_config,
                            topics=topics, run_id=run_id, ledger=ledger, expand_extra=o.expand_args)
        if o.transport == "kafka":
            from hazardctl.transports import Endpoints
            from tools.loadtest.kafka_io import TopicReader

            readers = [TopicReader(settings, topics["tasks"], ledger.on_task).start(),
                       TopicReader(settings, topics["results"], ledger.on_result).start(),
                       TopicReader(settings, topics["dead"], ledger.on_dead_letter).start()]
            output = Endpoints(settings=settings).output(f"kafka://{topics['detections']}")
            delivery_errors = [0]

            def delivered(err) -> None:
                if err is not None:
                    delivery_errors[0] += 1

            def send(key: bytes, value: bytes) -> None:
                output.send(value, key, delivered)
                output.poll(0)
        else:
            output, delivery_errors = None, [0]
            send = pipeline.send_pipe
        console.print(f"[bold]hazardctl loadtest[/] {o.cameras} cameras"
                      f"{' from ' + str(o.cameras_from) if o.cameras_from else f' × {o.rate:g} groups/s'}, {o.duration:g} s, "
                      f"{o.keys} keys × {o.qps_per_key:g} qps, LLM {o.llm_latency}, {o.transport}"
                      f"{', chaos ' + ', '.join(map(str, plan)) if plan else ''}; out {out}", highlight=False)
        phase("start_processes_s")
        pipeline.wait_ready(settings)
        phase("stages_ready_s")
        from tools.loadtest.alerts import AlertWatcher

        alerts = AlertWatcher(pipeline.consume_port).start()
        probe(send, ledger, scene_cfg, crops, run_id, timeout=90 if o.engine == "flink" else 30)
        phase("probe_s")
        status_cmd = pipeline.status_command()
        (out / "status-command.txt").write_text(status_cmd + "\n")
        console.print(f"watch it: {status_cmd}", highlight=False, soft_wrap=True)
        if o.cameras_from is None:
            cameras = Cameras(o.cameras, scene_cfg, crops, gate, send, run_id=run_id, seed=o.seed)
        else:
            from tools.loadtest.video import VideoCameras

            kafka = o.transport == "kafka"
            cameras = VideoCameras(o.cameras, Path(o.cameras_from), o.fps, gate, logdir, env,
                                   out=f"kafka://{topics['detections']}" if kafka else "-",
                                   kafka_config=o.kafka_config, forward=None if kafka else send)
            if kafka:
                from tools.loadtest.kafka_io import TopicReader

                readers.append(TopicReader(settings, topics["detections"], cameras.on_detection).start())
            console.print(f"starting hazardctl detect on {o.cameras_from} for {o.cameras} cameras …", highlight=False)
            cameras.launch()
            phase("detect_first_detection_s")
        chaos = chaos_mod.ChaosRunner(plan, sim, pipeline, bootstrap=settings.bootstrap_servers if settings else None,
                                      script=str(KAFKA_SCRIPT), say=lambda s: console.print(s, highlight=False),
                                      tasks_topic=topics["tasks"] if topics else None, settings=settings)
        cpu = CpuMeter(pipeline, sim, _broker_home(settings) if settings else None,
                       {"detect": cameras.proc} if getattr(cameras, "proc", None) else None)
        start = time.time() + 0.5
        cameras.start(start, o.duration)
        cpu.begin()
        view = live_mod.LiveView(console, o, start, cameras, ledger, sim, pipeline, enabled=o.live)
        with view:
            while True:
                time.sleep(0.25)
                elapsed = time.time() - start
                chaos.tick(elapsed)
                if int(elapsed * 4) % 4 == 0:
                    cpu.sample()  # each second: a killed stage or broker takes its CPU count along
                view.update(elapsed)
                if elapsed >= o.duration:
                    break
            phase("cameras_s")
            cameras.join(10)
            if output is not None:
                output.flush(30)
            pipeline.close_input()
            drain_until = time.time() + o.deadline + 10
            stable_since = [time.time(), -1]

            def drained() -> bool:
                view.update(time.time() - start)
                n = len(ledger.tasks)
                if n != stable_since[1]:
                    stable_since[:] = [time.time(), n]
                quiet = time.time() - stable_since[0] > 3.0
                return ledger.settled() and (n >= cameras.stats.predicted_tasks or quiet)

            wait_for(drained, max(0.0, drain_until - time.time()), 0.25)
        phase("drain_s")
        cpu_report = cpu.end()
        sim_stats = sim.stats()
        states = key_states(pipeline.metrics_text("schedule"))
        alerts.stop()
        codes = pipeline.stop()
        phase("stop_stages_s")
        pipeline.read_dead_files()
        time.sleep(0.5 if o.transport == "kafka" else 0)
        for r in readers:
            r.stop()
        summary = summarize(o, run_id, start, cameras, ledger, sim_stats, states, cpu_report, chaos.fired, codes,
                            delivery_errors[0], topics)
        summary["latency"]["alert"] = report.dist(alerts.latencies())
        alerting = sum(r.outcome == "ok" and r.level in ("low", "medium", "high") for r in ledger.rows())
        summary["alerts"] = {"incident_events": len(alerts.latencies()), "alerting_results": alerting,
                             "client_error": alerts.error}
        summary["phases"] = phases
        summary["asserts"] = report.check_asserts(summary, asserts)
        summary["passed"] = all(a["ok"] for a in summary["asserts"])
        write_outputs(out, summary, ledger)
        if o.plot:
            try:
                summary["png"] = str(plot_mod.plot(out / "loadtest.png", summary, ledger, start))
            except Exception as e:  # the figures stand without the picture
                summary["png_error"] = f"{type(e).__name__}: {e}"
        write_outputs(out, summary, None)
        show.print_report(console, summary)
        return summary
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if cameras is not None:
            cameras.stop()
        for r in readers:
            try:
                r.stop()
            except Exception:
                pass
        if alerts is not None:
            alerts.stop()
        if pipeline is not None:
            pipeline.kill_all()
        if sim is not None:
            sim.proc.terminate(5)
        if topics and not o.keep_topics:
            from tools.loadtest.kafka_io import delete_topics

            delete_topics(settings, list(topics.values()))


def _broker_home(settings) -> Path | None:
    try:
        return chaos_mod.local_broker_home(settings.bootstrap_servers)
    except ConfigError:
        return None  # a remote broker: its CPU is not on this machine


def probe(send, ledger: Ledger, cfg: SceneConfig, crops, run_id: str, timeout: float) -> None:
    """Send probe frames (one every 3 s) until one's result lands: the whole pipeline carries messages
    (consumer groups joined, a Flink job running, the scheduler's clients up) before the clock starts."""
    from tools.loadtest.cameras import probe_frame

    deadline = time.time() + timeout
    attempt = 0
    while time.time() < deadline:
        send(f"lt-warmup-{attempt}".encode(), probe_frame(cfg, crops, run_id, attempt))
        attempt += 1
        if wait_for(lambda: ledger.warmup_results > 0, min(3.0, max(0.0, deadline - time.time())), 0.05):
            return
    raise ServiceUnavailable(f"no result came through the pipeline within {timeout:g} s of the stages starting")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def summarize(o: Options, run_id: str, start: float, cameras: Cameras, ledger: Ledger, sim_stats, states, cpu_report,
              chaos_fired, codes, delivery_errors: int, topics) -> dict:
    counts = ledger.counts()
    rows = ledger.rows()
    cs = cameras.stats
    warm = min(5.0, o.duration / 4)
    window = o.duration - warm
    ok_in_window = sum(1 for r in rows if r.outcome == "ok" and r.on_topic and start + warm <= r.on_topic < start + o.duration)
    offered_in_window = sum(1 for r in rows if r.offered_at and start + warm <= r.offered_at < start + o.duration)
    with cs.lock:
        lags = list(cs.lags)
        frames, groups, late = cs.frames, cs.groups, cs.late
        predicted = dict(cs.predicted)
        expected = dict(cs.expected)
    production = report.production(expected, rows)
    # a predicted task expand never produced is lost like one that never came back: both count against success
    tasks = counts["offered"] + production["never_produced"]
    success = counts["ok"] / tasks if tasks else 0.0
    lat = report.latencies(rows)
    return {
        "run_id": run_id,
        "mode": mode(o),
        "config": {"cameras": o.cameras, "rate": o.rate, "duration_s": o.duration, "keys": o.keys,
                   "qps_per_key": o.qps_per_key, "llm_latency": o.llm_latency, "transport": o.transport,
                   "engine": o.engine, "fps": o.fps, "refresh_s": o.refresh, "deadline_s": o.deadline,
                   "chaos": o.chaos, "sim_args": o.sim_args, "topics": topics,
                   "jitter_allowance_ms": o.jitter_allowance_ms,
                   "cameras_from": str(o.cameras_from) if o.cameras_from else None, "expand_args": o.expand_args,
                   "motion": o.motion, "hazard_every_s": o.hazard_every if o.motion else None},
        "cameras": {"frames": frames, "detections_per_s": round(frames / o.duration, 2),
                    "groups_shown": groups, "groups_shown_per_s": round(groups / o.duration, 2),
                    "late": late, "late_threshold_s": 0.1, "lag": report.dist(lags),
                    "send_errors": cs.send_errors + delivery_errors, "tasks_predicted": predicted,
                    "tasks_predicted_total": sum(predicted.values())},
        "rates": {"design_tasks_per_s": round(o.cameras * o.rate, 2),
                  "tasks_per_s": round(offered_in_window / window, 2),
                  "achieved_per_s": round(ok_in_window / window, 2), "window_s": [warm, o.duration],
                  "capacity_per_s": o.keys * o.qps_per_key},
        "counts": counts,
        "reasons": _reasons(rows),
        "production": production,
        "lost": {"never_produced": production["never_produced"], "in_flight": counts["in_flight"],
                 "total": production["never_produced"] + counts["in_flight"]},
        "identity": report.identity(counts),
        "success": round(success, 5),
        "errors": _errors(rows),
        "dead_letters_by_stage": dict(ledger.dead_letters_by_stage),
        "latency": lat,
        "keys": report.per_key(rows, sim_stats, states),
        "sim_totals": (sim_stats or {}).get("totals"),
        "cpu": cpu_report,
        "chaos": chaos_fired,
        "exit_codes": codes,
        "timeline": _timeline(rows, cameras, start, o.duration + o.deadline + 10),
        "motion": hazards.figures(cs.hazards, rows, o.cameras, round(offered_in_window / window, 2), o.deadline, o.fps)
        if o.motion else None,
    }


def _reasons(rows) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        if r.reason:
            out[r.reason] = out.get(r.reason, 0) + 1
    return out


def _errors(rows) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        if r.outcome not in (None, "ok"):
            k = f"{r.outcome}:{r.error_class or '-'}"
            out[k] = out.get(k, 0) + 1
    return out


def _timeline(rows, cameras: Cameras, start: float, seconds: float) -> dict:
    n = int(seconds) + 1
    with cameras.stats.lock:
        sent = list(cameras.stats.sent_at)
    return {"detections": report.per_second(sent, start, n),
            "tasks": report.per_second([r.offered_at for r in rows if r.offered_at], start, n),
            "ok": report.per_second([r.on_topic for r in rows if r.outcome == "ok" and r.on_topic], start, n),
            "not_ok": report.per_second([r.on_topic for r in rows if r.outcome not in (None, "ok") and r.on_topic],
                                        start, n)}


def write_outputs(out: Path, summary: dict, ledger: Ledger | None) -> None:
    import orjson

    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    if ledger is not None:
        with open(out / "tasks.jsonl", "wb") as f:
            for r in ledger.rows():
                f.write(orjson.dumps(r.json()) + b"\n")
            for t in summary.get("production", {}).get("never_produced_tasks", []):  # predicted, never produced
                f.write(orjson.dumps({**t, "outcome": "never_produced"}) + b"\n")
