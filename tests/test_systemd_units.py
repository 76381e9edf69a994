"""deploy/systemd: every unit passes `systemd-analyze verify` and is hardened.

verify loads a unit the way systemd would and checks that its ExecStart binary exists and is
executable. The units point at the installed path (/opt/hazardctl/venv/bin/hazardctl), which this
machine does not have, so verify runs with `--root` on a temporary root: a copy of the distro's unit
folder (for sysinit.target, network-online.target, ...), an executable stand-in at that path, and
our units in etc/systemd/system. Templates are verified through an instance (schedule@0, detect@north).
Any warning (an unknown or misspelt key, a bad value) counts as a failure, not only the exit code.
`systemd-analyze security --offline` then scores each service's exposure.

Needs Debian's systemd (scripts/install-systemd.sh, run by `make system-deps`); no systemd needs to
be running.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNITS = ROOT / "deploy/systemd"
EXEC = "opt/hazardctl/venv/bin/hazardctl"
INSTANCES = {"hazardctl-schedule@.service": "hazardctl-schedule@0.service",
             "hazardctl-detect@.service": "hazardctl-detect@north.service"}
HARDENING = ["DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
             "CapabilityBoundingSet=", "RestrictAddressFamilies=", "SystemCallFilter=@system-service"]


def _analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        if os.environ.get("HAZARDCTL_NO_SKIP") == "1":
            pytest.fail("systemd-analyze missing: run scripts/install-systemd.sh (make system-deps)")
        pytest.skip("systemd-analyze missing: run scripts/install-systemd.sh")
    return exe


def _system_units() -> Path:
    for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (p / "sysinit.target").exists():
            return p
    pytest.fail("no distro unit folder with sysinit.target")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    _analyze()
    r = tmp_path_factory.mktemp("sysroot")
    shutil.copytree(_system_units(), r / "usr/lib/systemd/system", symlinks=True)
    exe = r / EXEC
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    kill = shutil.which("kill") or "/usr/bin/kill"  # ExecReload=kill -HUP $MAINPID (schedule): the real binary
    (r / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(kill, r / "usr/bin/kill")
    (r / "etc/systemd/system").mkdir(parents=True)
    for f in UNITS.iterdir():
        shutil.copy(f, r / "etc/systemd/system" / f.name)
    return r


def _names() -> list[str]:
    files = sorted(p.name for p in UNITS.iterdir() if p.suffix in (".service", ".target"))
    return [INSTANCES.get(n, n) for n in files]


def verify(root: Path, *units: str) -> subprocess.CompletedProcess:
    return subprocess.run([_analyze(), "verify", f"--root={root}", "--man=no", *units],
                          capture_output=True, text=True, timeout=60)


def test_the_units_are_there():
    names = {p.name for p in UNITS.iterdir()}
    assert {"hazardctl-detect@.service", "hazardctl-expand.service", "hazardctl-schedule@.service",
            "hazardctl-consume.service", "hazardctl-setup-topics.service", "hazardctl-llm-sim.service",
            "hazardctl.target"} <= names
    assert set(INSTANCES) <= names


@pytest.mark.parametrize("unit", _names())
def test_systemd_analyze_verify(root, unit):
    p = verify(root, unit)
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), f"{unit}:\n{p.stdout}{p.stderr}"


def test_verify_catches_what_it_should(root):
    """The check above can fail: a misspelt key and a missing binary are both reported."""
    unit = (UNITS / "hazardctl-expand.service").read_text()
    d = root / "etc/systemd/system"
    (d / "hazardctl-typo.service").write_text(unit.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    (d / "hazardctl-nobin.service").write_text(unit.replace("/opt/hazardctl/venv/bin/hazardctl", "/opt/nothere/hazardctl"))
    try:
        typo = verify(root, "hazardctl-typo.service")
        assert "Unknown key" in typo.stderr and "NoNewPrivilege" in typo.stderr
        nobin = verify(root, "hazardctl-nobin.service")
        assert nobin.returncode != 0 and "not executable" in nobin.stderr
    finally:
        (d / "hazardctl-typo.service").unlink()
        (d / "hazardctl-nobin.service").unlink()


@pytest.mark.parametrize("unit", [n for n in _names() if n.endswith(".service")])
def test_hardened_restarted_and_secrets_from_files(root, unit):
    text = (UNITS / unit.replace("@0", "@").replace("@north", "@")).read_text()
    for line in HARDENING:
        assert re.search(rf"^{re.escape(line)}", text, re.M), f"{unit}: no {line}"
    assert re.search(r"^EnvironmentFile=-?/etc/hazardctl/", text, re.M), f"{unit}: no EnvironmentFile"
    assert "PASSWORD=" not in text.replace("HAZARDCTL_KAFKA_SASL_PASSWORD=...", "")  # no secret in a unit
    if "Type=oneshot" not in text:
        assert re.search(r"^Restart=on-failure", text, re.M) and re.search(r"^RestartPreventExitStatus=2", text, re.M)
    p = subprocess.run([_analyze(), "security", "--offline=yes", f"--root={root}", unit],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", p.stdout)
    assert m, p.stdout[-500:] + p.stderr
    assert float(m.group(1)) <= 2.5, f"{unit}: exposure {m.group(1)}\n{p.stdout[-2000:]}"


def _exec_start(text: str, instance: str = "0") -> list[str]:
    """ExecStart= of a unit as the argument list systemd would run: continuation lines joined,
    ${VAR} and $VAR from the unit's Environment= defaults, %i/%d/%H specifiers filled in."""
    text = text.replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^Environment=(.*)$", text, re.M):
        for item in line.split():
            k, _, v = item.partition("=")
            env[k] = v
    (cmd,) = re.findall(r"^ExecStart=(.*)$", text, re.M)
    cmd = cmd.replace("%i", instance).replace("%d", "/run/credentials/x").replace("%H", "host")
    args = []
    for word in cmd.split():
        if word.startswith("${") and word.endswith("}"):
            args.append(env[word[2:-1]])
        elif word.startswith("$"):
            args.extend(env[word[1:]].split())
        else:
            args.append(word)
    return args


@pytest.mark.parametrize("unit", sorted(p.name for p in UNITS.glob("*.service")))
def test_every_flag_in_execstart_exists(unit):
    """The command lines of the units parse with the real CLI (a misspelt or removed flag fails here)."""
    from typer.testing import CliRunner

    from hazardctl.cli import app

    args = _exec_start((UNITS / unit).read_text())
    assert args[0] == "/opt/hazardctl/venv/bin/hazardctl"
    r = CliRunner().invoke(app, [*args[1:], "--help"])
    assert r.exit_code == 0, f"{unit}: {' '.join(args[1:])}\n{r.output}"
    r = CliRunner().invoke(app, [*args[1:], "--no-such-flag", "--help"])
    assert r.exit_code != 0  # the check above can fail


def test_schedule_reloads_on_systemctl_reload_and_nothing_else_claims_to():
    """`systemctl reload hazardctl-schedule@0` sends SIGHUP: schedule re-reads its keys file (issue 22;
    tests/test_schedule_replay_kafka.py runs that). Other stages drain on SIGHUP, so they declare no reload."""
    for unit in sorted(UNITS.glob("*.service")):
        reloads = re.findall(r"^ExecReload=(.*)$", unit.read_text(), re.M)
        if unit.name == "hazardctl-schedule@.service":
            assert reloads == ["kill -HUP $MAINPID"]
        else:
            assert not reloads, unit.name


def test_camera_health_flows_from_detect_to_consume():
    """detect publishes each camera's health where consume reads it, so a dead camera becomes an
    incident in a deployment too (issue 18), and schedule shards hand over partitions they cannot serve."""
    def flag(unit: str, name: str) -> str:
        args = _exec_start((UNITS / unit).read_text())
        return args[args.index(name) + 1]

    assert flag("hazardctl-detect@.service", "--status-out") == flag("hazardctl-consume.service", "--camera-status")
    assert "--hand-over" in _exec_start((UNITS / "hazardctl-schedule@.service").read_text())
