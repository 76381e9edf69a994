"""Key configuration: validation that names the key and field, secrets that never print, the
encrypted file (round trip, wrong passphrase, tampering), and the CLI's one-line errors."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hazardctl.errors import ConfigError
from hazardctl.keys import DASHSCOPE_BASE_URL, encrypt_file, load_keys, parse_keys

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-" + "5f3c9a7e1b2d4c6e8a0f9b7d5c3e1a2b"  # real-looking on purpose: it must never be printed
SECRET2 = "sk-" + "0a1b2c3d4e5f60718293a4b5c6d7e8f9"


def write(tmp_path: Path, data: dict, name: str = "keys.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def two_keys(**over) -> dict:
    return {"strategy": "round_robin",
            "keys": [{"name": "k1", "api_key": "${TEST_KEY_ONE}", "qps_limit": 5},
                     {"name": "k2", "api_key": SECRET2, "qps_limit": 5, **over}]}


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv("TEST_KEY_ONE", SECRET)
    monkeypatch.setenv("HAZARDCTL_KEYS_PASSPHRASE", "correct horse battery staple")


def test_defaults_and_env_references(tmp_path):
    cfg = load_keys(write(tmp_path, two_keys()))
    k1 = cfg.keys[0]
    assert k1.secret() == SECRET
    assert (k1.model, k1.base_url, k1.timeout, k1.rpm_limit) == ("qwen-vl-plus", DASHSCOPE_BASE_URL, 30.0, None)
    assert (cfg.max_retry_per_key, cfg.default_cooldown, cfg.strategy) == (3, 30.0, "round_robin")
    assert k1.limits().name == "k1" and not hasattr(k1.limits(), "api_key")  # the pool never sees secrets


def test_secrets_never_appear_in_reprs_or_dumps(tmp_path):
    cfg = load_keys(write(tmp_path, two_keys()))
    for text in (repr(cfg), str(cfg), cfg.model_dump_json(), repr(cfg.keys[0]), str(cfg.model_dump()),
                 repr(cfg.keys[1].limits()), repr(cfg.policy())):
        assert SECRET not in text and SECRET2 not in text


def test_validation_error_names_the_key_and_the_field_not_the_secret(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_keys(write(tmp_path, two_keys(qps_limit=0)))
    msg = str(e.value)
    assert "key 'k2' (keys[1]).qps_limit" in msg and "greater than 0" in msg
    assert SECRET2 not in msg and "\n" not in msg
    with pytest.raises(ConfigError, match=r"key 'k2' \(keys\[1\]\)\.base_url"):
        load_keys(write(tmp_path, two_keys(base_url="ftp://x")))
    with pytest.raises(ConfigError, match=r"key 'k2' \(keys\[1\]\)\.colour: Extra inputs"):
        load_keys(write(tmp_path, two_keys(colour="red")))
    with pytest.raises(ConfigError, match="strategy"):
        load_keys(write(tmp_path, {**two_keys(), "strategy": "random"}))


def test_missing_env_var_and_empty_secret_and_duplicates(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_KEY_ONE")
    with pytest.raises(ConfigError, match="environment variable TEST_KEY_ONE is not set"):
        load_keys(write(tmp_path, two_keys()))
    monkeypatch.setenv("TEST_KEY_ONE", "  ")
    with pytest.raises(ConfigError, match=r"key 'k1' \(keys\[0\]\)\.api_key: is empty"):
        load_keys(write(tmp_path, two_keys()))
    monkeypatch.setenv("TEST_KEY_ONE", SECRET)
    with pytest.raises(ConfigError, match="'k2': name is used twice"):
        load_keys(write(tmp_path, {"keys": two_keys()["keys"] + [{"name": "k2", "api_key": "x"}]}))


def test_shard_takes_every_nth_key(tmp_path):
    cfg = parse_keys({"keys": [{"name": f"k{i}", "api_key": f"s{i}"} for i in range(5)]}, "t")
    assert [k.name for k in cfg.shard(0, 2).keys] == ["k0", "k2", "k4"]
    assert [k.name for k in cfg.shard(1, 2).keys] == ["k1", "k3"]
    with pytest.raises(ConfigError):
        cfg.shard(2, 2)


def test_the_example_file_is_valid(monkeypatch):
    for i in range(1, 4):
        monkeypatch.setenv(f"DASHSCOPE_KEY_00{i}", f"placeholder-{i}")
    cfg = load_keys(ROOT / "config" / "api_keys.yaml")
    assert len(cfg.keys) == 3 and cfg.keys[0].rpm_limit == 300
    assert len(load_keys(ROOT / "config" / "api_keys.sim.yaml").keys) == 10


# -- the encrypted file -----------------------------------------------------------------------------

def test_encrypt_round_trip_resolving_env(tmp_path, monkeypatch):
    src = write(tmp_path, two_keys())
    enc = tmp_path / "keys.enc"
    assert encrypt_file(src, enc, resolve_env=True) == 2
    raw = enc.read_bytes()
    assert SECRET.encode() not in raw and SECRET2.encode() not in raw
    # no plaintext at all: field names of the keys file cannot occur in base64 ciphertext (no "_"),
    # unlike a 2-letter key name such as "k1", which random ciphertext contains now and then
    assert b"api_key" not in raw and b"qps_limit" not in raw
    assert stat.S_IMODE(enc.stat().st_mode) == 0o600
    monkeypatch.delenv("TEST_KEY_ONE")  # resolved at encryption: no longer needed
    cfg = load_keys(enc)
    assert [k.secret() for k in cfg.keys] == [SECRET, SECRET2]


def test_encrypt_keeps_env_references_unless_asked(tmp_path, monkeypatch):
    enc = tmp_path / "keys.enc"
    encrypt_file(write(tmp_path, two_keys()), enc)
    monkeypatch.setenv("TEST_KEY_ONE", "rotated-value")
    assert load_keys(enc).keys[0].secret() == "rotated-value"


def test_wrong_passphrase_is_one_clear_error(tmp_path):
    enc = tmp_path / "keys.enc"
    encrypt_file(write(tmp_path, two_keys()), enc)
    with pytest.raises(ConfigError) as e:
        load_keys(enc, passphrase="wrong")
    assert str(e.value) == f"{enc}: cannot decrypt: wrong passphrase, or the file was modified"


@pytest.mark.parametrize("where", ["token", "salt", "truncate"])
def test_tampered_file_is_refused(tmp_path, where):
    enc = tmp_path / "keys.enc"
    encrypt_file(write(tmp_path, two_keys()), enc)
    head, token = enc.read_bytes().split(b"\n", 1)
    if where == "token":
        i = len(token) // 2
        token = token[:i] + (b"A" if token[i:i + 1] != b"A" else b"B") + token[i + 1:]
    elif where == "salt":
        head = head.replace(b'"salt": "', b'"salt": "AAAA', 1)
    else:
        token = token[: len(token) // 2]
    enc.write_bytes(head + b"\n" + token)
    with pytest.raises(ConfigError, match="wrong passphrase, or the file was modified|damaged header"):
        load_keys(enc)


def test_encrypt_refuses_invalid_or_same_file(tmp_path):
    with pytest.raises(ConfigError, match="qps_limit"):
        encrypt_file(write(tmp_path, two_keys(qps_limit=-1)), tmp_path / "x.enc")
    src = write(tmp_path, two_keys())
    with pytest.raises(ConfigError, match="must not overwrite"):
        encrypt_file(src, src)
    assert not (tmp_path / "x.enc").exists()


# -- the commands -----------------------------------------------------------------------------------

def hz(*args: str, env: dict | None = None, cwd: Path = ROOT, stdin: bytes = b"") -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "hazardctl.cli", *args], input=stdin, capture_output=True,
                          env=e, cwd=cwd, timeout=60)


def test_cli_keys_encrypt_then_schedule_with_a_wrong_passphrase(tmp_path):
    src = write(tmp_path, two_keys())
    enc = tmp_path / "keys.enc"
    r = hz("keys-encrypt", str(src), "-o", str(enc), "--resolve-env")
    assert r.returncode == 0, r.stderr
    assert b"wrote" in r.stderr and SECRET.encode() not in r.stderr + r.stdout
    r = hz("schedule", "--keys", str(enc), env={"HAZARDCTL_KEYS_PASSPHRASE": "nope"})
    lines = r.stderr.decode().strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "cannot decrypt: wrong passphrase, or the file was modified" in lines[0]
    assert r.stdout == b""  # nothing half-loaded, nothing processed


def test_cli_schedule_without_keys_says_how_to_start(tmp_path):
    r = hz("schedule", "--no-simulate", cwd=tmp_path, env={"HAZARDCTL_KEYS": ""})
    lines = r.stderr.decode().strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1
    assert "hazardctl llm-sim" in lines[0] and "--keys" in lines[0]


def test_cli_schedule_without_keys_uses_the_simulated_llm_by_default(tmp_path):
    """The embedded default (make demo): no key configured → a real simulator process answers."""
    import time

    from hazardctl.messages import RiskAssessmentResult
    from hazardctl.synthetic import detection
    from stages.expand import Expander
    from hazardctl.transports.base import Record

    det = detection("cam-sim", 0, time.time(), groups=2)
    tasks = b"".join(v + b"\n" for _k, v in Expander()(Record(value=det.model_dump_json().encode())))
    r = hz("schedule", cwd=tmp_path, env={"HAZARDCTL_KEYS": ""}, stdin=tasks)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert "SIMULATED LLM" in r.stderr.decode()
    results = [RiskAssessmentResult.model_validate_json(line) for line in r.stdout.splitlines()]
    assert len(results) == 2 and all(x.status == "ok" and x.key_name.startswith("sim-key-") for x in results)


def test_cli_schedule_bad_key_field_names_it_and_hides_the_secret(tmp_path):
    src = write(tmp_path, two_keys(rpm_limit="lots"))
    r = hz("schedule", "--keys", str(src), env={"TEST_KEY_ONE": SECRET})
    err = r.stderr.decode()
    assert r.returncode == 2 and "key 'k2' (keys[1]).rpm_limit" in err
    assert SECRET not in err and SECRET2 not in err


def test_cli_help_shows_no_secret_defaults():
    r = hz("schedule", "--help", env={"TEST_KEY_ONE": SECRET})
    assert r.returncode == 0 and SECRET.encode() not in r.stdout
