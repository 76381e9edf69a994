"""`hazardctl status`: the live terminal dashboard as a command."""

from __future__ import annotations

from typing import Optional

import typer
from hazardctl.cli_common import KAFKA_CONFIG_HELP, command


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
    token_file: Optional[str] = typer.Option(
        None, "--token-file", help="consume's bearer token (its metrics require it), sent to the stage named "
        "consume only. Default: $HAZARDCTL_CONSUME_TOKEN."),
) -> None:
    from hazardctl.config import load_kafka_settings
    from stages.consume_auth import load_token
    from tools import status

    cfg = status.load_status_config(config)
    if stage:
        cfg.stages = status.parse_stage_flags(stage)
    if group:
        cfg.groups = list(group)
    if interval is not None:
        cfg.interval_s = interval
    kafka = None if no_kafka else load_kafka_settings(kafka_config)
    token = load_token(token_file)
    status.run(cfg, kafka, once=once or as_json, as_json=as_json, tokens={"consume": token} if token else None)
