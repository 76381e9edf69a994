"""The `hazardctl` command: thin typer commands that parse, validate config, and call a stage's run().

Expected failures (bad config, missing file, unreachable broker) are one line on stderr and a
distinct exit code (see hazardctl.errors); never a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from typing import Callable, Optional

import typer
from rich.console import Console

from hazardctl import __version__
from hazardctl.errors import ConfigError, HazardError

app = typer.Typer(
    name="hazardctl",
    help="Real-time dangerous-scene detection for traffic cameras.\n\n"
    "Stages are joined by Kafka topics (kafka://TOPIC) or Unix pipes of JSON lines (-):\n\n"
    "  hazardctl expand < detections.jsonl | hazardctl schedule --keys config/api_keys.yaml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
err_console = Console(stderr=True, highlight=False)
log = logging.getLogger("hazardctl")

IN_HELP = "Input: '-' (stdin JSON lines), a file path, or kafka://TOPIC."
OUT_HELP = "Output: '-' (stdout JSON lines), a file path, or kafka://TOPIC."
DLQ_HELP = "Dead-letter output (default: stderr for pipes, kafka://dead-letters for Kafka input)."
KAFKA_CONFIG_HELP = "Kafka settings YAML (default: config/kafka.yaml, env HAZARDCTL_KAFKA_*)."


def setup_logging(level: str | None = None) -> None:
    level = (level or os.environ.get("HAZARDCTL_LOG_LEVEL", "INFO")).upper()
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


#: the pipeline's stages, shown in their own panel of `hazardctl --help`
STAGES = ("detect", "expand", "schedule", "consume")


def command(name: str | None = None, **kwargs) -> Callable:
    """Register a typer command whose HazardErrors become one red line and their exit code."""
    kwargs.setdefault("rich_help_panel", "Pipeline stages (cameras → detect → expand → schedule → consume)"
                      if name in STAGES else "Tools")

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kw):
            setup_logging()
            try:
                return fn(*args, **kw)
            except HazardError as e:
                err_console.print(f"[bold red]hazardctl {name or fn.__name__}: error:[/] {e}", soft_wrap=True)
                raise typer.Exit(e.exit_code) from None

        return app.command(name, **kwargs)(run)

    return wrap


@app.callback(invoke_without_command=True)
def main(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


@command(
    "detect",
    help="Read cameras, detect road users, group the ones close together, publish detection results "
    "with one JPEG crop per group.\n\n"
    "Example: hazardctl detect --source tests/data/bus.jpg\n\n"
    "Example: hazardctl detect --source rtsp://10.0.0.5/stream1 --camera-id cam-01 --source lobby.mp4 "
    "--camera-id cam-02 --out kafka://detection-results --metrics-port 9101\n\n"
    "Example: hazardctl detect --cameras config/cameras.yaml --out kafka://detection-results",
)
def detect_cmd(
    source: Optional[list[str]] = typer.Option(
        None, "--source", metavar="URL|FILE|DEVICE|DIR", help="rtsp:// or http(s):// URL, video file, device index, image folder or image; "
        "repeat for several cameras."),
    camera_id: Optional[list[str]] = typer.Option(
        None, "--camera-id", metavar="ID", help="Id of the --source in the same position (default: from the source's name)."),
    cameras: Optional[str] = typer.Option(None, "--cameras", help="Cameras YAML (see config/cameras.yaml)."),
    fps: Optional[float] = typer.Option(None, help="Frames analysed per second per camera (default: 2)."),
    model: str = typer.Option(".cache/models/centernet-coco.onnx", help="Detector: .onnx (onnxruntime) or .pt "
                              "(ultralytics)."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    classes: str = typer.Option("person,bicycle,car,motorcycle,bus,truck,traffic light,stop sign",
                                help="Comma-separated class names the model must know; 'all' for every class."),
    conf: float = typer.Option(0.35, help="Minimum detection confidence."),
    iou: float = typer.Option(0.5, help="NMS IoU threshold."),
    imgsz: int = typer.Option(640, help="Detector input size (YOLO models)."),
    out: str = typer.Option("-", "--out", help=OUT_HELP),
    metrics_port: Optional[int] = typer.Option(None, help="Serve Prometheus /metrics on this port."),
    as_fast_as_possible: bool = typer.Option(False, "--as-fast-as-possible",
                                             help="Files: do not pace at real time, lose no sampled frame."),
    loop: bool = typer.Option(False, "--loop", help="Files: start again at the end."),
    max_message_bytes: Optional[int] = typer.Option(
        None, help="Keep each result under this size by shrinking crops (default: the Kafka topic's "
        "max.message.bytes, 1000000 for pipes)."),
    buffer_mb: float = typer.Option(64.0, help="Results held undelivered while the output is away; beyond "
                                    "this the oldest are dropped (counted)."),
    batch: int = typer.Option(8, help="Most frames per detector call (frames ready across cameras)."),
    link_k: float = typer.Option(0.75, help="Group road users whose box gap ≤ k × their mean box diagonal."),
    max_group: int = typer.Option(8, help="Split groups with more members than this."),
    crop_max_side: int = typer.Option(768, help="Longest side of a group crop, pixels."),
    jpeg_quality: int = typer.Option(85, help="JPEG quality of crops."),
    track: bool = typer.Option(True, "--track/--no-track", help="Track objects (ByteTrack) for stable group ids."),
    kafka_config: Optional[str] = typer.Option(None, help=KAFKA_CONFIG_HELP),
) -> None:
    from hazardctl.grouping import GroupingConfig
    from hazardctl.metrics import serve_metrics
    from hazardctl.transports import Endpoints

    try:
        import stages.detect as detect
        from stages.detect.crops import CropConfig
        from stages.detect.sources import ReaderSettings, load_cameras, make_spec, unique_ids
    except ImportError as e:  # cv2/numpy are the [detect] extra
        raise ConfigError(f"detect needs the [detect] extra ({e}); pip install 'hazardctl[detect]'") from None

    if bool(source) == bool(cameras):
        raise ConfigError("give either --source (repeatable) or --cameras FILE")
    if cameras:
        specs = load_cameras(cameras, fps, loop or None)
    else:
        ids = list(camera_id or [])
        if len(ids) > len(source):
            raise ConfigError(f"{len(ids)} --camera-id for {len(source)} --source")
        ids += [None] * (len(source) - len(ids))
        specs = unique_ids([make_spec(s, i, fps or 2.0, loop) for s, i in zip(source, ids)],
                           {i for i in ids if i})
    class_list = None if classes.strip().lower() == "all" else tuple(c.strip() for c in classes.split(",") if c.strip())
    for name, value, ok in (("--batch", batch, batch >= 1), ("--link-k", link_k, link_k > 0),
                            ("--max-group", max_group, max_group >= 2), ("--buffer-mb", buffer_mb, buffer_mb > 0),
                            ("--crop-max-side", crop_max_side, crop_max_side >= 64),
                            ("--jpeg-quality", jpeg_quality, 1 <= jpeg_quality <= 100)):
        if not ok:
            raise ConfigError(f"{name} {value}: out of range")
    cfg = detect.DetectConfig(
        cameras=tuple(specs), out=out, model=model, device=device, classes=class_list, conf=conf, iou=iou,
        imgsz=imgsz, track=track, max_batch=batch, max_message_bytes=max_message_bytes,
        buffer_bytes=int(buffer_mb * 1024 * 1024),
        grouping=GroupingConfig(link_k=link_k, max_size=max_group),
        crops=CropConfig(max_side=crop_max_side, jpeg_quality=jpeg_quality),
        reader=ReaderSettings(realtime=not as_fast_as_possible),
    )
    serve_metrics(metrics_port)
    detect.run(cfg, endpoints=Endpoints(kafka_config))


@command(
    "expand",
    help="Turn detection results into one assessment task per group worth assessing (gated).\n\n"
    "Example: hazardctl expand < detections.jsonl > tasks.jsonl\n\n"
    "Example: hazardctl expand --in kafka://detection-results --out kafka://assessment-tasks",
)
def expand_cmd(
    ctx: typer.Context,
    in_spec: str = typer.Option("-", "--in", help=IN_HELP),
    out_spec: str = typer.Option("-", "--out", help=OUT_HELP),
    dlq: Optional[str] = typer.Option(None, "--dlq", help=DLQ_HELP),
    engine: str = typer.Option("local", help="'local' (pure Python) or 'flink' (PyFlink job, Kafka only; docs/flink.md)."),
    jobmanager: Optional[str] = typer.Option(
        None, help="flink: submit to the session cluster at HOST:PORT (REST), print the job id; default: local mini-cluster."),
    flink_config: Optional[str] = typer.Option(None, help="flink: settings YAML (default config/flink.yaml)."),
    from_savepoint: Optional[str] = typer.Option(None, help="flink --jobmanager: start from this savepoint/checkpoint."),
    refresh: float = typer.Option(10.0, help="Re-assess an unchanged group after this many seconds."),
    ttl: float = typer.Option(30.0, help="Forget a group not seen for this many seconds."),
    min_iou: float = typer.Option(0.5, help="Box IoU with the last sent box below this is a change."),
    deadline: float = typer.Option(10.0, help="Task deadline, seconds after capture."),
    group_id: str = typer.Option("hazardctl-expand", "--group", help="Kafka consumer group."),
    kafka_config: Optional[str] = typer.Option(None, help=KAFKA_CONFIG_HELP),
    metrics_port: Optional[int] = typer.Option(None, help="Serve Prometheus /metrics on this port."),
) -> None:
    from hazardctl.gating import GateConfig
    from hazardctl.metrics import serve_metrics
    from hazardctl.transports import Endpoints
    from stages import expand

    if engine == "flink":
        from stages.expand import flink_cli

        flags = {"refresh": refresh, "ttl": ttl, "min_iou": min_iou, "deadline": deadline}
        given = {k: v for k, v in flags.items() if ctx.get_parameter_source(k).name != "DEFAULT"}
        raise typer.Exit(flink_cli.run_expand(in_spec, out_spec, dlq, group_id=group_id, gate_flags=given,
                                              jobmanager=jobmanager, flink_config=flink_config,
                                              from_savepoint=from_savepoint, kafka_config=kafka_config))
    if engine != "local":
        raise ConfigError(f"--engine {engine}: use 'local' or 'flink'")
    cfg = expand.ExpandConfig(GateConfig(refresh_interval_s=refresh, ttl_s=ttl, min_iou=min_iou), deadline_s=deadline)
    serve_metrics(metrics_port)
    expand.run(in_spec, out_spec, dlq, cfg=cfg, endpoints=Endpoints(kafka_config), group_id=group_id)


@command(
    "flink-job",
    help="See and stop expand's Flink jobs on a session cluster (JobManager REST API).\n\n"
    "list: JOB_ID STATE NAME per line; cancel JOB_ID; savepoint JOB_ID [--stop]: prints the savepoint path.\n\n"
    "Example: hazardctl flink-job savepoint 5f1e… --stop --jobmanager 127.0.0.1:18081",
)
def flink_job_cmd(
    action: str = typer.Argument(..., help="list | cancel | savepoint"),
    job_id: Optional[str] = typer.Argument(None, help="The job (cancel, savepoint)."),
    jobmanager: str = typer.Option("127.0.0.1:18081", help="JobManager REST address HOST:PORT."),
    stop: bool = typer.Option(False, "--stop", help="savepoint: stop the job once the savepoint is written."),
    target: Optional[str] = typer.Option(None, help="savepoint: directory (default: the cluster's savepoint dir)."),
) -> None:
    from stages.expand import flink_cli

    flink_cli.preflight(flink_cli.settings_or_exit(None), jobmanager)
    if action == "list":
        for j in flink_cli.list_jobs(jobmanager):
            typer.echo(f"{j['jid']} {j['state']} {j['name']}")
    elif action in ("cancel", "savepoint") and job_id:
        if action == "cancel":
            flink_cli.cancel(jobmanager, job_id)
            typer.echo(f"cancelling {job_id}")
        else:
            typer.echo(flink_cli.savepoint(jobmanager, job_id, stop=stop, target=target))
    else:
        raise ConfigError(f"flink-job {action}: use list, cancel JOB_ID or savepoint JOB_ID [--stop]")


@command(
    "setup-topics",
    help="Create the pipeline's Kafka topics if missing; report any that differ (idempotent).\n\n"
    "Example: hazardctl setup-topics --dry-run",
)
def setup_topics_cmd(
    topics: str = typer.Option("config/kafka_topics.yaml", "--topics", help="Topics YAML."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; change nothing."),
    timeout: float = typer.Option(30.0, help="Seconds to wait for a broker to answer."),
    kafka_config: Optional[str] = typer.Option(None, help=KAFKA_CONFIG_HELP),
) -> None:
    from hazardctl.config import load_kafka_settings
    from hazardctl.topics import setup_topics

    setup_topics(load_kafka_settings(kafka_config), topics, dry_run=dry_run, timeout=timeout, report=typer.echo)


@command(
    "llm-sim",
    help="Serve a simulated OpenAI-compatible vision LLM on loopback (key and account limits as strict as a "
    "provider's, DashScope-like 429s, fault injection).\n\n"
    "Prints the base URL on stdout, serves until SIGTERM/Ctrl-C. Flags override --config. See docs/llm-sim.md.\n\n"
    "Example: hazardctl llm-sim --keys 10 --qps 5 --limiter sliding-window --jitter-ms 30 --fault sim-key-03=unauthorized",
)
def llm_sim_cmd(
    config: Optional[str] = typer.Option(None, "--config", help="Simulator YAML (see config/llm_sim.yaml)."),
    host: Optional[str] = typer.Option(None, help="Address to bind (default: 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="Port; 0 = any free port (default: 8000)."),
    keys: Optional[int] = typer.Option(None, help="Generate N keys sim-key-01.. (secrets sim-secret-01..) (default: 10)."),
    qps: Optional[float] = typer.Option(None, help="Per-key requests per second (default: 5)."),
    rpm: Optional[int] = typer.Option(None, help="Per-key requests per minute (default: none)."),
    tps: Optional[int] = typer.Option(None, help="Per-key tokens per second (default: none)."),
    tpm: Optional[int] = typer.Option(None, help="Per-key tokens per minute (default: none)."),
    limiter: Optional[str] = typer.Option(
        None, help="token-bucket | sliding-window | fixed-window: how every limit is enforced (default: token-bucket)."),
    keys_per_account: Optional[int] = typer.Option(
        None, help="Group the keys, in order, into accounts acct-01.. of N keys sharing the --account-* limits."),
    account_qps: Optional[float] = typer.Option(None, help="Per-account requests per second (default: none)."),
    account_rpm: Optional[int] = typer.Option(None, help="Per-account requests per minute (default: none)."),
    account_tps: Optional[int] = typer.Option(None, help="Per-account tokens per second (default: none)."),
    account_tpm: Optional[int] = typer.Option(None, help="Per-account tokens per minute (default: none)."),
    surge: Optional[bool] = typer.Option(
        None, "--surge/--no-surge", help="Refuse a key or account going from idle to full rate within a second."),
    jitter_ms: Optional[float] = typer.Option(None, help="Each request reaches the limiter a random 0..N ms late."),
    retry_after: Optional[str] = typer.Option(None, help="on | off: send Retry-After with a 429 (default: on)."),
    errors: Optional[str] = typer.Option(None, help="dashscope | openai: style of error bodies (default: dashscope)."),
    billing: list[str] = typer.Option(
        [], "--billing", help="KEY, repeatable: answer every request of KEY as an account in arrears."),
    metrics_port: Optional[int] = typer.Option(None, help="Serve Prometheus /metrics on this port."),
    latency: Optional[str] = typer.Option(
        None, help="fixed:S | uniform:MIN:MAX | lognormal:MEDIAN:P95 (default: uniform:1.0:2.0)."),
    fault: list[str] = typer.Option(
        [], "--fault", help="KEY=FAULT[,param=value...], repeatable; e.g. sim-key-02=server_error_burst,count=5."),
    seed: Optional[int] = typer.Option(None, help="Seed of answers and latencies (default: 1)."),
    model: Optional[str] = typer.Option(None, help="Model name in answers (default: qwen-vl-plus)."),
    answer_mix: Optional[str] = typer.Option(
        None, "--answer-mix", help="How answers are written, e.g. strict:0.7,fenced:0.1,synonyms:0.1,zh:0.1 or "
        "garbage:1 (variants: docs/llm-sim.md; default strict:1). At run time: POST /answer-mix {\"mix\": ...}."),
) -> None:
    from tools import llm_sim

    if retry_after not in (None, "on", "off"):
        raise ConfigError(f"--retry-after {retry_after!r}: expected on or off")
    cfg = llm_sim.build_config(config, keys=keys, qps=qps, rpm=rpm, tps=tps, tpm=tpm, limiter=limiter,
                               keys_per_account=keys_per_account, account_qps=account_qps, account_rpm=account_rpm,
                               account_tps=account_tps, account_tpm=account_tpm, surge=surge, jitter_ms=jitter_ms,
                               retry_after=None if retry_after is None else retry_after == "on", errors=errors,
                               billing=billing, metrics_port=metrics_port, latency=latency, faults=fault, seed=seed,
                               host=host, port=port, model=model, answer_mix=answer_mix)
    llm_sim.run(cfg)


NO_KEYS_HINT = ("no API keys: pass --keys FILE (a copy of config/api_keys.yaml with ${DASHSCOPE_KEY_...} set), "
                "or try the simulator: `hazardctl llm-sim --port 8000 &` then "
                "`hazardctl schedule --keys config/api_keys.sim.yaml`")


def _parse_shard(shard: str | None) -> tuple[int, int] | None:
    if shard is None:
        return None
    try:
        i, n = (int(p) for p in shard.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {shard!r}: expected I/N, e.g. 0/2") from None
    return i, n


@command(
    "schedule",
    help="Assess each task with a vision LLM, spreading calls over a pool of API keys (paced, never into a 429).\n\n"
    "Example: hazardctl schedule --keys config/api_keys.yaml < tasks.jsonl > results.jsonl\n\n"
    "Example: hazardctl schedule --keys config/api_keys.enc --in kafka://assessment-tasks "
    "--out kafka://risk-assessment-results --shard 0/2 --metrics-port 9102",
)
def schedule_cmd(
    keys: Optional[str] = typer.Option(
        None, "--keys", help="API keys YAML, or the encrypted file from keys-encrypt "
        "(default: $HAZARDCTL_KEYS, else config/api_keys.yaml)."),
    in_spec: str = typer.Option("-", "--in", help=IN_HELP),
    out_spec: str = typer.Option("-", "--out", help=OUT_HELP),
    dlq: Optional[str] = typer.Option(None, "--dlq", help=DLQ_HELP),
    workers: int = typer.Option(256, min=1, help="Tasks in progress at once (waiting for a key or in a call)."),
    shard: Optional[str] = typer.Option(
        None, help="I/N: use only the keys whose position in the file % N == I, so N instances never share a key."),
    group_id: str = typer.Option("hazardctl-schedule", "--group", help="Kafka consumer group."),
    kafka_config: Optional[str] = typer.Option(None, help=KAFKA_CONFIG_HELP),
    metrics_port: Optional[int] = typer.Option(None, help="Serve Prometheus /metrics on this port."),
    simulate: bool = typer.Option(
        True, help="With no --keys and no usable config/api_keys.yaml, start the simulated LLM instead of failing."),
    language: Optional[str] = typer.Option(
        None, "--language", help="Prompt language en|zh: risk types and description in it; levels stay "
        "none/low/medium/high (default: the keys file's `language`, else en)."),
    bad_answer_warn: Optional[float] = typer.Option(
        None, "--bad-answer-warn", min=0.01, max=1.0, help="WARNING when a model's unusable answers exceed this "
        "share of its last 50 (default: the keys file's `bad_answer_warn`, else 0.2)."),
) -> None:
    from pathlib import Path

    from hazardctl.keys import KEYS_ENV, load_keys
    from hazardctl.metrics import serve_metrics
    from hazardctl.transports import Endpoints
    from stages import schedule

    if language not in (None, "en", "zh"):
        raise ConfigError(f"--language {language}: one of en, zh")
    explicit = keys or os.environ.get(KEYS_ENV)  # a file the user named: any problem with it is an error
    path = explicit or "config/api_keys.yaml"
    sim = None
    if not explicit and not Path(path).is_file():
        if not simulate:
            raise ConfigError(NO_KEYS_HINT)
        sim, cfg = _start_simulated_llm("no keys file")
    else:
        try:
            cfg = load_keys(path)
        except ConfigError as e:
            # only the shipped example with none of its ${DASHSCOPE_KEY_...} set means "no key configured"
            unset = "environment variable DASHSCOPE_KEY_" in str(e) and not any(
                k.startswith("DASHSCOPE_KEY_") for k in os.environ)
            if explicit or not unset or not simulate:
                raise ConfigError(f"{e}; {NO_KEYS_HINT}" if not explicit else str(e)) from None
            sim, cfg = _start_simulated_llm("no DASHSCOPE_KEY_* set")
    try:
        parts = _parse_shard(shard)
        if parts:
            cfg = cfg.shard(*parts)
        if not cfg.keys:
            raise ConfigError(f"{path}: no keys" + (f" in shard {shard}" if shard else "") + f"; {NO_KEYS_HINT}")
        serve_metrics(metrics_port)
        schedule.run(in_spec, out_spec, dlq, keys=cfg, endpoints=Endpoints(kafka_config), group_id=group_id,
                     cfg=schedule.ScheduleConfig(workers=workers, language=language, bad_answer_warn=bad_answer_warn))
    finally:
        if sim is not None:
            sim.stop()


def _start_simulated_llm(why: str):
    """The embedded default: no key configured → the simulated LLM in its own process, 10 keys x 5 qps."""
    from hazardctl.keys import parse_keys
    from tools.llm_sim import build_config, start_sim_process

    sim_cfg = build_config(keys=10, qps=5, port=0)
    sim = start_sim_process(sim_cfg)
    log.warning("%s: assessing with the SIMULATED LLM at %s (10 keys x 5 qps), results are not real; "
                "pass --keys or set DASHSCOPE_KEY_001.. for real assessments (--no-simulate to fail instead)",
                why, sim.base_url)
    keys = [{"name": k.name, "api_key": k.api_key, "qps_limit": k.qps, "base_url": sim.base_url,
             "model": "simulated-vl"} for k in sim_cfg.keys]
    return sim, parse_keys({"strategy": "round_robin", "keys": keys}, "simulated LLM keys")


@command(
    "keys-encrypt",
    help="Encrypt an API keys file (Fernet, scrypt-derived key); `schedule --keys` reads it transparently.\n\n"
    "The passphrase comes from $HAZARDCTL_KEYS_PASSPHRASE or a prompt.\n\n"
    "Example: hazardctl keys-encrypt config/api_keys.yaml -o config/api_keys.enc",
)
def keys_encrypt_cmd(
    src: str = typer.Argument(..., help="The plain keys YAML."),
    out: str = typer.Option(..., "-o", "--out", help="Where to write the encrypted file (mode 0600)."),
    resolve_env: bool = typer.Option(
        False, "--resolve-env", help="Replace ${VAR} references by their values now, so the file holds the secrets."),
) -> None:
    from hazardctl.keys import encrypt_file

    n = encrypt_file(src, out, resolve_env=resolve_env)
    err_console.print(f"hazardctl keys-encrypt: wrote {out} ({n} keys); delete the plain file if it holds secrets",
                      soft_wrap=True, highlight=False, markup=False)


@command(
    "consume",
    help="Turn risk-assessment results into per-camera state and incidents; push them live over WebSocket, "
    "serve the HTTP API and the live page.\n\n"
    "Example: hazardctl schedule --keys config/api_keys.yaml < tasks.jsonl | hazardctl consume --ws 127.0.0.1:8765  "
    "(then open http://127.0.0.1:8765/)\n\n"
    "Example: hazardctl consume --in kafka://risk-assessment-results --ws 0.0.0.0:8765 --http 0.0.0.0:8080 "
    "--metrics-port 9104",
)
def consume_cmd(
    in_spec: str = typer.Option("-", "--in", help=IN_HELP),
    ws: str = typer.Option("127.0.0.1:8765", "--ws", help="WebSocket address HOST:PORT (path /ws); it also serves "
                           "the live page and the HTTP API unless --http is given. Port 0 = any free port."),
    http: Optional[str] = typer.Option(None, "--http", help="Serve the live page and the HTTP API on their own "
                                       "address HOST:PORT as well."),
    dlq: Optional[str] = typer.Option(None, "--dlq", help=DLQ_HELP),
    min_level: str = typer.Option("medium", help="Lowest level that opens an incident: low, medium or high."),
    quiet_period: float = typer.Option(30.0, help="An incident ends after this many seconds without a result at or "
                                       "above --min-level."),
    group_ttl: float = typer.Option(60.0, help="A group without results for this many seconds leaves its camera's view."),
    client_queue: int = typer.Option(256, min=1, help="Messages a slow client may have waiting before it is dropped "
                                     "(close code 4008)."),
    replay: float = typer.Option(120.0, help="Kafka input: rebuild state from this many seconds of the topic on "
                                 "start (0 = start empty)."),
    cache_size: int = typer.Option(1000, min=1, help="Recent results kept for /results and /cameras/{id}."),
    exit_on_eof: bool = typer.Option(False, "--exit-on-eof", help="Stop when a pipe or file input ends (default: "
                                     "keep serving)."),
    group_id: str = typer.Option("hazardctl-consume", "--group", help="Kafka consumer group; give each consume "
                                 "instance its own so each sees every camera."),
    kafka_config: Optional[str] = typer.Option(None, help=KAFKA_CONFIG_HELP),
    metrics_port: Optional[int] = typer.Option(None, help="Also serve Prometheus /metrics on this port "
                                               "(it is always on the HTTP API's /metrics)."),
    token_file: Optional[str] = typer.Option(
        None, "--token-file", help="Require this bearer token (the file's one line) on the HTTP API, /metrics and "
        "the WebSocket; the page asks for it. Default: $HAZARDCTL_CONSUME_TOKEN, else no token."),
    allow_origin: list[str] = typer.Option(
        [], "--allow-origin", help="A browser origin (https://ops.example.com) allowed to open the WebSocket besides "
        "the server's own; repeatable; '*' allows any (not advised)."),
    max_clients: int = typer.Option(1000, min=1, help="Most WebSocket clients at once; more are refused (503)."),
) -> None:
    from hazardctl.incidents import BoardConfig
    from hazardctl.metrics import serve_metrics
    from hazardctl.transports import Endpoints
    from stages import consume
    from stages.consume_web import AccessPolicy, load_token, parse_origins

    if min_level not in ("low", "medium", "high"):
        raise ConfigError(f"--min-level {min_level!r}: one of low, medium, high")
    if quiet_period <= 0 or group_ttl <= 0 or replay < 0:
        raise ConfigError("--quiet-period and --group-ttl must be > 0, --replay >= 0")
    ws_host, ws_port = consume.parse_address(ws, "--ws")
    http_host, http_port = consume.parse_address(http, "--http") if http else (None, None)
    opts = consume.ConsumeOptions(
        ws_host=ws_host, ws_port=ws_port, http_host=http_host, http_port=http_port,
        board=BoardConfig(min_level=min_level, quiet_period_s=quiet_period, group_ttl_s=group_ttl),
        client_queue=client_queue, replay_s=replay, cache_size=cache_size, exit_on_eof=exit_on_eof,
        access=AccessPolicy(token=load_token(token_file), allow_origins=parse_origins(allow_origin),
                            max_clients=max_clients))
    serve_metrics(metrics_port)
    consume.run(in_spec, dlq, opts=opts, endpoints=Endpoints(kafka_config), group_id=group_id)


@command(
    "status",
    help="Live dashboard of a running pipeline: stages up/down, throughput, errors, Kafka consumer lag "
    "(from the broker), the key pool per key, end-to-end P95. Reads each stage's /metrics and Kafka.\n\n"
    "Example: hazardctl status --stage schedule=127.0.0.1:9102 --stage consume=127.0.0.1:9104 --once",
)
def status_cmd(
    config: Optional[str] = typer.Option(None, "--config", help="Status YAML (see config/status.yaml)."),
    stage: list[str] = typer.Option([], "--stage", help="NAME=HOST:PORT of a stage's /metrics, repeatable; "
                                    "replaces the config's stages."),
    group: list[str] = typer.Option([], "--group", help="Kafka consumer group to show lag for, repeatable."),
    no_kafka: bool = typer.Option(False, "--no-kafka", help="Do not read consumer lag (a pipes pipeline)."),
    interval: Optional[float] = typer.Option(None, help="Seconds between refreshes (default 2)."),
    once: bool = typer.Option(False, "--once", help="Print one frame (two scrapes, one interval apart) and exit."),
    as_json: bool = typer.Option(False, "--json", help="With --once: the frame as JSON."),
    kafka_config: Optional[str] = typer.Option(None, help=KAFKA_CONFIG_HELP),
) -> None:
    from hazardctl.config import load_kafka_settings
    from tools import status

    cfg = status.load_status_config(config)
    if stage:
        cfg.stages = status.parse_stage_flags(stage)
    if group:
        cfg.groups = list(group)
    if interval is not None:
        cfg.interval_s = interval
    kafka = None if no_kafka else load_kafka_settings(kafka_config)
    status.run(cfg, kafka, once=once or as_json, as_json=as_json)


@command(
    "loadtest",
    help="Simulated cameras (open loop) and a simulated LLM around the real expand, schedule and consume "
    "processes; chaos at chosen seconds; a live view, then exact percentiles, the accounting identity, a per-key "
    "table, summary.json, tasks.jsonl and a PNG (docs/loadtest.md). Exit 1 when an --assert fails.\n\n"
    "Example: hazardctl loadtest --cameras 50 --rate 0.5 --duration 60 --transport kafka --chaos key-401@20 "
    "--assert 'e2e.p95<2.2' --assert 'success>=0.99'",
)
def loadtest_cmd(
    cameras: int = typer.Option(50, min=1, help="Simulated cameras, each on its own clock."),
    rate: float = typer.Option(0.5, help="Groups per second per camera that reach the LLM (tasks)."),
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
) -> None:
    from pathlib import Path

    from tools import loadtest

    opts = loadtest.Options(cameras=cameras, rate=rate, duration=duration, keys=keys, qps_per_key=qps_per_key,
                            llm_latency=llm_latency, transport=transport, engine=engine, sim_args=sim_arg,
                            chaos=chaos, asserts=asserts, out=Path(out) if out else None, fps=fps, refresh=refresh,
                            deadline=deadline, kafka_config=Path(kafka_config) if kafka_config else None,
                            bootstrap=bootstrap, keep_topics=keep_topics, live=live,
                            jitter_allowance_ms=jitter_allowance_ms)
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


@command("schema", help="Print the JSON Schema of a message.\n\nExample: hazardctl schema assessment-task")
def schema_cmd(name: Optional[str] = typer.Argument(None, help="Message name; omit to list the names.")) -> None:
    from hazardctl.messages import MESSAGE_MODELS

    if name is None:
        typer.echo("\n".join(MESSAGE_MODELS))
        return
    if name not in MESSAGE_MODELS:
        raise ConfigError(f"unknown message {name!r}; one of: {', '.join(MESSAGE_MODELS)}")
    typer.echo(json.dumps(MESSAGE_MODELS[name].model_json_schema(), indent=2))


def run() -> None:
    app()


if __name__ == "__main__":
    run()
