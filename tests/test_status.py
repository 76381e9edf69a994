"""`hazardctl status` against a real running pipeline over the real local broker.

expand → schedule (the simulated LLM it starts itself, 10 keys) → consume run as real processes
with `--metrics-port`; synthetic detections stream in. Checked: `status --once --json` shows the
three stages UP with real throughput, the key pool per key, consumer lag for the groups (read from
the broker), an end-to-end P95; a stage that is not running (detect) is DOWN, never zeros; after
expand is killed it is DOWN too. The live view runs under tmux; its screen is captured to
test-artifacts/status-screen.txt. Pure parts (histogram quantile, derive) are checked with
hand-made scrapes.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import uuid

import pytest

from hazardctl.synthetic import detection
from tests.conftest import HAZARDCTL, ROOT
from tests.kafka_util import produce
from tests.pipeline_proc import Stage, stage_env, wait_until
from tools import status

KAFKA_CONFIG = ["--kafka-config", str(ROOT / "config" / "kafka.yaml")]
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- pure parts ----------------------------------------------------------------------------------

def test_histogram_quantile_interpolates_like_prometheus():
    # 100 observations: 50 ≤ 0.1 s, 90 ≤ 0.5 s, all ≤ 1 s → p95 halfway through the (0.5, 1] bucket
    buckets = {0.1: 50, 0.5: 90, 1.0: 100, float("inf"): 100}
    assert status.histogram_quantile(0.95, buckets) == pytest.approx(0.75)
    assert status.histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert status.histogram_quantile(0.95, {0.1: 0, float("inf"): 0}) is None


def _samples(text: str) -> status.Samples:
    return status.parse_metrics(text)


SCHEDULE_T0 = """
hazardctl_messages_in_total{stage="schedule"} 100
hazardctl_messages_out_total{stage="schedule"} 90
hazardctl_dead_letters_total{stage="schedule",reason="bad_response"} 2
hazardctl_key_state{key="k1",state="available"} 1
hazardctl_key_state{key="k1",state="cooling"} 0
hazardctl_key_state{key="k2",state="available"} 0
hazardctl_key_state{key="k2",state="disabled"} 1
hazardctl_llm_calls_total{key="k1",outcome="ok"} 40
hazardctl_llm_calls_total{key="k2",outcome="unauthorized"} 1
hazardctl_key_last_error{key="k2",error_class="unauthorized"} 1
"""


def test_derive_rates_keys_and_down_stages():
    t1 = SCHEDULE_T0.replace(" 100\n", " 120\n").replace("outcome=\"ok\"} 40", "outcome=\"ok\"} 50")
    prev = status.Scrape(10.0, {"schedule": _samples(SCHEDULE_T0), "expand": None}, {})
    cur = status.Scrape(12.0, {"schedule": _samples(t1), "expand": None}, {"g": {"t": 5}})
    frame = status.derive(cur, prev)
    sched, expand = frame.stages
    assert (sched.name, sched.up, sched.in_per_s, sched.dead_letters) == ("schedule", True, 10.0, 2)
    assert (expand.up, expand.in_per_s, expand.out_per_s) == (False, None, None)  # down is not zero
    k1, k2 = frame.keys
    assert (k1.key, k1.state, k1.calls_per_s) == ("k1", "available", 5.0)
    assert (k2.state, k2.last_error) == ("disabled", "unauthorized")
    assert frame.lag == {"g": {"t": 5}}


# --- against a real pipeline ---------------------------------------------------------------------

def _status_json(stages: dict[str, int], groups: list[str], env: dict) -> dict:
    args = [*HAZARDCTL, "status", "--json", "--interval", "1.5", *KAFKA_CONFIG]
    for name, port in stages.items():
        args += ["--stage", f"{name}=127.0.0.1:{port}"]
    for g in groups:
        args += ["--group", g]
    out = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_status_shows_a_running_pipeline_and_a_stopped_stage(kafka_bootstrap, make_topic, hazardctl_env, tmp_path):
    detections, tasks = make_topic("st-detections", 4), make_topic("st-tasks", 4)
    results, dead = make_topic("st-results", 4), make_topic("st-dead", 1)
    run = uuid.uuid4().hex[:8]
    groups = {s: f"st-{s}-{run}" for s in ("expand", "schedule", "consume")}
    ports = {s: free_port() for s in ("detect", "expand", "schedule", "consume")}  # detect: never started
    env = stage_env(hazardctl_env)
    dlq = ["--dlq", f"kafka://{dead}"]
    stages: list[Stage] = []
    stop = threading.Event()

    def feed() -> None:
        frame = 0
        while not stop.is_set():
            now = time.time()
            batch = [(f"cam-{c}".encode(), detection(f"cam-{c}", frame, now).model_dump_json().encode())
                     for c in range(4)]
            produce(kafka_bootstrap, detections, batch)
            frame += 1
            stop.wait(0.5)

    feeder = threading.Thread(target=feed, daemon=True)
    try:
        stages.append(Stage("consume", ["--in", f"kafka://{results}", "--ws", "127.0.0.1:0", "--replay", "0",
                                        "--group", groups["consume"], "--metrics-port", str(ports["consume"]),
                                        *dlq, *KAFKA_CONFIG], tmp_path, env=env, cwd=ROOT))
        # cwd = an empty folder: no key file → schedule starts the simulated LLM (10 keys) itself
        stages.append(Stage("schedule", ["--in", f"kafka://{tasks}", "--out", f"kafka://{results}",
                                         "--group", groups["schedule"], "--metrics-port", str(ports["schedule"]),
                                         *dlq, *KAFKA_CONFIG], tmp_path, env=env, cwd=tmp_path))
        expand = Stage("expand", ["--in", f"kafka://{detections}", "--out", f"kafka://{tasks}", "--refresh", "1",
                                  "--group", groups["expand"], "--metrics-port", str(ports["expand"]),
                                  *dlq, *KAFKA_CONFIG], tmp_path, env=env, cwd=ROOT)
        stages.append(expand)
        feeder.start()

        def results_flowing() -> dict | None:
            frame = _status_json(ports, list(groups.values()), env)
            rows = {r["name"]: r for r in frame["stages"]}
            ok = (all(rows[s]["up"] for s in ("expand", "schedule", "consume"))
                  and (rows["expand"]["out_per_s"] or 0) > 0 and (rows["consume"]["in_per_s"] or 0) > 0
                  and frame["e2e_p95_s"] is not None and len(frame["lag"] or {}) == 3)
            return frame if ok else None

        frame = wait_until(results_flowing, 90, "status to show results flowing through three stages", stages)
        rows = {r["name"]: r for r in frame["stages"]}
        assert rows["detect"] == {"name": "detect", "up": False, "in_per_s": None, "out_per_s": None,
                                  "in_flight": None, "errors": None, "dead_letters": None}
        assert [k["key"] for k in frame["keys"]] == [f"sim-key-{i:02d}" for i in range(1, 11)]
        assert {k["state"] for k in frame["keys"]} <= {"available", "in_use"}
        assert sum((k["calls_per_s"] or 0) for k in frame["keys"]) > 0
        assert set(frame["lag"]) == set(groups.values())
        assert set(frame["lag"][groups["expand"]]) == {detections}
        assert 0 < frame["e2e_p95_s"] < 10

        # the live view under tmux, as an operator sees it
        if shutil.which("tmux") is None:
            pytest.fail("tmux is not installed (make test installs it: scripts/install-tmux.sh)")
        session = f"status-{run}"
        cmd = " ".join([*HAZARDCTL, "status", "--interval", "1", *KAFKA_CONFIG,
                        *[f"--stage {n}=127.0.0.1:{p}" for n, p in ports.items()],
                        *[f"--group {g}" for g in groups.values()]])
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "60",
                        f"cd {ROOT} && unset COLUMNS LINES && PYTHONPATH={ROOT} {cmd}"], check=True)
        try:
            last = {"screen": ""}

            def screen_with(*words: str) -> str | None:
                text = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                      capture_output=True, text=True).stdout
                last["screen"] = text
                return text if all(w in text for w in words) else None

            live = wait_until(lambda: screen_with("sim-key-10", "UP", "DOWN", "end-to-end P95", " ms", "(last "), 30,
                              "the live status screen", stages)
            expand.kill()
            stopped = wait_until(lambda: _with_stage_down(screen_with("sim-key-10") or "", "expand"), 30,
                                 "expand shown DOWN", stages[:2])
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "status-screen.txt").write_text(
                "# hazardctl status under tmux, pipeline running (detect never started)\n" + live
                + "\n# after kill -9 of expand\n" + stopped)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- last status screen ---\n{last['screen']}") from None
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)

        after = _status_json(ports, list(groups.values()), env)
        rows = {r["name"]: r for r in after["stages"]}
        assert not rows["expand"]["up"] and rows["expand"]["out_per_s"] is None
        assert rows["schedule"]["up"] and rows["consume"]["up"]
    finally:
        stop.set()
        for s in reversed(stages):
            s.terminate()
        for s in reversed(stages):
            if s.wait(10) is None:
                s.kill()
            s.kill()


def _with_stage_down(screen: str, stage: str) -> str | None:
    """The screen if the stages table shows `stage` DOWN (rows look like `│ expand │ addr │ DOWN │ …`)."""
    for line in screen.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 3 and cells[1] == stage and cells[3] == "DOWN":
            return screen
    return None


def test_status_bad_stage_flag_is_one_line(hazardctl_env):
    out = subprocess.run([*HAZARDCTL, "status", "--once", "--no-kafka", "--stage", "schedule"],
                         capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert out.returncode == 2
    assert "expected NAME=HOST:PORT" in out.stderr and "Traceback" not in out.stderr


# --- the broker down: the moment an operator needs the view most ----------------------------------

def _dead_address() -> tuple[socket.socket, str]:
    """A loopback address where nothing listens and nothing else can start to: a socket bound, never
    listening (a connect gets RST at once). Keep the socket open while the address is in use."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s, f"127.0.0.1:{s.getsockname()[1]}"


def _no_broker_env() -> tuple[list[socket.socket], dict]:
    held, broker = _dead_address()
    env = stage_env()
    env["HAZARDCTL_KAFKA_BOOTSTRAP"] = broker
    return [held], env


def _quick_config(tmp_path, **stages: str) -> str:
    """A status config that gives up on a stage after 0.3 s and on the broker after 0.9 s (3 × timeout_s)."""
    path = tmp_path / "status.yaml"
    path.write_text(json.dumps({"stages": stages, "timeout_s": 0.3, "interval_s": 0.5}))
    return str(path)


def test_status_once_with_the_broker_down_shows_stages_down_and_exits_0(tmp_path):
    """No broker and no stage: every stage DOWN, "broker unreachable" in the lag panel, exit 0, no
    traceback (it used to end in a concurrent.futures.TimeoutError traceback)."""
    held, env = _no_broker_env()
    stage_addrs = {}
    for name in ("detect", "expand", "schedule", "consume"):
        s, addr = _dead_address()
        held.append(s)
        stage_addrs[name] = addr
    config = _quick_config(tmp_path, **stage_addrs)
    try:
        for extra in (["--json"], []):
            out = subprocess.run([*HAZARDCTL, "status", "--once", "--config", config, *extra],
                                 capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
            assert out.returncode == 0, out.stderr[-2000:]
            assert "Traceback" not in out.stderr + out.stdout, out.stderr[-2000:]
            if extra:
                frame = json.loads(out.stdout)
                assert [(r["name"], r["up"]) for r in frame["stages"]] == [(n, False) for n in stage_addrs]
                assert frame["lag"] is None
                assert frame["lag_error"] == f"broker unreachable: Kafka at {env['HAZARDCTL_KAFKA_BOOTSTRAP']} did not answer within 1s"
            else:
                assert out.stdout.count("DOWN") == len(stage_addrs) and "UP" not in out.stdout
                assert "broker unreachable" in " ".join(out.stdout.split())  # rich may wrap the line
    finally:
        for s in held:
            s.close()


def test_status_live_view_keeps_running_without_a_broker(tmp_path):
    """The live view under tmux with no broker: it shows "broker unreachable" refresh after refresh,
    and a stage that starts meanwhile (a real llm-sim with --metrics-port) turns UP on the same screen,
    so the loop is alive, not a frozen last frame."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (make test installs it: scripts/install-tmux.sh)")
    held, env = _no_broker_env()
    sim_metrics = free_port()
    session = f"status-nobroker-{uuid.uuid4().hex[:8]}"
    cmd = " ".join([*HAZARDCTL, "status", "--config", _quick_config(tmp_path, **{"llm-sim": f"127.0.0.1:{sim_metrics}"})])
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "40", "-e",
                    f"HAZARDCTL_KAFKA_BOOTSTRAP={env['HAZARDCTL_KAFKA_BOOTSTRAP']}",
                    f"cd {ROOT} && unset COLUMNS LINES && PYTHONPATH={ROOT} {cmd}; echo STATUS-EXITED $?; sleep 60"],
                   check=True)
    sim = None
    last = {"screen": ""}

    def screen() -> str:
        last["screen"] = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                        capture_output=True, text=True).stdout
        return last["screen"]

    try:
        def stage_down() -> str | None:
            s = screen()
            return s if _with_stage_down(s, "llm-sim") and "broker unreachable" in s else None

        down = wait_until(stage_down, 30, "the live view with the broker down", [])
        first_clock = down.split("hazardctl status ", 1)[1][:8]
        sim = subprocess.Popen([*HAZARDCTL, "llm-sim", "--port", "0", "--metrics-port", str(sim_metrics)],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def stage_up() -> str | None:
            s = screen()
            rows = [[c.strip() for c in line.split("│")] for line in s.splitlines()]
            up = any(len(c) > 3 and c[1] == "llm-sim" and c[3] == "UP" for c in rows)
            return s if up and "broker unreachable" in s else None

        after = wait_until(stage_up, 40, "llm-sim shown UP while the broker stays unreachable", [])
        assert "STATUS-EXITED" not in after and "Traceback" not in after
        assert after.split("hazardctl status ", 1)[1][:8] != first_clock  # refreshed, not a frozen frame
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- last status screen ---\n{last['screen']}") from None
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        if sim is not None:
            sim.terminate()
            sim.wait(10)
        for s in held:
            s.close()


def test_status_reads_consume_metrics_with_its_token(tmp_path):
    """consume's --metrics-port requires --token-file's token: status sends it (to consume only) with
    --token-file; without it consume is DOWN with a note saying why, not silently."""
    from tests.consume_proc import ConsumeProcess

    token = "status-token-" + uuid.uuid4().hex
    token_file = tmp_path / "consume.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    port = free_port()
    env = {k: v for k, v in stage_env().items() if k != "HAZARDCTL_CONSUME_TOKEN"}
    with ConsumeProcess("--token-file", str(token_file), "--metrics-port", str(port), env=env):
        base = [*HAZARDCTL, "status", "--once", "--json", "--no-kafka", "--interval", "0.2",
                "--stage", f"consume=127.0.0.1:{port}"]
        frames = {}
        for name, extra in (("without", []), ("with", ["--token-file", str(token_file)])):
            out = subprocess.run([*base, *extra], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
            assert out.returncode == 0 and token not in out.stdout + out.stderr, out.stderr[-2000:]
            frames[name] = json.loads(out.stdout)
    without, with_token = frames["without"], frames["with"]
    assert not without["stages"][0]["up"] and without["notes"] == [
        "consume: HTTP 401 (its metrics need the token: --token-file)"]
    assert with_token["stages"][0]["up"] and with_token["notes"] == []
    assert with_token["stages"][0]["in_flight"] is not None
