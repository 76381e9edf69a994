"""Routes and shadow picks (issue 22): a share of cameras per variant, sticky by a stable hash; the
key file's variants, routes and shadow validated whole, one line per mistake; the CLI refuses a bad
file with exit 2 before anything starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hazardctl.errors import ConfigError
from hazardctl.keys import parse_keys
from hazardctl.routing import Router, place

ROOT = Path(__file__).resolve().parent.parent
CAMERAS = [f"cam-{i:03d}" for i in range(100)]


def keyfile(**extra) -> dict:
    keys = [{"name": f"k{i}", "api_key": f"secret-{i}"} for i in range(3)]
    return {"keys": keys, "variants": {"plus": {"model": "qwen-vl-plus"}, "max": {"model": "qwen-vl-max"}},
            "routes": {"default": "plus", "shares": {"max": 10}}, **extra}


def test_ten_percent_canary_takes_ten_plus_minus_two_percent_of_100_cameras():
    router = Router.from_keys(parse_keys(keyfile(), "k.yaml"))
    canary = [c for c in CAMERAS if router.variant_for(c) == "max"]
    assert 8 <= len(canary) <= 12
    assert all(router.variant_for(c) == "max" for c in canary)  # asked again: the same answer


def test_the_hash_is_stable_across_processes_unlike_pythons_salted_hash():
    code = ("from hazardctl.routing import place; import sys; "
            "print(','.join(f'{place(c):.9f}' for c in sys.argv[1:]))")
    runs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", code, *CAMERAS[:20]], env=env, capture_output=True, text=True,
                             check=True).stdout.strip()
        runs.add(out)
    assert runs == {",".join(f"{place(c):.9f}" for c in CAMERAS[:20])}


def test_growing_a_canary_keeps_its_cameras_and_only_adds_more():
    at = {share: {c for c in CAMERAS if Router("plus", (("max", share),)).variant_for(c) == "max"}
          for share in (10, 50, 100)}
    assert at[10] <= at[50] <= at[100] and len(at[100]) == 100
    assert not {c for c in CAMERAS if Router("plus", (("max", 0),)).variant_for(c) == "max"}


def test_shadow_picks_a_fifth_of_tasks_never_the_tasks_own_variant():
    router = Router.from_keys(parse_keys(keyfile(shadow={"variant": "max", "share": 20}), "k.yaml"))
    ids = [f"task-{i}" for i in range(2000)]
    picked = [t for t in ids if router.shadow_for(t, "plus") == "max"]
    assert 0.17 <= len(picked) / len(ids) <= 0.23
    assert all(router.shadow_for(t, "max") is None for t in ids)  # a canary camera's task: no shadow of itself
    assert picked == [t for t in ids if router.shadow_for(t, "plus") == "max"]  # redelivery picks the same


@pytest.mark.parametrize("change, line", [
    ({"routes": {"default": "plus", "shares": {"mx": 10}}}, "routes: unknown variant 'mx'"),
    ({"routes": {"default": "nope"}}, "routes: unknown variant 'nope'"),
    ({"routes": {"default": "plus", "shares": {"max": 60, "other": 50}},
      "variants": {"plus": {}, "max": {}, "other": {}}}, "shares add up to 110 %"),
    ({"routes": {"default": "plus", "shares": {"plus": 50, "max": 50}}}, "the default 'plus' takes the rest"),
    ({"shadow": {"variant": "max", "share": 20}, "variants": {"plus": {}, "max": {"keys": []}}}, "shadow variant 'max' has no keys"),
    ({"shadow": {"variant": "gpt", "share": 20}}, "shadow: unknown variant 'gpt'"),
    ({"variants": {"plus": {"keys": ["k9"]}, "max": {}}}, "variant 'plus': key 'k9' is not in keys:"),
    ({"routes": None}, "2 variants but no routes"),
])
def test_bad_routes_are_one_line_each(change, line):
    data = keyfile()
    data.update(change)
    if data.get("routes") is None:
        del data["routes"]
    with pytest.raises(ConfigError) as e:
        parse_keys(data, "k.yaml")
    assert line in str(e.value) and "\n" not in str(e.value) and "secret-" not in str(e.value)


def test_a_shard_without_a_key_of_a_routed_variant_is_refused():
    data = keyfile()
    data["variants"]["max"]["keys"] = ["k1"]
    cfg = parse_keys(data, "k.yaml")
    assert cfg.shard(1, 2).variant_keys("max") == ["k1"]
    with pytest.raises(ConfigError, match=r"--shard 0/2: variant 'max' has no keys"):
        cfg.shard(0, 2)


@pytest.mark.parametrize("change, args, line", [
    ({"routes": {"default": "plus", "shares": {"max": 120}}}, [], "shares add up to 120 %"),
    ({"shadow": {"variant": "max", "share": 20}}, [], "needs --shadow-out"),
    ({}, ["--from-time", "2999-01-01T00:00:00Z"], "is in the future"),
    ({}, ["--from-time", "yesterday"], "expected ISO 8601"),
    ({}, ["--from-time", "-1h"], "needs a kafka:// input"),
])
def test_the_cli_refuses_with_exit_2_and_starts_nothing(tmp_path, change, args, line):
    data = keyfile(**change)
    for k in data["keys"]:
        k["base_url"] = "http://127.0.0.1:9/v1"  # nothing listens: a started stage would fail differently
    kf = tmp_path / "keys.yaml"
    kf.write_text(json.dumps(data))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "hazardctl.cli", "schedule", "--keys", str(kf), "--in", "-",
                        "--out", str(out), "--metrics-port", "0", *args], input=b"", env=env, capture_output=True,
                       timeout=60)
    err = p.stderr.decode().strip()
    assert p.returncode == 2, err
    assert line in err and len(err.splitlines()) == 1
    assert not out.exists()  # nothing started: the output was never opened


def test_place_is_uniform_enough_for_shares():
    xs = [place(f"c{i}") for i in range(10_000)]
    assert all(0.0 <= x < 1.0 for x in xs)
    assert 0.09 <= sum(x < 0.1 for x in xs) / len(xs) <= 0.11
