"""`hazardctl loadtest`: simulated cameras and LLM around the real stages, as a command."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

from hazardctl.cli_common import KAFKA_CONFIG_HELP, command, err_console
from hazardctl.errors import ConfigError


@command(
    "loadtest",
    help="Simulated cameras (open loop) and a simulated LLM around the real expand, schedule and consume "
    "processes (or, with --cameras-from VIDEO, the real detect stage on a video); chaos at chosen seconds; a live "
    "view, then tasks produced vs the gate's prediction, exact percentiles (per-task e2e - LLM first), a per-key "
    "table, summary.json, tasks.jsonl and a PNG (docs/loadtest.md). Exit 1 when an --assert fails.\n\n"
    "Example: hazardctl loadtest --cameras 50 --rate 0.5 --duration 60 --transport kafka --chaos key-401@20 "
    "--assert 'produced_vs_expected==1' --assert 'e2e_minus_llm.p95<=0.15' --assert 'success>=0.99'",
)
def loadtest_cmd(
    cameras: int = typer.Option(50, min=1, help="Simulated cameras, each on its own clock."),
    rate: float = typer.Option(0.5, help="Groups per second per camera that reach the LLM (tasks); with --motion "
                               "the road's activity (what the classic gate would pass; the danger-aware gate sends fewer)."),
    duration: float = typer.Option(60.0, help="Seconds the cameras run (then the pipeline drains)."),
    keys: int = typer.Option(10, min=1, help="Simulated API keys."),
    qps_per_key: float = typer.Option(5.0, help="Each key's rate limit (simulator and scheduler)."),
    llm_latency: str = typer.Option("uniform:1,2", help="LLM latency: uniform:MIN,MAX | fixed:S | lognormal:MEDIAN,P95."),
    transport: str = typer.Option("kafka", help="kafka (fresh topics per run) or pipes."),
    engine: str = typer.Option("local", help="expand's engine: local or flink."),
    sim_arg: list[str] = typer.Option([], "--sim-arg", help="Extra flag for hazardctl llm-sim, repeatable "
                                      "(e.g. --sim-arg=--fault --sim-arg=sim-key-02=malformed,probability=0.1)."),
    chaos: list[str] = typer.Option([], "--chaos", help="NAME@SECONDS, repeatable: key-401, key-429-storm, "
                                    "latency-spike, 5xx-burst, kill-schedule, kill-expand, broker-restart."),
    asserts: list[str] = typer.Option([], "--assert", help="NAME OP NUMBER, repeatable, e.g. 'e2e.p95<2.0', "
                                      "'success>=0.99', 'achieved>=25'."),
    out: Optional[str] = typer.Option(None, help="Folder for summary.json, tasks.jsonl, loadtest.png, logs "
                                      "(default: loadtest-results/RUN_ID)."),
    sweep: Optional[str] = typer.Option(None, help="'cameras': find the largest camera count meeting the asserts."),
    fps: float = typer.Option(1.0, help="Frames per second per camera."),
    refresh: float = typer.Option(10.0, help="expand's refresh interval (s)."),
    deadline: float = typer.Option(10.0, help="Task deadline, seconds after capture."),
    kafka_config: Optional[str] = typer.Option(None, help=KAFKA_CONFIG_HELP),
    bootstrap: Optional[str] = typer.Option(None, help="Kafka bootstrap servers (default: the config's; the local "
                                            "broker is started when it is not running)."),
    keep_topics: bool = typer.Option(False, help="Keep the run's topics (default: deleted at the end)."),
    live: Optional[bool] = typer.Option(None, "--live/--no-live", help="Live view (default: on a terminal)."),
    jitter_allowance_ms: Optional[float] = typer.Option(
        None, help="The key pool's pacing margin for network jitter (default: the pool's, 40 ms = 3.8 % of each "
        "key's rate); loopback to the simulator jitters ~1 ms."),
    cameras_from: Optional[str] = typer.Option(
        None, "--cameras-from", metavar="VIDEO", help="Run the real detect stage (CenterNet ONNX from make models) "
        "on VIDEO, one looping copy per camera, instead of simulated detections: end to end then includes "
        "inference. Keep --cameras small on a laptop (each camera is a CPU inference per frame)."),
    motion: bool = typer.Option(False, "--motion", help="Objects carry motion and groups cues (hazardctl.kinematics, "
                                "hazardctl.cues): calm traffic the danger-aware gate holds, and labelled hazards (a car "
                                "approaching a pedestrian) it must send as suspect; reports calls/camera-s and hazard recall."),
    hazard_every: float = typer.Option(60.0, help="With --motion: one hazard per camera this often (s; 0: none)."),
    expand_arg: list[str] = typer.Option([], "--expand-arg", help="Extra flag for hazardctl expand, repeatable "
                                         "(e.g. --expand-arg=--gate --expand-arg=classic). The loadtest's prediction "
                                         "does not see it: a gate setting here makes produced_vs_expected differ."),
) -> None:
    from pathlib import Path

    from tools import loadtest

    opts = loadtest.Options(cameras=cameras, rate=rate, duration=duration, keys=keys, qps_per_key=qps_per_key,
                            llm_latency=llm_latency, transport=transport, engine=engine, sim_args=sim_arg,
                            chaos=chaos, asserts=asserts, out=Path(out) if out else None, fps=fps, refresh=refresh,
                            deadline=deadline, kafka_config=Path(kafka_config) if kafka_config else None,
                            bootstrap=bootstrap, keep_topics=keep_topics, live=live,
                            jitter_allowance_ms=jitter_allowance_ms,
                            cameras_from=Path(cameras_from) if cameras_from else None, expand_args=expand_arg,
                            motion=motion, hazard_every=hazard_every)
    if sweep is not None:
        if sweep != "cameras":
            raise ConfigError(f"--sweep {sweep!r}: only 'cameras' can be swept")
        from tools.loadtest.sweep import sweep as run_sweep

        if run_sweep(opts, Console())["largest_passing"] == 0:
            raise typer.Exit(1)  # not even the first count met the asserts
        return
    try:
        summary = loadtest.run(opts)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: run() has already stopped every process it started
        err_console.print("hazardctl loadtest: interrupted; every process it started is stopped", highlight=False)
        raise typer.Exit(130) from None
    if not summary["passed"]:
        raise typer.Exit(1)
