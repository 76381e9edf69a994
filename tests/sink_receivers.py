"""Real receivers for the sink tests: an HTTP(S) webhook server (aiohttp on its own thread, a free
port) that can go down, answer 500 or hang; a test CA and certificates (cryptography); and a
Mosquitto broker (Debian's package, scripts/install-mosquitto.sh) started with a temp config on a
free port, restartable on the same port with its persistence file.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from hazardctl.sinks.webhook import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# ---- certificates -------------------------------------------------------------------------------

@dataclass
class TestCA:
    __test__ = False

    """A CA, and a server certificate for 127.0.0.1 signed by it (or self-signed when `trusted` is False)."""

    dir: Path
    ca_file: Path = field(init=False)

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._x509, self._hashes, self._ser, self._ec, self._oid = x509, hashes, serialization, ec, NameOID
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hazardctl test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca_file = self.dir / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def server_cert(self, name: str, *, signed: bool = True) -> tuple[Path, Path]:
        """(cert, key) files for 127.0.0.1: signed by this CA, or self-signed (not trusted by anyone)."""
        x509, hashes, ser, ec = self._x509, self._hashes, self._ser, self._ec
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(self._oid.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.timezone.utc)
        b = (x509.CertificateBuilder().subject_name(subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False))
        cert = (b.issuer_name(self.cert.subject).sign(self.key, hashes.SHA256()) if signed
                else b.issuer_name(subject).sign(key, hashes.SHA256()))
        cert_file, key_file = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(ser.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
        return cert_file, key_file


# ---- the webhook receiver -----------------------------------------------------------------------

@dataclass
class Received:
    key: str
    body: bytes
    signature_ok: bool
    at: float

    @property
    def doc(self) -> dict:
        return orjson.loads(self.body)


class WebhookReceiver:
    """An HTTP(S) receiver on 127.0.0.1:`port`. `mode`: "ok", "500" or "hang"; `down()`/`up()` close and
    reopen the listening socket on the same port (connection refused in between)."""

    def __init__(self, secret: bytes, *, tls: tuple[Path, Path] | None = None, port: int | None = None):
        self.secret = secret
        self.port = port or free_port()
        self.tls = tls
        self.mode = "ok"
        self.received: list[Received] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner = None
        self._site = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.up()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hooks/hazard"

    def _call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)


    async def _handle(self, request):
        from aiohttp import web

        body = await request.read()
        with self._lock:
            self.requests += 1
            mode = self.mode
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "500":
            return web.Response(status=500, text="receiver broken")
        with self._lock:
            self.received.append(Received(request.headers.get(IDEMPOTENCY_HEADER, ""), body,
                                          verify(body, self.secret, request.headers.get(SIGNATURE_HEADER)),
                                          time.time()))
        return web.json_response({"ok": True})

    def up(self) -> None:
        from aiohttp import web

        ctx = None
        if self.tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(self.tls[0]), str(self.tls[1]))

        async def start():
            app = web.Application()
            app.router.add_post("/hooks/hazard", self._handle)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
            await self._runner.setup()
            self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=ctx, reuse_address=True)
            await self._site.start()

        self._call(start())

    def down(self) -> None:
        async def stop():  # the listener and every open connection: connection refused / reset from now on
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = self._site = None

        self._call(stop())

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        try:
            self.down()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)


def check_exactly_once_in_order(received: list[Received], expected_keys: set[str]) -> dict:
    """Every expected key arrived, each body of one key identical (a retry is the same event), every
    signature valid, and per incident the seqs arrive in order; returns counts for the report."""
    first: dict[str, Received] = {}
    for r in received:
        assert r.signature_ok, f"bad signature on {r.key}"
        if r.key in first:
            assert first[r.key].body == r.body, f"two different events under one key {r.key}"
        else:
            first[r.key] = r
    assert set(first) == expected_keys, (f"missing {sorted(expected_keys - set(first))[:10]}, "
                                         f"unexpected {sorted(set(first) - expected_keys)[:10]}")
    per_incident: dict[str, list[int]] = {}
    for r in received:
        if first[r.key] is r:
            inc, seq = r.key.rsplit(":", 1)
            per_incident.setdefault(inc, []).append(int(seq))
    for inc, seqs in per_incident.items():
        assert seqs == list(range(1, len(seqs) + 1)), f"{inc}: out of order or a gap: {seqs}"
    return {"keys": len(first), "duplicates": len(received) - len(first), "incidents": len(per_incident)}


# ---- Mosquitto ----------------------------------------------------------------------------------

def mosquitto_bin() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


class Mosquitto:
    """Debian's mosquitto as the test's own process: loopback, a free port, persistence in a temp dir."""

    def __init__(self, root: Path, port: int | None = None):
        self.bin = mosquitto_bin()
        if self.bin is None:
            msg = "mosquitto not installed (bash scripts/install-mosquitto.sh)"
            if os.environ.get("HAZARDCTL_NO_SKIP") == "1":
                pytest.fail(msg)
            pytest.skip(msg)
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.root / "mosquitto.conf"
        # as root, mosquitto would drop to its own user, which cannot reach a 0700 temp dir: its persistence
        # (the subscriber's session across the restart) and its log would silently not be written
        run_as = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(f"{run_as}listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {self.root}/\nlog_dest file {self.root}/mosquitto.log\n"
                             "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Mosquitto":
        self.proc = subprocess.Popen([self.bin, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {self.proc.stderr.read().decode()[-500:]} {self.log()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, 10, "mosquitto to listen")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        p = self.root / "mosquitto.log"
        return p.read_text(errors="replace")[-2000:] if p.exists() else ""


class MqttSubscriber:
    """A paho subscriber with a persistent session (clean_session False, QoS 1): a broker restart with
    persistence keeps its subscription and the messages queued for it."""

    def __init__(self, port: int, topic: str, client_id: str):
        import paho.mqtt.client as paho

        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        c.reconnect_delay_set(0.2, 1)

        self.connects: list[tuple[float, bool]] = []
        """(time, session present) of every connect: a restarted broker that lost its persistence shows False"""

        def on_connect(client, _u, flags, rc, _p):
            if not rc.is_failure:
                self.connects.append((time.time(), bool(flags.session_present)))
                client.subscribe(topic, qos=1)

        c.on_connect = on_connect
        c.on_subscribe = lambda *_a: self.subscribed.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", port, keepalive=5)
        c.loop_start()
        self.client = c
        assert self.subscribed.wait(10), "subscriber did not subscribe"

    def _on_message(self, _c, _u, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
