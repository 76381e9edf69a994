"""`hazardctl schedule`: load the key pool (or start the simulated LLM when no key is configured), run the stage."""

from __future__ import annotations

from typing import Optional

import dataclasses
import logging
import os
import time

import typer
from pathlib import Path

from hazardctl.cli_common import DLQ_HELP, IN_HELP, KAFKA_CONFIG_HELP, OUT_HELP, command, rewind_input
from hazardctl.errors import ConfigError

log = logging.getLogger("hazardctl")


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
    "--out kafka://risk-assessment-results --shard 0/2 --metrics-port 9102\n\n"
    "Variants, routes and a shadow variant come from the keys file (docs/schedule.md); SIGHUP (systemctl reload) "
    "re-reads it without dropping a task.\n\n"
    "Example (re-assess the last hour with the routes of another file, into its own topic): hazardctl schedule "
    "--keys max.yaml --in kafka://assessment-tasks --from-time -1h --group replay-max --out kafka://results-replay",
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
    hand_over: bool = typer.Option(
        False, "--hand-over/--no-hand-over", help="Kafka input, several shards in one --group: while no key of this "
        "shard can serve a task before its deadline (all disabled, or cooling longer), leave the group so the other "
        "shards take its partitions; rejoin when a key recovers (probed meanwhile). Reads no more tasks than its open "
        "keys can serve in a deadline (docs/operations.md)."),
    kafka_config: Optional[str] = typer.Option(None, help=KAFKA_CONFIG_HELP),
    metrics_port: Optional[int] = typer.Option(None, help="Serve Prometheus /metrics on this port."),
    metrics_bind: str = typer.Option("127.0.0.1", "--metrics-bind", help="Address of the --metrics-port listener "
                                     "(default: this host only; 0.0.0.0 when Prometheus scrapes from another host)."),
    simulate: bool = typer.Option(
        True, help="With no --keys and no usable config/api_keys.yaml, start the simulated LLM instead of failing."),
    language: Optional[str] = typer.Option(
        None, "--language", help="Prompt language en|zh: risk types and description in it; levels stay "
        "none/low/medium/high (default: the keys file's `language`, else en)."),
    shadow_out: Optional[str] = typer.Option(
        None, "--shadow-out", help="Where the shadow variant's results go (a file or kafka://TOPIC, never --out): "
        "needed when the keys file has `shadow:`; `hazardctl compare` reads them."),
    from_time: Optional[str] = typer.Option(
        None, "--from-time", help="Kafka input: rewind this stage's --group to this time before starting "
        "(ISO 8601, or back from now: -2h, -15m); tasks made before the start get their deadline budget from "
        "when they are read."),
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
    if from_time is not None:  # a bad time is refused before anything starts (the keys file, the simulator)
        from hazardctl.from_time import parse_from_time
        from hazardctl.transports import is_kafka

        parse_from_time(from_time, time.time())
        if not is_kafka(in_spec):
            raise ConfigError(f"--from-time needs a kafka:// input, not {in_spec!r}")
    explicit = keys or os.environ.get(KEYS_ENV)  # a file the user named: any problem with it is an error
    path = explicit or "config/api_keys.yaml"
    sim = None
    if not explicit and not Path(path).is_file():
        if not simulate:
            raise ConfigError(NO_KEYS_HINT)
        sim, cfg = _start_simulated_llm("no keys file")
    else:
        try:
            cfg = load_keys(path, _passphrase(path))
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
        stage_cfg = schedule.ScheduleConfig(workers=workers, language=language, bad_answer_warn=bad_answer_warn,
                                            hand_over=hand_over)
        if hand_over and not in_spec.startswith("kafka://"):
            raise ConfigError(f"--hand-over needs a kafka:// input (shards in one consumer group), not {in_spec!r}")
        schedule.check_config(cfg, stage_cfg, shadow_out)  # bad routes: one line, exit 2, nothing started
        endpoints = Endpoints(kafka_config)
        if rewind_input(endpoints, in_spec, group_id, from_time) is not None:  # before anything serves
            stage_cfg = dataclasses.replace(stage_cfg, replay_before=time.time())
        serve_metrics(metrics_port, metrics_bind)
        schedule.run(in_spec, out_spec, dlq, keys=cfg, endpoints=endpoints, group_id=group_id,
                     cfg=stage_cfg, shadow_spec=shadow_out,
                     reload_keys=None if sim is not None else _reloader(path, parts))
    finally:
        if sim is not None:
            sim.stop()


def _passphrase(path: str) -> str | None:
    """The passphrase of an encrypted keys file, asked once (a reload uses it again); None: plain or unreadable."""
    from hazardctl.keys import is_encrypted, read_passphrase

    try:
        head = Path(path).read_bytes()[:64]
    except OSError:
        return None
    return read_passphrase(confirm=False) if is_encrypted(head) else None


def _reloader(path: str, shard: tuple[int, int] | None):
    """What SIGHUP calls: the same file read again (plain or encrypted; the passphrase from the environment,
    else the one typed at start), the same shard."""
    from hazardctl.keys import load_keys

    passphrase = _passphrase(path)

    def reload():
        cfg = load_keys(path, passphrase)
        return cfg.shard(*shard) if shard else cfg

    return reload


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
