"""Variants, routes and the shadow in the real schedule stage against the simulated LLM on loopback
(issue 22): which model the provider saw for which camera (llm-sim's GET /requests), results that
name their variant, shadow answers only on --shadow-out, a plain-prompt variant, and a reload that
changes the routes while the stage runs."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from hazardctl.errors import ConfigError
from hazardctl.keys import parse_keys
from hazardctl.transports import Endpoints
from stages import schedule
from tools.llm_sim import SimConfig, SimServer
from tests.test_schedule_stage import sim_keys, tasks

CAMERAS = [f"cam-{i:03d}" for i in range(100)]


def key_data(sim, n: int = 4, qps: float = 50, **extra) -> dict:
    return {"keys": [{"name": f"k{i}", "api_key": f"secret-{i}", "qps_limit": qps, "base_url": sim.base_url}
                     for i in range(n)], **extra}


def camera_tasks(per_camera: int, **kw):
    base = tasks(len(CAMERAS) * per_camera, **kw)
    return [t.model_copy(update={"camera_id": CAMERAS[i % len(CAMERAS)]}) for i, t in enumerate(base)]


def run_files(tmp_path: Path, keys, items, shadow: bool = False, **cfg):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(t.model_dump_json().encode() + b"\n" for t in items))
    out, dlq, sh = tmp_path / "out.jsonl", tmp_path / "dlq.jsonl", tmp_path / "shadow.jsonl"
    stats = schedule.run(str(src), str(out), str(dlq), keys=keys, endpoints=Endpoints(),
                         cfg=schedule.ScheduleConfig(live_every=0, **cfg), shadow_spec=str(sh) if shadow else None)
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []  # noqa: E731
    return read(out), read(dlq), read(sh), stats


def _scrape(at: float):
    from prometheus_client import REGISTRY, generate_latest

    from tools import status

    return status.Scrape(at, {"schedule": status.parse_metrics(generate_latest(REGISTRY).decode())}, {})


def test_100_cameras_ten_percent_canary_sticky_and_seen_by_the_provider(tmp_path):
    from rich.console import Console

    from tools import status

    with SimServer(SimConfig(keys=sim_keys(4, qps=50), latency="fixed:0.02", port=0, requests_log=2000)) as sim:
        data = key_data(sim, variants={"plus": {"model": "qwen-vl-plus"}, "max": {"model": "qwen-vl-max"}},
                        routes={"default": "plus", "shares": {"max": 10}})
        items = camera_tasks(3)
        before = _scrape(100.0)
        results, dead, _, stats = run_files(tmp_path, parse_keys(data, "k"), items)
        frame = status.derive(_scrape(101.0), before)  # what `hazardctl status` shows of this run
        seen = Counter(r["model"] for r in sim.requests())
    assert not dead and stats.ok == len(items) == 300
    by_camera = defaultdict(set)
    for r in results:
        by_camera[r["camera_id"]].add((r["variant"], r["model"]))
    assert all(len(v) == 1 for v in by_camera.values())  # 100 % sticky: no camera judged by both
    canary = {c for c, v in by_camera.items() if v == {("max", "qwen-vl-max")}}
    assert 8 <= len(canary) <= 12 and len(by_camera) == 100
    assert seen == {"qwen-vl-max": 3 * len(canary), "qwen-vl-plus": 300 - 3 * len(canary)}  # what the provider got
    rows = {(v.variant, v.role): v for v in frame.variants}  # metrics and status split by variant
    assert rows[("max", "primary")].per_s == 3 * len(canary) and rows[("plus", "primary")].per_s == 300 - 3 * len(canary)
    assert rows[("max", "primary")].ok == 1.0 and 0 < rows[("max", "primary")].llm_p95_s < 5  # (a loaded box: not 20 ms)
    console = Console(record=True, width=120)
    console.print(status.render(frame, status.StatusConfig()))
    shown = console.export_text()
    assert "variants" in shown and "max" in shown and "primary" in shown


def test_shadow_answers_go_only_to_shadow_out_and_name_their_variant(tmp_path):
    with SimServer(SimConfig(keys=sim_keys(4, qps=50), latency="fixed:0.02", port=0, requests_log=2000)) as sim:
        data = key_data(sim, variants={"plus": {"model": "qwen-vl-plus"},
                                       "max": {"model": "qwen-vl-max", "prompt_version": "plain", "language": "zh"}},
                        routes={"default": "plus"}, shadow={"variant": "max", "share": 50})
        items = tasks(120, deadline_s=60)
        results, dead, shadows, stats = run_files(tmp_path, parse_keys(data, "k"), items, shadow=True)
        seen = Counter(r["model"] for r in sim.requests())
    assert not dead and stats.ok == 120 and {r["variant"] for r in results} == {"plus"}
    assert {r["model"] for r in results} == {"qwen-vl-plus"}  # operators see the primary only
    assert shadows and {r["variant"] for r in shadows} == {"max"} and {r["model"] for r in shadows} == {"qwen-vl-max"}
    ids = {t.task_id for t in items}
    assert {r["task_id"] for r in shadows} <= ids and len(shadows) <= 0.65 * 120
    assert all(r["prompt_version"].startswith("zh-") for r in shadows)  # the variant's language and prompt
    assert all(r["prompt_version"].startswith("en-") for r in results)
    assert seen["qwen-vl-max"] == len(shadows) and seen["qwen-vl-plus"] == 120
    assert all(r["tokens"] and r["tokens"] > 0 for r in results)


def test_sighup_reload_moves_cameras_to_the_new_routes_and_a_bad_file_is_refused(tmp_path):
    """In process: the stage reads a pipe that a thread feeds; between two batches the key file is
    rewritten (first broken, then with every camera on max) and reloaded as SIGHUP would."""
    import os

    with SimServer(SimConfig(keys=sim_keys(3, qps=50), latency="fixed:0.02", port=0)) as sim:
        kf = tmp_path / "keys.json"
        variants = {"plus": {"model": "qwen-vl-plus"}, "max": {"model": "qwen-vl-max"}}
        kf.write_text(json.dumps(key_data(sim, 3, variants=variants, routes={"default": "plus"})))
        load = lambda: parse_keys(json.loads(kf.read_text()), str(kf))  # noqa: E731
        r, w = os.pipe()
        out = tmp_path / "out.jsonl"
        from hazardctl.transports.pipes import open_line_input, open_line_output

        sched = schedule.Scheduler(load(), open_line_input(f"/dev/fd/{r}"), open_line_output(str(out)),
                                   open_line_output(str(tmp_path / "dlq.jsonl")),
                                   schedule.ScheduleConfig(live_every=0), reload_keys=load)
        first, second = tasks(20, deadline_s=60), tasks(40, deadline_s=60)[20:]
        outcomes = []

        def feed():
            with os.fdopen(w, "wb") as f:
                f.write(b"".join(t.model_dump_json().encode() + b"\n" for t in first))
                f.flush()
                time.sleep(1.0)
                kf.write_text("{not: [valid")
                outcomes.append(asyncio.run_coroutine_threadsafe(sched.reload(), loop).result(10))
                kf.write_text(json.dumps(key_data(sim, 3, variants=variants, routes={"default": "max"})))
                outcomes.append(asyncio.run_coroutine_threadsafe(sched.reload(), loop).result(10))
                f.write(b"".join(t.model_dump_json().encode() + b"\n" for t in second))

        loop = asyncio.new_event_loop()
        th = threading.Thread(target=feed)
        th.start()
        stats = loop.run_until_complete(sched.run())
        th.join()
        loop.close()
    results = [json.loads(x) for x in out.read_text().splitlines()]
    assert outcomes == [False, True] and stats.ok == 40
    first_ids = {t.task_id for t in first}
    assert {r["variant"] for r in results if r["task_id"] in first_ids} == {"plus"}
    assert {r["variant"] for r in results if r["task_id"] not in first_ids} == {"max"}


def test_the_reload_reads_an_encrypted_key_file_again_with_its_shard(tmp_path, monkeypatch):
    from hazardctl.keys import encrypt_file
    from stages.schedule_cli import _reloader

    monkeypatch.setenv("HAZARDCTL_KEYS_PASSPHRASE", "correct horse")
    plain, enc = tmp_path / "keys.yaml", tmp_path / "keys.enc"

    def write(names):
        plain.write_text(json.dumps({"keys": [{"name": n, "api_key": f"secret-{n}"} for n in names]}))
        encrypt_file(plain, enc)

    write(["a", "b", "c", "d"])
    reload = _reloader(str(enc), (0, 2))
    assert [k.name for k in reload().keys] == ["a", "c"]
    write(["a", "b", "c", "d", "e"])  # rotated on disk while the stage runs
    assert [k.name for k in reload().keys] == ["a", "c", "e"]
    enc.write_bytes(enc.read_bytes()[:-20] + b"tampered-tampered!!\n")
    with pytest.raises(ConfigError, match="cannot decrypt"):
        reload()  # the stage logs this as "reload refused" and keeps running
