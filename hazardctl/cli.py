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


def command(name: str | None = None, **kwargs) -> Callable:
    """Register a typer command whose HazardErrors become one red line and their exit code."""

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


@command("schema", help="Print the JSON Schema of a message.\n\nExample: hazardctl schema assessment-task")
def schema_cmd(name: Optional[str] = typer.Argument(None, help="Message name; omit to list the names.")) -> None:
    from hazardctl.messages import MESSAGE_MODELS

    if name is None:
        typer.echo("\n".join(MESSAGE_MODELS))
        return
    if name not in MESSAGE_MODELS:
        raise ConfigError(f"unknown message {name!r}; one of: {', '.join(MESSAGE_MODELS)}")
    typer.echo(json.dumps(MESSAGE_MODELS[name].model_json_schema(), indent=2))


@command(
    "expand",
    help="Turn detection results into one assessment task per group worth assessing (gated).\n\n"
    "Example: hazardctl expand < detections.jsonl > tasks.jsonl\n\n"
    "Example: hazardctl expand --in kafka://detection-results --out kafka://assessment-tasks",
)
def expand_cmd(
    in_spec: str = typer.Option("-", "--in", help=IN_HELP),
    out_spec: str = typer.Option("-", "--out", help=OUT_HELP),
    dlq: Optional[str] = typer.Option(None, "--dlq", help=DLQ_HELP),
    engine: str = typer.Option("local", help="'local' (pure Python). The Flink engine is not built yet."),
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

    if engine != "local":
        raise ConfigError(f"--engine {engine}: only 'local' is available in this version")
    cfg = expand.ExpandConfig(GateConfig(refresh_interval_s=refresh, ttl_s=ttl, min_iou=min_iou), deadline_s=deadline)
    serve_metrics(metrics_port)
    expand.run(in_spec, out_spec, dlq, cfg=cfg, endpoints=Endpoints(kafka_config), group_id=group_id)


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
    help="Serve a simulated OpenAI-compatible vision LLM on loopback (per-key 429 limits, fault injection).\n\n"
    "Prints the base URL on stdout, serves until SIGTERM/Ctrl-C. Flags override --config.\n\n"
    "Example: hazardctl llm-sim --keys 10 --qps 5 --latency uniform:1:2 --fault sim-key-03=unauthorized",
)
def llm_sim_cmd(
    config: Optional[str] = typer.Option(None, "--config", help="Simulator YAML (see config/llm_sim.yaml)."),
    host: Optional[str] = typer.Option(None, help="Address to bind (default: 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="Port; 0 = any free port (default: 8000)."),
    keys: Optional[int] = typer.Option(None, help="Generate N keys sim-key-01.. (secrets sim-secret-01..) (default: 10)."),
    qps: Optional[float] = typer.Option(None, help="Per-key qps limit (token bucket) (default: 5)."),
    rpm: Optional[int] = typer.Option(None, help="Per-key requests per sliding minute (default: none)."),
    latency: Optional[str] = typer.Option(
        None, help="fixed:S | uniform:MIN:MAX | lognormal:MEDIAN:P95 (default: uniform:1.0:2.0)."),
    fault: list[str] = typer.Option(
        [], "--fault", help="KEY=FAULT[,param=value...], repeatable; e.g. sim-key-02=server_error_burst,count=5."),
    seed: Optional[int] = typer.Option(None, help="Seed of answers and latencies (default: 1)."),
    model: Optional[str] = typer.Option(None, help="Model name in answers (default: qwen-vl-plus)."),
) -> None:
    from hazardctl import llm_sim

    cfg = llm_sim.build_config(config, keys=keys, qps=qps, rpm=rpm, latency=latency, faults=fault, seed=seed,
                               host=host, port=port, model=model)
    llm_sim.run(cfg)


def run() -> None:
    app()


if __name__ == "__main__":
    run()
