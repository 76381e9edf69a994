"""The CLI side of the Flink engine (runs in the main venv; PyFlink itself only in `.venv-flink`).

- `preflight`: Java, `.venv-flink`, the jars, the JobManager → one line naming the fix, no hangs;
- `run_local`: the job on a local mini-cluster in the foreground (SIGTERM/SIGINT are passed on);
- `submit`: `flink run -d -py stages/expand/flink_job.py` to a session cluster → the job id;
- `list_jobs` / `cancel` / `savepoint`: the JobManager's REST API.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from hazardctl.errors import ConfigError, HazardError
from stages.expand import flink_conf

ROOT = flink_conf.ROOT
VENV_PY = ROOT / ".venv-flink" / "bin" / "python"
JOB_FILE = ROOT / "stages" / "expand" / "flink_job.py"
LOG_DIR = ROOT / ".cache" / "flink" / "log"


class FlinkError(HazardError):
    """The Flink engine cannot run (missing setup, no cluster, a failed submission)."""

    exit_code = 2


def flink_home() -> Path:
    site = next((ROOT / ".venv-flink" / "lib").glob("python3*/site-packages/pyflink"), None)
    if site is None:
        raise FlinkError(f"{ROOT / '.venv-flink'} has no PyFlink: run `make flink-env`")
    return site


def preflight(settings: flink_conf.FlinkSettings, jobmanager: str | None = None) -> None:
    if shutil.which("java") is None:
        raise FlinkError("java not found on PATH: install a JDK 17 (apt-get install openjdk-17-jdk-headless)")
    if not VENV_PY.is_file():
        raise FlinkError(f"{VENV_PY.parent.parent} missing: run `make flink-env`")
    flink_home()
    for jar in settings.jars():
        if not jar.is_file():
            raise FlinkError(f"{jar} missing: run `make flink-env`")
    if jobmanager:
        try:
            rest(jobmanager, "/overview")
        except FlinkError:
            raise FlinkError(f"no Flink JobManager at {jobmanager}: start one with `make flink-up` "
                             "(scripts/flink-local.sh up, REST on 127.0.0.1:18081)") from None


def rest(jobmanager: str, path: str, method: str = "GET", body: dict | None = None, timeout: float = 5.0):
    url = f"http://{jobmanager}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
    except urllib.error.HTTPError as e:
        raise FlinkError(f"{method} {url}: HTTP {e.code}: {e.read()[:300].decode('utf-8', 'replace')}") from None
    except (urllib.error.URLError, OSError) as e:
        raise FlinkError(f"{method} {url}: {getattr(e, 'reason', e)}") from None
    return json.loads(raw) if raw else {}


def job_args(bootstrap: str, src: str, dst: str, dlq: str, group: str, config: str | None,
             overrides: list[str], kafka_props: dict[str, str], kafka_config: str | None = None) -> list[str]:
    """The job's command line. Kafka security (SASL password included) is NOT on it: the job reads
    hazardctl's Kafka settings itself (`--kafka-config` FILE, or the default one, and $HAZARDCTL_KAFKA_*
    of the environment it inherits), so no secret shows in `ps`, the `flink run` log or the job's args."""
    args = ["--bootstrap", bootstrap, "--in", src, "--out", dst, "--dlq", dlq, "--group", group]
    if config:
        args += ["--config", str(Path(config).resolve())]
    if kafka_config:
        args += ["--kafka-config", str(Path(kafka_config).resolve())]
    for o in overrides:
        args += ["--set", o]
    for k, v in kafka_props.items():
        args += ["--kafka-prop", f"{k}={v}"]
    return args


def run_local(args: list[str]) -> int:
    """The job on a mini-cluster in this terminal; SIGTERM/SIGINT cancel it, then it exits 0."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FLINK_LOG_DIR": str(LOG_DIR)}
    proc = subprocess.Popen([str(VENV_PY), str(JOB_FILE), *args], env=env)

    def forward(sig, _frame):
        if proc.poll() is None:
            proc.send_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    return proc.wait()


def submit(jobmanager: str, args: list[str], savepoint: str | None = None, parallelism: int | None = None) -> str:
    """`flink run -d` the job to the session cluster at HOST:PORT; the job id."""
    host, _, port = jobmanager.rpartition(":")
    fh = flink_home()
    cmd = [str(fh / "bin" / "flink"), "run", "-d", "-Drest.address=" + host, "-Drest.port=" + port,
           "-py", str(JOB_FILE), "-pyexec", str(VENV_PY), "-pyclientexec", str(VENV_PY)]
    if savepoint:
        cmd += ["-s", savepoint]
    if parallelism:
        cmd += ["-p", str(parallelism)]
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FLINK_HOME": str(fh), "FLINK_LOG_DIR": str(LOG_DIR),
           "PATH": f"{VENV_PY.parent}:{os.environ.get('PATH', '')}"}
    try:
        p = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        raise FlinkError(f"flink run did not finish in 180 s; see {LOG_DIR}") from None
    m = re.search(r"JobID ([0-9a-f]{32})", p.stdout + p.stderr)
    if p.returncode != 0 or not m:
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        raise FlinkError(f"flink run failed (rc {p.returncode}): {' | '.join(tail)}; full log in {LOG_DIR}")
    return m.group(1)


def list_jobs(jobmanager: str) -> list[dict]:
    return rest(jobmanager, "/jobs/overview")["jobs"]


def cancel(jobmanager: str, job_id: str) -> None:
    rest(jobmanager, f"/jobs/{job_id}?mode=cancel", method="PATCH")


def savepoint(jobmanager: str, job_id: str, *, stop: bool = False, target: str | None = None,
              timeout: float = 120.0) -> str:
    """Trigger a savepoint (and stop the job when `stop`); wait for it; its location."""
    body: dict = {"formatType": "CANONICAL"}
    if target:
        body["targetDirectory" if stop else "target-directory"] = target
    if stop:
        body["drain"] = False
        trigger = rest(jobmanager, f"/jobs/{job_id}/stop", method="POST", body=body)["request-id"]
    else:
        body["cancel-job"] = False
        trigger = rest(jobmanager, f"/jobs/{job_id}/savepoints", method="POST", body=body)["request-id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = rest(jobmanager, f"/jobs/{job_id}/savepoints/{trigger}")
        if st["status"]["id"] == "COMPLETED":
            op = st.get("operation") or {}
            if "failure-cause" in op:
                raise FlinkError(f"savepoint of {job_id} failed: {op['failure-cause'].get('stack-trace', '')[:300]}")
            return op["location"]
        time.sleep(0.5)
    raise FlinkError(f"savepoint of {job_id} not done within {timeout:.0f} s")


#: `hazardctl expand` flag → config/flink.yaml setting (only flags given on the command line are passed)
GATE_FLAGS = {"gate": "gate.mode", "refresh": "gate.refresh_interval_s", "ttl": "gate.ttl_s", "min_iou": "gate.min_iou",
              "calm_refresh": "gate.calm_refresh_s", "calm_regroup": "gate.calm_regroup",
              "calm_regroup_share": "gate.calm_regroup_share", "suspect_ttc": "gate.suspect_ttc_s",
              "suspect_gap": "gate.suspect_gap_ratio", "suspect_cooldown": "gate.suspect_cooldown_s",
              "suspect_worse": "gate.suspect_worse", "suspect_flags": "gate.suspect_flags",
              "deadline": "gate.deadline_s"}


def expand_config(flags: dict[str, float | str]):
    """The local engine's `ExpandConfig` from `hazardctl expand`'s gate flags, through the same mapping and
    validation as the Flink job's settings (a bad value is one ConfigError line naming the setting)."""
    from stages.expand.tasks import ExpandConfig

    try:
        gate = flink_conf.with_overrides(flink_conf.FlinkSettings(),
                                         [f"{GATE_FLAGS[k]}={v}" for k, v in flags.items()]).gate
    except ValueError as e:
        raise ConfigError(f"expand: {e}") from None
    return ExpandConfig(gate.gate_config(), deadline_s=gate.deadline_s)


def run_expand(in_spec: str, out_spec: str, dlq: str | None, *, group_id: str, gate_flags: dict[str, float | str],
               jobmanager: str | None, flink_config: str | None, from_savepoint: str | None,
               kafka_config: str | None) -> int:
    """`hazardctl expand --engine flink`: the mini-cluster in the foreground, or a detached submission."""
    from hazardctl.config import load_kafka_settings
    from hazardctl.transports import is_kafka, kafka_topic

    if not (is_kafka(in_spec) and is_kafka(out_spec)) or (dlq and not is_kafka(dlq)):
        raise ConfigError("--engine flink reads and writes Kafka topics: use --in kafka://… --out kafka://…")
    settings = settings_or_exit(flink_config)
    preflight(settings, jobmanager)
    kafka = load_kafka_settings(kafka_config)  # validated here, read again by the job (with the secret)
    kafka_preflight(kafka, [kafka_topic(in_spec), kafka_topic(out_spec)])
    overrides = [f"{GATE_FLAGS[k]}={v}" for k, v in gate_flags.items()]
    args = job_args(kafka.bootstrap_servers, kafka_topic(in_spec), kafka_topic(out_spec),
                    kafka_topic(dlq) if dlq else "dead-letters", group_id, flink_config, overrides, {},
                    kafka_config)
    if jobmanager is None:
        if from_savepoint:
            raise ConfigError("--from-savepoint needs --jobmanager (the mini-cluster starts from committed offsets)")
        return run_local(args)
    job_id = submit(jobmanager, args, savepoint=from_savepoint)
    print(job_id, flush=True)
    return 0


def kafka_preflight(kafka, topics: list[str], timeout: float = 10.0) -> None:
    """The job's Kafka, asked from here before any JVM starts: a wrong password, an untrusted certificate
    or no broker at all is one line and exit 3 (`hazardctl.transports.kafka.wait_for_broker`, the check
    the other stages make). Inside Flink the same faults only show as a Java stack trace in the
    cluster's log while the job restarts forever."""
    from hazardctl.transports.kafka import wait_for_broker

    wait_for_broker(kafka, timeout=timeout, topics=topics)


def settings_or_exit(path: str | None) -> flink_conf.FlinkSettings:
    try:
        return flink_conf.load(path)
    except ValueError as e:
        raise ConfigError(str(e)) from None


if __name__ == "__main__":  # pragma: no cover - debugging aid
    print(list_jobs(sys.argv[1]))
