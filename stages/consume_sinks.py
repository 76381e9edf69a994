"""consume's alert sinks: `--sink` flags → a SinkDispatcher on its own thread, its outbox in the store.

consume hands every event it pushes to `dispatcher.offer` (one call_soon_threadsafe); routing,
the outbox, retries and dead letters happen on the sinks' thread (hazardctl/sinks). Without a
store the outbox lives in memory only: a restart loses what was not delivered yet (logged).
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from hazardctl.errors import ConfigError
from hazardctl.sinks import SinkSettings, make_sink, parse_sink
from hazardctl.sinks.outbox import RetryPolicy, Router

log = logging.getLogger("hazardctl.consume")

SECRET_ENV = "HAZARDCTL_SINK_SECRET"


@dataclass(frozen=True)
class SinkOptions:
    specs: tuple[str, ...]
    min_level: str = "medium"
    cooldown_s: float = 0.0
    secret_file: str | None = None
    timeout_s: float = 5.0
    ca_file: str | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: int = 16

    def __repr__(self) -> str:
        return f"SinkOptions(specs={len(self.specs)}, min_level={self.min_level}, cooldown_s={self.cooldown_s})"


def sink_options(specs: list[str], *, min_level: str, cooldown_s: float, secret_file: str | None, timeout_s: float,
                 ca_file: str | None, max_attempts: int, retry_base_s: float, retry_cap_s: float) -> SinkOptions | None:
    """Checks the flags (exit 2 with one line); None without --sink."""
    if not specs:
        return None
    for s in specs:
        parse_sink(s)
    if min_level not in ("low", "medium", "high"):
        raise ConfigError(f"--sink-min-level {min_level!r}: one of low, medium, high")
    if cooldown_s < 0 or timeout_s <= 0:
        raise ConfigError("--sink-cooldown must be >= 0 and --sink-timeout > 0")
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"--sink-ca-file {ca_file}: no such file")
    if secret_file and not Path(secret_file).is_file():
        raise ConfigError(f"--sink-secret-file {secret_file}: no such file")
    try:
        policy = RetryPolicy(base_s=retry_base_s, cap_s=retry_cap_s, max_attempts=max_attempts)
    except ValueError as e:
        raise ConfigError(f"--sink-retry-*: {e}") from None
    return SinkOptions(tuple(specs), min_level, cooldown_s, secret_file, timeout_s, ca_file, policy)


def load_secret(opts: SinkOptions) -> bytes | None:
    """The webhook signing key: the file's content (stripped), else $HAZARDCTL_SINK_SECRET."""
    if opts.secret_file:
        try:
            secret = Path(opts.secret_file).read_bytes().strip()
        except OSError as e:
            raise ConfigError(f"--sink-secret-file {opts.secret_file}: {e.strerror}") from None
        if not secret:
            raise ConfigError(f"--sink-secret-file {opts.secret_file}: empty")
        return secret
    env = os.environ.get(SECRET_ENV, "").strip()
    return env.encode() if env else None


def start_dispatcher(opts: SinkOptions, *, endpoints, dlq_spec: str, store_url: str | None, stage: str = "consume"):
    """Open the sinks, restore the outbox from the store, start the thread; returns (dispatcher, closer)."""
    from hazardctl.sinks.dispatcher import SinkDispatcher
    from hazardctl.transports import Endpoints, is_kafka

    secret = load_secret(opts)
    specs = [parse_sink(s) for s in opts.specs]
    for s in specs:
        u = urllib.parse.urlsplit(s.target)
        if s.kind == "webhook" and u.scheme == "http" and u.hostname not in ("127.0.0.1", "localhost", "::1"):
            log.warning("consume: sink %s uses plain http: events cross the network unencrypted (use https)", s.name)
    if any(s.kind == "webhook" for s in specs) and secret is None:
        log.warning("consume: webhook sinks without a secret (--sink-secret-file or %s): requests are not signed",
                    SECRET_ENV)
    settings = SinkSettings(secret=secret, timeout_s=opts.timeout_s, ca_file=opts.ca_file, endpoints=endpoints)
    kafka_topics = [f"kafka://{s.target}" for s in specs if s.kind == "kafka"]
    if kafka_topics:
        endpoints.wait_ready(kafka_topics, 30.0)
    journal = None
    if store_url:
        from hazardctl.sinks.outbox_store import OutboxJournal
        from hazardctl.store import open_store

        journal = OutboxJournal(open_store(store_url))  # exit 3 with one line when unreachable
    else:
        log.warning("consume: alert sinks without --store: the outbox is in memory only; events not delivered "
                    "when consume stops are lost")
    dlq_endpoints = Endpoints(settings=endpoints.kafka.settings) if is_kafka(dlq_spec) else endpoints
    dlq = dlq_endpoints.output(dlq_spec)

    def dead_letter(dl, key: bytes | None) -> None:
        dlq.send(dl.model_dump_json().encode(), key)
        dlq.poll(0)

    d = SinkDispatcher([make_sink(s, settings) for s in specs], Router(opts.min_level, opts.cooldown_s),
                       policy=opts.policy, journal=journal, dead_letter=dead_letter, concurrency=opts.concurrency,
                       stage=stage)
    d.start()
    log.info("consume: alert sinks %s (min level %s, cooldown %.0fs, outbox %s)", ", ".join(s.name for s in specs),
             opts.min_level, opts.cooldown_s, journal.store.safe_url if journal else "in memory")

    def close(timeout: float = 10.0) -> None:
        d.stop(timeout)
        left = dlq.flush(10.0)
        if left:
            log.error("consume: %d sink dead letters not written to %s", left, dlq_spec)
        if journal is not None:
            journal.store.close()
        if d.pending():
            log.info("consume: %d sink events not delivered yet%s", d.pending(),
                     " (kept in the store)" if journal is not None else " (lost: no --store)")

    return d, close
