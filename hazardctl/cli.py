"""The `hazardctl` command: thin typer commands that parse, validate config, and call a stage's run().

Each command lives beside what it starts (stages/detect_cli.py, stages/expand_cli.py,
stages/schedule_cli.py, stages/consume_cli.py, tools/llm_sim_cli.py, tools/loadtest_cli.py,
tools/status_cli.py, tools/compare_cli.py; modules of their own so that `hazardctl schedule` never imports OpenCV); this module holds the core's own small commands and imports the rest, which
register on the shared app (hazardctl/cli_common.py). Expected failures (bad config, missing file,
unreachable broker) are one line on stderr and a distinct exit code (see hazardctl.errors).
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from hazardctl.cli_common import KAFKA_CONFIG_HELP, app, command, err_console
from hazardctl.errors import ConfigError

# the commands beside their stages and tools register on `app` when imported (order = help order)
import stages.detect_cli  # noqa: E402,F401
import stages.expand_cli  # noqa: E402,F401
import stages.schedule_cli  # noqa: E402,F401
import stages.consume_cli  # noqa: E402,F401
import tools.llm_sim_cli  # noqa: E402,F401
import tools.status_cli  # noqa: E402,F401
import tools.loadtest_cli  # noqa: E402,F401
import tools.compare_cli  # noqa: E402,F401
import tools.zones_cli  # noqa: E402,F401

__all__ = ["app", "run"]


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
