"""`hazardctl llm-sim`: the simulated OpenAI-compatible vision LLM as a command."""

from __future__ import annotations

from typing import Optional

import typer
from hazardctl.cli_common import command
from hazardctl.errors import ConfigError


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
