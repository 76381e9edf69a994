"""`hazardctl consume`: parse the flags, build ConsumeOptions, run the stage."""

from __future__ import annotations

from typing import Optional

import typer
from hazardctl.cli_common import DLQ_HELP, FROM_TIME_HELP, IN_HELP, KAFKA_CONFIG_HELP, command, rewind_input
from hazardctl.errors import ConfigError


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
    from_time: Optional[str] = typer.Option(None, "--from-time", help=FROM_TIME_HELP + " The state is rebuilt "
                                            "from that time too (it replaces --replay)."),
    group_id: str = typer.Option("hazardctl-consume", "--group", help="Kafka consumer group; give each consume "
                                 "instance its own so each sees every camera."),
    kafka_config: Optional[str] = typer.Option(None, help=KAFKA_CONFIG_HELP),
    metrics_port: Optional[int] = typer.Option(None, help="Also serve Prometheus /metrics on this port "
                                               "(it is always on the HTTP API's /metrics)."),
    metrics_bind: str = typer.Option("127.0.0.1", "--metrics-bind", help="Address of the --metrics-port listener "
                                     "(default: this host only; 0.0.0.0 when Prometheus scrapes from another host)."),
    token_file: Optional[str] = typer.Option(
        None, "--token-file", help="Require this bearer token (the file's one line) on the HTTP API, /metrics and "
        "the WebSocket; the page asks for it. Default: $HAZARDCTL_CONSUME_TOKEN, else no token."),
    allow_origin: list[str] = typer.Option(
        [], "--allow-origin", help="A browser origin (https://ops.example.com) allowed to open the WebSocket and "
        "call the API besides the server's own; repeatable; '*' allows any (not advised)."),
    max_clients: int = typer.Option(1000, min=1, help="Most WebSocket clients at once; more are refused (503)."),
    allow_host: list[str] = typer.Option(
        [], "--allow-host", help="A Host name (ops.example.com) the API and the WebSocket answer to besides "
        "localhost, 127.0.0.1, [::1] and the bound addresses; repeatable; other names get 421 (DNS rebinding). "
        "'*' allows any (not advised)."),
    store: Optional[str] = typer.Option(
        None, "--store", help="Keep incidents, their results, evidence and operators' actions in a database: "
        "sqlite:///PATH (embedded, WAL) or postgresql://USER:PASSWORD@HOST:PORT/DB. Default: "
        "sqlite:///DATA_DIR/incidents.db when --data-dir is given, else memory only."),
    data_dir: Optional[str] = typer.Option(
        None, "--data-dir", help="Where the embedded store and the evidence files (crops, by content hash) live."),
    retention_days: Optional[float] = typer.Option(
        None, "--retention-days", help="Delete incidents that ended more than this many days ago (default: keep)."),
    store_queue: int = typer.Option(20_000, min=1, help="Store writes queued in memory while the database is "
                                    "away; more are dropped and counted (hazardctl_store_writes_total)."),
    evidence_max_mb: float = typer.Option(1024.0, help="Most MiB of evidence files; the oldest go first."),
    sink: list[str] = typer.Option(
        [], "--sink", help="Send incident events (new/update/end, operators' actions) to webhook:https://HOST/PATH "
        "(signed JSON POST), mqtt://HOST:PORT/PREFIX (QoS 1 on PREFIX/CAMERA/incident; mqtts:// for TLS) or "
        "kafka://TOPIC (keyed by camera); repeatable. Through an outbox in --store: retried with backoff, in order "
        "per incident, dead letters after --sink-max-attempts."),
    sink_min_level: str = typer.Option("medium", help="Lowest incident level sent to the sinks (camera incidents "
                                       "always are): low, medium or high."),
    sink_cooldown: float = typer.Option(0.0, help="Seconds after a camera's incident went to the sinks during which "
                                        "its further new incidents are held back (0 = off)."),
    sink_secret_file: Optional[str] = typer.Option(
        None, help="Key of the webhooks' X-Hazardctl-Signature (HMAC-SHA256 of the body). Default: "
        "$HAZARDCTL_SINK_SECRET, else requests are not signed."),
    sink_timeout: float = typer.Option(5.0, help="Seconds one delivery attempt waits for the receiver."),
    sink_ca_file: Optional[str] = typer.Option(None, help="Extra CA certificates (PEM) trusted for https webhooks "
                                               "and mqtts, besides the system's."),
    sink_max_attempts: int = typer.Option(12, min=1, help="Attempts before an event is a dead letter (with the "
                                          "default backoff: about 4 minutes; while the receiver is down only one probe event spends them)."),
    sink_retry_base: float = typer.Option(1.0, help="First retry after this many seconds; doubles each time."),
    sink_retry_cap: float = typer.Option(30.0, help="Longest wait between two attempts, seconds (also how long a "
                                        "receiver back from an outage may wait for the next probe)."),
    camera_status: Optional[str] = typer.Option(
        None, "--camera-status", help="Read detect's camera health (detect --status-out), e.g. "
        "kafka://camera-status: a camera incident opens while a camera is down and ends when it is back."),
    actions: Optional[str] = typer.Option(
        None, "--actions", help="Share operators' actions with the other consume instances through this Kafka "
        "topic, e.g. kafka://incident-actions: an ack taken on one reaches every instance's clients and store. "
        "Each instance needs a --group of its own."),
) -> None:
    from hazardctl.incidents import BoardConfig
    from hazardctl.metrics import serve_metrics
    from hazardctl.transports import Endpoints
    from stages import consume, consume_store
    from stages.consume_auth import AccessPolicy, load_token, parse_hosts, parse_origins

    if min_level not in ("low", "medium", "high"):
        raise ConfigError(f"--min-level {min_level!r}: one of low, medium, high")
    if quiet_period <= 0 or group_ttl <= 0 or replay < 0:
        raise ConfigError("--quiet-period and --group-ttl must be > 0, --replay >= 0")
    if actions is not None and not actions.startswith("kafka://"):
        raise ConfigError(f"--actions {actions}: a Kafka topic (kafka://incident-actions) that every instance reads")
    if retention_days is not None and retention_days <= 0 or evidence_max_mb <= 0:
        raise ConfigError("--retention-days and --evidence-max-mb must be > 0")
    from stages.consume_sinks import sink_options

    sinks = sink_options(sink, min_level=sink_min_level, cooldown_s=sink_cooldown, secret_file=sink_secret_file,
                         timeout_s=sink_timeout, ca_file=sink_ca_file, max_attempts=sink_max_attempts,
                         retry_base_s=sink_retry_base, retry_cap_s=sink_retry_cap)
    ws_host, ws_port = consume.parse_address(ws, "--ws")
    http_host, http_port = consume.parse_address(http, "--http") if http else (None, None)
    opts = consume.ConsumeOptions(
        ws_host=ws_host, ws_port=ws_port, http_host=http_host, http_port=http_port,
        board=BoardConfig(min_level=min_level, quiet_period_s=quiet_period, group_ttl_s=group_ttl),
        client_queue=client_queue, replay_s=replay, cache_size=cache_size, exit_on_eof=exit_on_eof,
        access=AccessPolicy(token=load_token(token_file), allow_origins=parse_origins(allow_origin),
                            max_clients=max_clients, allow_hosts=parse_hosts(allow_host)),
        store=consume_store.store_options(store, data_dir, retention_days=retention_days, max_pending=store_queue,
                                          evidence_max_mb=evidence_max_mb),
        sinks=sinks, camera_status=camera_status, actions=actions)
    endpoints = Endpoints(kafka_config)
    since = rewind_input(endpoints, in_spec, group_id, from_time)
    if since is not None:  # the start-up replay rebuilds the state from the same time
        import dataclasses
        import time

        opts = dataclasses.replace(opts, replay_s=max(0.0, time.time() - since))
    serve_metrics(metrics_port, metrics_bind, token=opts.access.token)  # the API's token guards it too
    consume.run(in_spec, dlq, opts=opts, endpoints=endpoints, group_id=group_id)
