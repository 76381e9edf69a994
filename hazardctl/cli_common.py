"""What every `hazardctl` command shares: the typer app, the error-to-one-line wrapper, logging, help texts.

The commands themselves live beside what they start (stages/*_cli.py, tools/*_cli.py) and register
on `app` through `command`; hazardctl/cli.py imports them all.

Expected failures (bad config, missing file, unreachable broker) are one line on stderr and a
distinct exit code (see hazardctl.errors); never a traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Callable

import typer
from rich.console import Console

from hazardctl import __version__
from hazardctl.errors import HazardError

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
FROM_TIME_HELP = ("Kafka input: rewind this stage's --group to this time before starting (ISO 8601, e.g. "
                  "2026-12-07T01:00:00Z, or back from now: -2h, -15m); a time in the future or before the topic's "
                  "retention is refused. docs/operations.md, 'Replay from a time'.")


def rewind_input(endpoints, in_spec: str, group_id: str, from_time: str | None, timeout: float = 30.0) -> float | None:
    """`--from-time`: check the time (one line, exit 2, before anything starts), wait for the broker,
    rewind the stage's group to it. Returns the time (Unix s), or None without the flag."""
    if from_time is None:
        return None
    import time

    from hazardctl.from_time import parse_from_time
    from hazardctl.transports import is_kafka

    ts = parse_from_time(from_time, time.time())
    if not is_kafka(in_spec):
        from hazardctl.errors import ConfigError

        raise ConfigError(f"--from-time needs a kafka:// input, not {in_spec!r} (a pipe or file has no past to rewind)")
    endpoints.wait_ready([in_spec], timeout)
    endpoints.rewind(in_spec, group_id, ts, from_time)
    return ts


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
