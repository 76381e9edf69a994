"""consume's access control, on a real `hazardctl consume` process with real HTTP and WebSocket clients.

With a token: every API path and /metrics answer 401 without it (both ports), the page and /healthz
stay open; a WebSocket handshake without the token, with a wrong one, or from a foreign Origin is
refused before any data is sent; the token works as an Authorization header and as the browser's
`bearer.<base64url>` subprotocol (the server selects `hazardctl`, never echoing the token). Limits:
clients, request target length, query fields. Without a token, foreign Origins are still refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from hazardctl.synthetic import risk_result
from tests.conftest import HAZARDCTL, ROOT
from tests.consume_proc import ConsumeProcess, recv_json

pytestmark = pytest.mark.timeout(60)

TOKEN = "s3cret-token-" + "x" * 20


def get(port: int, path: str, token: str | None = None, **headers: str) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def bearer_protocol(token: str) -> str:
    return "bearer." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


async def handshake(url: str, **kw) -> tuple[int | None, str | None, dict | None]:
    """(refusal status or None, selected subprotocol, first message)"""
    try:
        async with connect(url, open_timeout=5, **kw) as ws:
            return None, ws.subprotocol, await recv_json(ws)
    except InvalidStatus as e:
        return e.response.status_code, None, None


def test_token_required_on_api_metrics_and_websocket(tmp_path):
    token_file = tmp_path / "consume.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with ConsumeProcess("--http", "127.0.0.1:0", "--token-file", str(token_file)) as c:
        c.send(risk_result("cam-1", "g1", 1, time.time(), level="high"))
        for port in (c.ws_port, c.http_port):  # websockets' process_request and aiohttp
            for path in ("/cameras", "/incidents", "/results", "/cameras/cam-1", "/metrics", "/auth"):
                status, headers, body = get(port, path)
                assert status == 401, (port, path, status)
                assert headers.get("WWW-Authenticate", "").startswith("Bearer") and b"cam-1" not in body
                assert get(port, path, token="wrong-" + TOKEN)[0] == 401
            assert get(port, "/healthz")[0] == 200
            status, _, page = get(port, "/")
            assert status == 200 and b'id="token"' in page  # the page itself holds no data; it asks
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and b"cam-1" not in get(port, "/cameras", token=TOKEN)[2]:
                time.sleep(0.05)
            status, _, body = get(port, "/cameras", token=TOKEN)
            assert status == 200 and json.loads(body)["cameras"][0]["camera_id"] == "cam-1"
            assert get(port, "/auth", token=TOKEN)[0] == 200
            status, _, text = get(port, "/metrics", token=TOKEN)
            assert status == 200 and b"hazardctl_consume_refused_total" in text

        async def websockets_side() -> None:
            own = f"http://127.0.0.1:{c.ws_port}"
            assert (await handshake(c.ws_url))[0] == 401
            assert (await handshake(c.ws_url, additional_headers={"Authorization": "Bearer nope-" + TOKEN}))[0] == 401
            assert (await handshake(c.ws_url, subprotocols=["hazardctl", bearer_protocol("x" + TOKEN)]))[0] == 401
            status, proto, first = await handshake(c.ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
            assert status is None and first["type"] == "snapshot"
            # the browser way: the token as a subprotocol; the server selects "hazardctl", never the token
            status, proto, first = await handshake(c.ws_url, origin=own,
                                                   subprotocols=["hazardctl", bearer_protocol(TOKEN)])
            assert status is None and proto == "hazardctl" and first["type"] == "snapshot"
            assert [x["camera_id"] for x in first["cameras"]] == ["cam-1"]
            # the page served by --http is our own origin too
            status, _, _ = await handshake(c.ws_url, origin=f"http://127.0.0.1:{c.http_port}",
                                           subprotocols=["hazardctl", bearer_protocol(TOKEN)])
            assert status is None
            # cross-site WebSocket hijacking: a foreign page in the operator's browser, even with the token
            for origin in ("https://evil.example", "http://127.0.0.1:1", f"http://localhost.evil:{c.ws_port}"):
                status, _, _ = await handshake(c.ws_url, origin=origin,
                                               subprotocols=["hazardctl", bearer_protocol(TOKEN)])
                assert status == 403, origin

        asyncio.run(websockets_side())
        _, _, text = get(c.http_port, "/metrics", token=TOKEN)
        refused = {line.split('reason="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                   for line in text.decode().splitlines() if line.startswith("hazardctl_consume_refused_total{")}
        assert refused["origin"] == 3 and refused["unauthorized"] >= 3 + 2 * 12
    assert TOKEN not in "".join(c.stderr)


def test_foreign_origin_refused_without_token_unless_allowed_and_limits():
    with ConsumeProcess("--allow-origin", "https://ops.example.com", "--max-clients", "2") as c:
        async def run() -> None:
            assert (await handshake(c.ws_url, origin="https://evil.example"))[0] == 403
            assert (await handshake(c.ws_url, origin="https://ops.example.com"))[0] is None
            assert (await handshake(c.ws_url))[0] is None  # not a browser (no Origin), no token configured
            async with connect(c.ws_url) as a, connect(c.ws_url) as b:
                await recv_json(a), await recv_json(b)
                assert (await handshake(c.ws_url))[0] == 503  # a third client: over --max-clients
            await asyncio.sleep(0.2)
            assert (await handshake(c.ws_url))[0] is None  # room again once they left

        asyncio.run(run())
        assert get(c.ws_port, "/results?" + "&".join(f"a{i}=1" for i in range(40)))[0] == 400
        assert get(c.ws_port, "/results?camera=" + "c" * 5000)[0] == 414
        assert get(c.ws_port, "/results?limit=2")[0] == 200


@pytest.mark.parametrize("setup, expected", [
    ({"env": "tooShrt9"}, "at least 16 characters"),
    ({"env": "tooShrt9-but-long-\u00e9\u00e9"}, "printable ASCII"),
    ({"file": None}, "file not found"),
    ({"origin": "evil.example"}, "--allow-origin"),
])
def test_bad_access_settings_are_one_line_errors(tmp_path, setup, expected):
    import os

    env = {k: v for k, v in os.environ.items() if k != "HAZARDCTL_CONSUME_TOKEN"}
    env["PYTHONPATH"] = str(ROOT)
    args = ["consume", "--ws", "127.0.0.1:0", "--exit-on-eof"]
    if "env" in setup:
        env["HAZARDCTL_CONSUME_TOKEN"] = setup["env"]
    if "file" in setup:
        args += ["--token-file", str(tmp_path / "missing.token")]
    if "origin" in setup:
        args += ["--allow-origin", setup["origin"]]
    p = subprocess.run([*HAZARDCTL, *args], env=env, cwd=ROOT, input=b"", capture_output=True, timeout=30)
    err = p.stderr.decode()
    assert p.returncode == 2 and expected in err and "Traceback" not in err, err
    assert "tooShrt9" not in err  # a token, even a bad one, is never printed


def test_a_token_with_bytes_that_are_not_utf8_is_refused_not_a_500():
    """aiohttp keeps non-UTF-8 header bytes as surrogates; comparing them must say 'wrong token'."""
    from stages.consume_auth import AccessPolicy, Guard

    g = Guard(AccessPolicy(token=TOKEN), lambda: 0)
    assert not g.authorized("\udcff\udcfe" + TOKEN) and not g.authorized("") and not g.authorized(None)
    assert g.authorized(TOKEN)
    assert g.check_http("/cameras", {"Authorization": "Bearer \udcff" + TOKEN}).status == 401



def test_a_malformed_request_target_is_a_400_not_a_traceback():
    from stages.consume_auth import AccessPolicy, Guard
    from stages.consume_http import HttpResponse

    g = Guard(AccessPolicy(token=TOKEN), lambda: 0)
    r = g.check_target("//[abc/cameras")  # urlsplit raises ValueError (an unclosed IPv6 host)
    assert isinstance(r, HttpResponse) and r.status == 400
    assert g.check_target("/results?limit=2") == ("/results", {"limit": "2"})


def test_debug_logging_does_not_print_the_token():
    """websockets logs each handshake header at DEBUG; the Authorization header and the bearer.
    subprotocol must show up redacted, not as the token."""
    import os

    env = {**os.environ, "HAZARDCTL_LOG_LEVEL": "DEBUG", "HAZARDCTL_CONSUME_TOKEN": TOKEN}
    with ConsumeProcess(env=env) as c:
        async def run() -> None:
            assert (await handshake(c.ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}))[0] is None
            assert (await handshake(c.ws_url, subprotocols=["hazardctl", bearer_protocol(TOKEN)]))[0] is None

        asyncio.run(run())
        time.sleep(0.3)
    err = "".join(c.stderr)
    assert "[redacted]" in err, err[-2000:]  # the DEBUG header lines were there
    assert TOKEN not in err and bearer_protocol(TOKEN) not in err


# --- DNS rebinding: Host names we answer to ------------------------------------------------------

def test_dns_rebinding_a_foreign_host_with_a_matching_origin_is_refused_on_both_ports(tmp_path):
    """A page on evil.example whose name was rebound to 127.0.0.1 is same-origin with itself: its
    requests carry `Host: evil.example:PORT` and `Origin: http://evil.example:PORT`, which match, so the
    Origin check alone let them in. Now the Host must be one we answer to: loopback names, the bound
    address, --allow-host. Refused with 421 on the HTTP API (both listeners, even /healthz and the page)
    and on the WebSocket handshake, with the token or without; allowed names still work."""
    token_file = tmp_path / "consume.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with ConsumeProcess("--http", "127.0.0.1:0", "--token-file", str(token_file),
                        "--allow-host", "ops.example.com") as c:
        for port in (c.ws_port, c.http_port):
            for name in ("evil.example", "localhost.evil.example", "127.0.0.1.nip.io"):
                foreign = {"Host": f"{name}:{port}", "Origin": f"http://{name}:{port}"}
                for path in ("/cameras", "/", "/healthz", "/metrics"):
                    status, _, body = get(port, path, token=TOKEN, **foreign)
                    assert status == 421, (port, name, path, status)
                    assert b"cam-" not in body and b"<html" not in body.lower()
            for name in ("localhost", "127.0.0.1", "[::1]", "ops.example.com", "OPS.example.com."):
                own = {"Host": f"{name}:{port}", "Origin": f"http://{name}:{port}"}
                assert get(port, "/cameras", token=TOKEN, **own)[0] == 200, (port, name)
            # an allowed Host but a foreign page's Origin: the HTTP API checks the Origin too now
            assert get(port, "/cameras", token=TOKEN, Host=f"127.0.0.1:{port}", Origin="https://evil.example")[0] == 403

        async def websockets_side() -> None:
            auth = {"subprotocols": ["hazardctl", bearer_protocol(TOKEN)]}
            for name in ("evil.example", "127.0.0.1.nip.io"):
                # the URL names the foreign host (so Host says it); the socket goes to 127.0.0.1, like a rebound name
                url = f"ws://{name}:{c.ws_port}/ws"
                status, _, first = await handshake(url, host="127.0.0.1", port=c.ws_port,
                                                   origin=f"http://{name}:{c.ws_port}", **auth)
                assert status == 421 and first is None, name
            status, _, first = await handshake(f"ws://localhost:{c.ws_port}/ws", host="127.0.0.1", port=c.ws_port,
                                               origin=f"http://localhost:{c.ws_port}", **auth)
            assert status is None and first["type"] == "snapshot"
            status, _, first = await handshake(f"ws://ops.example.com:{c.ws_port}/ws", host="127.0.0.1",
                                               port=c.ws_port, origin=f"http://ops.example.com:{c.ws_port}", **auth)
            assert status is None and first["type"] == "snapshot"

        asyncio.run(websockets_side())
        _, _, text = get(c.http_port, "/metrics", token=TOKEN)
        refused = {line.split('reason="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                   for line in text.decode().splitlines() if line.startswith("hazardctl_consume_refused_total{")}
        assert refused["host"] == 2 * 3 * 4 + 2 and refused["origin"] == 2


def test_host_names_a_wildcard_listener_answers_to():
    """Bound to 0.0.0.0, clients reach consume by any of the machine's addresses: IP literals pass
    (a rebinding page always sends its own name, never an address); names still need --allow-host."""
    from stages.consume_auth import AccessPolicy, Guard, host_name, parse_hosts

    g = Guard(AccessPolicy(allow_hosts=parse_hosts(["Ops.Example.com."])), lambda: 0)
    g.listen_hosts = {"0.0.0.0"}
    assert all(g.host_ok(h) for h in ("10.1.2.3:8765", "[fe80::1]:8765", "localhost", "ops.example.com:80", None))
    assert not any(g.host_ok(h) for h in ("evil.example:8765", "10.1.2.3.evil.example", "camhost:8765"))
    g.listen_hosts = {"10.1.2.3"}  # bound to one address: that one only
    assert g.host_ok("10.1.2.3:8765") and not g.host_ok("10.1.2.4:8765")
    assert host_name("[::1]:8765") == "::1" and host_name("Name.:80") == "name"
    from hazardctl.errors import ConfigError

    for bad in ("", "a b", "x/y", "https://ops.example.com", "ops.example.com:8080"):
        with pytest.raises(ConfigError, match="--allow-host"):
            parse_hosts([bad])
    assert parse_hosts(["[::1]", "10.0.0.5", "*"]) == {"::1", "10.0.0.5", "*"}


def test_bad_allow_host_is_a_one_line_error():
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for bad in ("https://ops.example.com", "ops.example.com:8080"):
        p = subprocess.run([*HAZARDCTL, "consume", "--ws", "127.0.0.1:0", "--exit-on-eof", "--allow-host", bad],
                           env=env, cwd=ROOT, input=b"", capture_output=True, timeout=30)
        err = p.stderr.decode()
        assert p.returncode == 2 and "--allow-host" in err and "Traceback" not in err, (bad, err)


def test_healthz_without_the_token_says_only_its_status(tmp_path):
    """/healthz is open (load balancers, systemd) but its counts are the token's: without it, only
    {"status": …}; with it, the whole report. Same on both listeners."""
    token_file = tmp_path / "consume.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with ConsumeProcess("--http", "127.0.0.1:0", "--token-file", str(token_file)) as c:
        c.send(risk_result("cam-1", "g1", 1, time.time(), level="high"))
        for port in (c.ws_port, c.http_port):
            status, _, body = get(port, "/healthz")
            assert status == 200 and json.loads(body) == {"status": "ok"}
            assert json.loads(get(port, "/healthz", token="wrong-" + TOKEN)[2]) == {"status": "ok"}
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and json.loads(get(port, "/healthz", token=TOKEN)[2])["cameras"] < 1:
                time.sleep(0.05)
            full = json.loads(get(port, "/healthz", token=TOKEN)[2])
            assert full["status"] == "ok" and full["cameras"] == 1 and "clients" in full and "uptime_s" in full
