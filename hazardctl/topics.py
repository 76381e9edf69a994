"""setup-topics: create the pipeline's topics idempotently and report drift (spec §3).

`plan()` is pure: desired topics + what the cluster has → actions. The shell (`apply`) asks the
cluster, prints the plan, creates what is missing, and never silently accepts a topic that differs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hazardctl.config import KafkaSettings, load_model
from hazardctl.errors import HazardError, ServiceUnavailable

log = logging.getLogger("hazardctl.topics")


class TopicSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    partitions: int = Field(ge=1)
    config: dict[str, str] = Field(default_factory=dict)


class TopicsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    replication_factor: int = Field(default=3, ge=1)
    topics: list[TopicSpec]


@dataclass
class Existing:
    partitions: int
    replication_factor: int
    config: dict[str, str]


@dataclass
class Action:
    topic: str
    kind: Literal["create", "ok", "drift"]
    details: list[str] = field(default_factory=list)


def plan(desired: TopicsFile, existing: dict[str, Existing], replication_factor: int) -> list[Action]:
    actions = []
    for spec in desired.topics:
        have = existing.get(spec.name)
        if have is None:
            actions.append(Action(spec.name, "create", [f"{spec.partitions} partitions, replication {replication_factor}"]))
            continue
        drift = []
        if have.partitions != spec.partitions:
            drift.append(f"partitions {have.partitions} (config: {spec.partitions})")
        if have.replication_factor < replication_factor:
            drift.append(f"replication {have.replication_factor} (config: {replication_factor})")
        for key, want in spec.config.items():
            got = have.config.get(key)
            if got != want:
                drift.append(f"{key}={got} (config: {want})")
        actions.append(Action(spec.name, "drift" if drift else "ok", drift))
    return actions


class TopicDrift(HazardError):
    exit_code = 5


def _describe(admin, names: list[str]) -> dict[str, Existing]:
    from confluent_kafka.admin import ConfigResource, ResourceType

    md = admin.list_topics(timeout=10)
    present = [n for n in names if n in md.topics]
    out: dict[str, Existing] = {}
    if not present:
        return out
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in present])
    configs = {res.name: {k: e.value for k, e in fut.result(timeout=10).items()} for res, fut in futures.items()}
    for n in present:
        parts = md.topics[n].partitions
        rf = min((len(p.replicas) for p in parts.values()), default=0)
        out[n] = Existing(len(parts), rf, configs.get(n, {}))
    return out


def setup_topics(settings: KafkaSettings, path: str | Path, *, dry_run: bool = False, timeout: float = 30.0,
                 report=print) -> list[Action]:
    from confluent_kafka.admin import NewTopic

    from hazardctl.transports.kafka import admin_client, wait_for_broker

    desired = load_model(TopicsFile, path)
    brokers = wait_for_broker(settings, timeout)
    rf = desired.replication_factor
    if rf > brokers:
        log.warning("replication_factor %d > %d broker(s): using %d", rf, brokers, brokers)
        rf = brokers
    admin = admin_client(settings)
    actions = plan(desired, _describe(admin, [t.name for t in desired.topics]), rf)
    to_create = [t for t in desired.topics if any(a.topic == t.name and a.kind == "create" for a in actions)]
    for a in actions:
        verb = {"create": "would create" if dry_run else "create", "ok": "ok", "drift": "DRIFT"}[a.kind]
        report(f"{verb:>12}  {a.topic}  {'; '.join(a.details)}".rstrip())
    if to_create and not dry_run:
        futures = admin.create_topics([NewTopic(t.name, t.partitions, rf, config=t.config) for t in to_create])
        for name, fut in futures.items():
            try:
                fut.result(timeout=timeout)
            except Exception as e:  # KafkaException carrying a KafkaError
                err = e.args[0] if e.args else e
                if getattr(err, "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                    continue  # created by a concurrent setup-topics: verified on the next run
                raise ServiceUnavailable(f"creating topic {name}: {getattr(err, 'str', lambda: str(err))()}") from None
    drift = [a for a in actions if a.kind == "drift"]
    if not to_create and not drift:
        report(f"nothing to change: {len(actions)} topics match {path}")
    if drift:
        raise TopicDrift(f"{len(drift)} topic(s) differ from {path}: " + "; ".join(
            f"{a.topic}: {', '.join(a.details)}" for a in drift) + " (fix the topic or the config; differing topics were left as they are)")
    return actions
