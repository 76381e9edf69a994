"""Shared fixtures. Kafka tests run against the real local broker started by `make test`.

When HAZARDCTL_REQUIRE_KAFKA=1 (set by `make test`), an unreachable broker fails the Kafka tests
instead of skipping them, so CI can never pass without really testing against Kafka.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = os.environ.get("HAZARDCTL_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
HAZARDCTL = [sys.executable, "-m", "hazardctl.cli"]


def _broker_up() -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": BOOTSTRAP, "log_level": 0}).list_topics(timeout=3)
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    if not _broker_up():
        if os.environ.get("HAZARDCTL_REQUIRE_KAFKA") == "1":
            pytest.fail(f"Kafka broker at {BOOTSTRAP} is not reachable (make test starts it)")
        pytest.skip(f"no Kafka broker at {BOOTSTRAP} (run `make kafka-up`)")
    return BOOTSTRAP


def topic_maker(admin, base: str = "test", partitions: int = 4):
    """A generator for fixtures: yields make(prefix, partitions, config) that creates uniquely named
    topics through `admin`; deletes them when resumed (the fixture's teardown)."""
    from confluent_kafka.admin import NewTopic

    created: list[str] = []
    default_partitions = partitions

    def make(prefix: str = "t", partitions: int = default_partitions, config: dict | None = None) -> str:
        name = f"{base}-{prefix}-{uuid.uuid4().hex[:10]}"
        admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name].result(timeout=30)
        created.append(name)
        return name

    yield make
    if created:
        for fut in admin.delete_topics(created).values():
            try:
                fut.result(timeout=30)
            except Exception:
                pass


@pytest.fixture
def make_topic(kafka_bootstrap):
    """Create topics with unique names for this test; delete them afterwards."""
    from confluent_kafka.admin import AdminClient

    yield from topic_maker(AdminClient({"bootstrap.servers": kafka_bootstrap}))


@pytest.fixture(scope="session")
def pg_server():
    """The session's PostgreSQL (Debian's, started by tests/pg_util.py); skips or fails without one."""
    from tests.pg_util import postgres_server_fixture

    yield from postgres_server_fixture()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_args(request, tmp_path):
    """consume's incident-store flags, once for SQLite under --data-dir and once for a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return ("--data-dir", str(tmp_path / "data"))
    url = request.getfixturevalue("pg_server").database("c_" + uuid.uuid4().hex[:10])
    return ("--store", url, "--data-dir", str(tmp_path / "data"))


@pytest.fixture
def hazardctl_env(kafka_bootstrap, tmp_path):
    """Environment for running `hazardctl` as a separate process against the test broker."""
    env = dict(os.environ)
    env["HAZARDCTL_KAFKA_BOOTSTRAP"] = kafka_bootstrap
    env["PYTHONPATH"] = str(ROOT)
    return env


#: markers that declare a test depends on hardware this machine may lack (or have)
HARDWARE_MARKERS = ("needs_gpu", "needs_no_gpu")


class HardwareSkip(pytest.skip.Exception):
    """The one skip `make test` lets pass: raised by `skip_for_hardware` in a test that carries a
    hardware marker."""


def skip_for_hardware(reason: str) -> None:
    """Skip because the hardware this test needs is missing (needs_gpu), or present and takes the path
    under test away (needs_no_gpu). Only valid in a test that carries one of HARDWARE_MARKERS."""
    raise HardwareSkip(msg=reason, allow_module_level=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under `make test` (HAZARDCTL_NO_SKIP=1) a skipped test is a failure: a missing broker, browser,
    RTSP server, model or extra must not let CI pass without testing. The only skip that passes is
    `skip_for_hardware(...)` in a test marked `needs_gpu` or `needs_no_gpu`; what a skip's reason
    says does not matter (another skip in the same test, e.g. a missing extra, still fails)."""
    outcome = yield
    rep = outcome.get_result()
    hardware = (call.excinfo is not None and call.excinfo.errisinstance(HardwareSkip)
                and any(item.get_closest_marker(m) for m in HARDWARE_MARKERS))
    if rep.skipped and os.environ.get("HAZARDCTL_NO_SKIP") == "1" and not hardware:
        rep.outcome = "failed"
        rep.longrepr = f"skipped under HAZARDCTL_NO_SKIP=1 (make test must run everything): {rep.longrepr}"
