"""consume's serving side: WebSocket fan-out, the HTTP API and the live page.

Fan-out: every event is encoded once (by the caller) and the same bytes go to every matching client.
A client that keeps up is written to directly (`websockets.broadcast`, no task switch per client);
a client whose socket buffer is full gets its own bounded backlog drained by its own writer task,
and when that overflows it is closed with 4008 "too slow" — it never holds the others back.

HTTP: one small routing function (`HttpApi`) served two ways: on the WebSocket port through
websockets' `process_request` (so `hazardctl consume --ws :8765` is one port for the page, the API
and the socket), and optionally on its own address with aiohttp (`--http`), a well-kept async
server with keep-alive and HEAD for scrapers and proxies.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

import orjson
from prometheus_client import Counter
from websockets.asyncio.server import ServerConnection, broadcast
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

log = logging.getLogger("hazardctl.consume")

CLOSE_TOO_SLOW = 4008
"""private-use close code (4000–4999): the client did not read fast enough and was dropped"""
CLOSE_REASON_TOO_SLOW = "too slow: send queue overflow"
MAX_SUBSCRIBED_CAMERAS = 10_000
JSON = "application/json"


def parse_cameras(value: Any) -> frozenset[str] | None:
    """A subscription: None (all cameras) or a set of camera ids. Accepts "*", a list or "a,b"."""
    if value is None or value == "*" or value == ["*"]:
        return None
    if isinstance(value, str):
        value = [v for v in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError('cameras must be "*", a list of camera ids, or "id1,id2"')
    ids = frozenset(v.strip() for v in value if v.strip())
    if not ids:
        raise ValueError("cameras is empty (use \"*\" for all cameras)")
    if len(ids) > MAX_SUBSCRIBED_CAMERAS or any(len(v) > 128 for v in ids):
        raise ValueError(f"at most {MAX_SUBSCRIBED_CAMERAS} camera ids of at most 128 characters")
    return ids


def subscription_json(cameras: frozenset[str] | None) -> str | list[str]:
    return "*" if cameras is None else sorted(cameras)


class Client:
    """One WebSocket client: what it subscribed to and the messages its socket could not take yet."""

    __slots__ = ("backlog", "cameras", "dropped", "transport", "wake", "writer", "ws")

    def __init__(self, ws: ServerConnection, cameras: frozenset[str] | None):
        self.ws = ws
        self.transport = ws.transport
        self.cameras = cameras
        self.backlog: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.writer: asyncio.Task | None = None
        self.dropped = False

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()


class Hub:
    """Who listens to which cameras, and the fan-out of encoded events to them."""

    def __init__(self, snapshot: Callable[[frozenset[str] | None], bytes], *, max_queue: int = 256,
                 high_water: int = 64 * 1024, drop_close_timeout: float = 5.0,
                 on_drop: Callable[[], None] | None = None):
        self.snapshot = snapshot
        self.max_queue = max_queue
        self.high_water = high_water
        self.drop_close_timeout = drop_close_timeout
        self.on_drop = on_drop
        self.clients: set[Client] = set()
        self._all: set[Client] = set()
        self._by_camera: dict[str, set[Client]] = {}
        self.dropped = 0
        self._overflowed: list[Client] = []
        self._closing: set[asyncio.Task] = set()

    # ---- registry ------------------------------------------------------------------------------

    def _index(self, c: Client) -> None:
        if c.cameras is None:
            self._all.add(c)
        else:
            for cam in c.cameras:
                self._by_camera.setdefault(cam, set()).add(c)

    def _unindex(self, c: Client) -> None:
        self._all.discard(c)
        for cam in c.cameras or ():
            subs = self._by_camera.get(cam)
            if subs is not None:
                subs.discard(c)
                if not subs:
                    del self._by_camera[cam]

    def add(self, c: Client) -> None:
        self.clients.add(c)
        self._index(c)

    def remove(self, c: Client) -> None:
        if c in self.clients:
            self.clients.discard(c)
            self._unindex(c)

    def subscribe(self, c: Client, cameras: frozenset[str] | None) -> None:
        """Change what `c` receives and send it a fresh snapshot of exactly that, in one step."""
        self._unindex(c)
        c.cameras = cameras
        self._index(c)
        self.send_to(c, self.snapshot(cameras))

    # ---- fan-out -------------------------------------------------------------------------------

    def publish(self, camera_id: str, data: bytes) -> int:
        """Send one encoded event to every client of `camera_id`; returns how many were targeted."""
        fast: list[ServerConnection] = []
        keep_up, high = fast.append, self.high_water
        n = 0
        for group in (self._all, self._by_camera.get(camera_id, ())):
            n += len(group)
            for c in group:  # the hot loop: _route inlined for the common case
                if not c.backlog and c.transport.get_write_buffer_size() <= high:
                    keep_up(c.ws)
                else:
                    self._route(c, data, fast)
        if fast:
            broadcast(fast, data, text=True)
        if self._overflowed:
            self._drop_overflowed()
        return n

    def send_to(self, c: Client, data: bytes) -> None:
        fast: list[ServerConnection] = []
        self._route(c, data, fast)
        if fast:
            broadcast(fast, data, text=True)
        if self._overflowed:
            self._drop_overflowed()

    def _route(self, c: Client, data: bytes, fast: list[ServerConnection]) -> None:
        if not c.backlog and c.buffered() <= self.high_water:
            fast.append(c.ws)  # its socket keeps up: written directly, in order
        elif len(c.backlog) < self.max_queue:
            c.backlog.append(data)  # behind its own backlog: its writer task sends it
            c.wake.set()
        else:
            self._overflowed.append(c)

    def _drop_overflowed(self) -> None:
        """Close the clients that overflowed (after the loop over the client sets, not inside it)."""
        while self._overflowed:
            self.drop(self._overflowed.pop())

    def drop(self, c: Client, code: int = CLOSE_TOO_SLOW, reason: str = CLOSE_REASON_TOO_SLOW) -> None:
        if c.dropped:
            return
        c.dropped = True
        self.remove(c)
        c.backlog.clear()
        self.dropped += 1
        if self.on_drop:
            self.on_drop()
        log.warning("dropped WebSocket client %s: %s", _peer(c.ws), reason)
        task = asyncio.get_running_loop().create_task(self._close(c, code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, c: Client, code: int, reason: str) -> None:
        if c.writer is not None:
            c.writer.cancel()
        try:
            await asyncio.wait_for(c.ws.close(code, reason), self.drop_close_timeout)
        except TimeoutError:
            if c.ws.transport is not None:
                c.ws.transport.abort()
        except ConnectionClosed:
            pass

    async def _write(self, c: Client) -> None:
        """Drain the backlog of a client whose socket was full, waiting for it (and only it)."""
        try:
            while True:
                while not c.backlog:
                    c.wake.clear()
                    await c.wake.wait()
                await c.ws.send(c.backlog.popleft(), text=True)  # awaits this client's socket only
        except ConnectionClosed:
            pass

    # ---- connections ---------------------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        try:
            query = parse_qs(urlsplit(ws.request.path).query)
            cameras = parse_cameras(query["cameras"][0]) if "cameras" in query else None
        except ValueError as e:
            await ws.close(1008, str(e)[:120])
            return
        c = Client(ws, cameras)
        # registered and sent the snapshot in one synchronous step: no live event is missed or doubled
        self.add(c)
        self.send_to(c, self.snapshot(cameras))
        c.writer = asyncio.get_running_loop().create_task(self._write(c))
        try:
            async for message in ws:
                reply = self._on_message(c, message)
                if reply is not None:
                    self.send_to(c, reply)
        except ConnectionClosed:
            pass
        finally:
            self.remove(c)
            c.writer.cancel()

    def _on_message(self, c: Client, message: str | bytes) -> bytes | None:
        try:
            msg = orjson.loads(message)
            if not isinstance(msg, dict):
                raise ValueError("a message must be a JSON object")
            kind = msg.get("type")
            if kind == "subscribe":
                self.subscribe(c, parse_cameras(msg.get("cameras")))
                return None
            if kind == "ping":
                return orjson.dumps({"type": "pong", "id": msg.get("id")})
            raise ValueError(f"unknown message type {kind!r} (expected 'subscribe' or 'ping')")
        except (ValueError, orjson.JSONDecodeError) as e:
            return orjson.dumps({"type": "error", "error": str(e)[:200]})

    async def close(self) -> None:
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _peer(ws: ServerConnection) -> str:
    try:
        host, port = ws.remote_address[:2]
        return f"{host}:{port}"
    except Exception:
        return "?"


# ---- HTTP ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


# ---- access: bearer token, Origin, limits -------------------------------------------------------

SUBPROTOCOL = "hazardctl"
"""the WebSocket subprotocol the server selects; a browser offers the token beside it as
`bearer.<base64url(token)>` (browsers cannot set an Authorization header on a WebSocket), and the
server never echoes that one back"""
BEARER_PROTOCOL_PREFIX = "bearer."
OPEN_PATHS = frozenset({"", "healthz"})
"""served without the token: the live page (static, no data: it asks for the token) and /healthz"""
MAX_TARGET = 4096
"""longest request target (path + query) accepted; longer → 414"""
MAX_QUERY_FIELDS = 32
REFUSED = Counter("hazardctl_consume_refused_total", "HTTP requests and WebSocket handshakes refused, by reason "
                  "(unauthorized, origin, too_many_clients, bad_request)", ["stage", "reason"])


@dataclass(frozen=True)
class AccessPolicy:
    token: str | None = None
    """bearer token required by the API and the WebSocket (None: no authentication)"""
    allow_origins: frozenset[str] = frozenset()
    """browser origins allowed to open a WebSocket besides the server's own ("*": any)"""
    max_clients: int = 1000


TOKEN_ENV = "HAZARDCTL_CONSUME_TOKEN"
MIN_TOKEN_CHARS = 16


def load_token(path: str | None) -> str | None:
    """The bearer token from `--token-file` (first), else $HAZARDCTL_CONSUME_TOKEN; None when neither."""
    import os
    from pathlib import Path

    from hazardctl.errors import ConfigError

    if path:
        where = f"--token-file {path}"
        try:
            token = Path(path).read_text("utf-8").strip()
            if Path(path).stat().st_mode & 0o077:
                log.warning("%s is readable by other users: chmod 600 it", where)
        except FileNotFoundError:
            raise ConfigError(f"{where}: file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{where}: cannot read ({getattr(e, 'strerror', None) or type(e).__name__})") from None
    else:
        where = TOKEN_ENV
        token = os.environ.get(TOKEN_ENV)
        if token is None:
            return None
        token = token.strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{where}: the token must have at least {MIN_TOKEN_CHARS} characters "
                          "(make one with `openssl rand -hex 32`)")
    if any(c.isspace() or not c.isprintable() or not c.isascii() for c in token):
        # ASCII: HTTP headers are bytes; the two servers decode non-ASCII ones differently (aiohttp
        # UTF-8, websockets Latin-1), so such a token would work on one port and not the other
        raise ConfigError(f"{where}: the token must be one line of printable ASCII characters without spaces")
    return token


def parse_origins(values: Iterable[str]) -> frozenset[str]:
    """--allow-origin values: "*" or scheme://host[:port], compared lower-case without a trailing slash."""
    from hazardctl.errors import ConfigError

    out = set()
    for v in values:
        v = v.strip().rstrip("/").lower()
        if v != "*":
            u = urlsplit(v)
            if u.scheme not in ("http", "https") or not u.netloc or u.path or u.query:
                raise ConfigError(f"--allow-origin {v!r}: expected an origin like https://ops.example.com[:port] or *")
        out.add(v)
    return frozenset(out)


def select_subprotocol(_connection: ServerConnection, offered: list[str]) -> str | None:
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


class _RedactCredentials(logging.Filter):
    """websockets logs every handshake header at DEBUG ("< Authorization: Bearer …"): with
    HAZARDCTL_LOG_LEVEL=DEBUG that put the token in the journal. The values of the two headers that
    carry it are replaced before any handler sees them."""

    HEADERS = frozenset({"authorization", "sec-websocket-protocol"})

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and str(args[0]).lower() in self.HEADERS:
            record.args = (args[0], "[redacted]")
        return True


logging.getLogger("websockets.server").addFilter(_RedactCredentials())


def _bearer_from_protocols(values: Iterable[str]) -> str | None:
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if item.startswith(BEARER_PROTOCOL_PREFIX):
                raw = item[len(BEARER_PROTOCOL_PREFIX):]
                try:
                    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")
                except (ValueError, UnicodeDecodeError):
                    return ""
    return None


def _bearer_from_header(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


class Guard:
    """Who may use the API and the WebSocket: one decision per request, before any data is touched.

    The token is compared in constant time (hmac.compare_digest). A WebSocket handshake whose
    `Origin` is neither the server's own (the Host it was asked for, or the --http address serving the
    page) nor allowed is refused: a page on another site must not use the browser of an operator to
    read the stream (cross-site WebSocket hijacking). Clients without an Origin (not browsers) pass
    that check; the token is what stops them."""

    def __init__(self, policy: AccessPolicy, clients: Callable[[], int], stage: str = "consume"):
        self.policy = policy
        self._token = policy.token.encode("utf-8") if policy.token else None
        self._clients = clients
        self._refused = {r: REFUSED.labels(stage, r) for r in
                         ("unauthorized", "origin", "too_many_clients", "bad_request")}
        self.page_ports: set[int] = set()
        """ports that serve the page (the WebSocket port and --http), so their origins are our own"""

    @property
    def required(self) -> bool:
        return self._token is not None

    def authorized(self, presented: str | None) -> bool:
        if self._token is None:
            return True
        if presented is None:
            return False
        # surrogateescape: a header with non-UTF-8 bytes (aiohttp keeps them as surrogates) is a wrong
        # token, not a UnicodeEncodeError and a 500
        return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), self._token)

    def _refuse(self, reason: str, status: int, message: str, *headers: tuple[str, str]) -> HttpResponse:
        self._refused[reason].inc()
        return HttpResponse(status, orjson.dumps({"error": message}), JSON, headers)

    def _unauthorized(self) -> HttpResponse:
        return self._refuse("unauthorized", 401, "a bearer token is required (Authorization: Bearer TOKEN)",
                            ("WWW-Authenticate", 'Bearer realm="hazardctl"'))

    def check_target(self, target: str) -> tuple[str, dict[str, str]] | HttpResponse:
        """The path and the query of a request target, or the refusal of one too large."""
        if len(target) > MAX_TARGET:
            return self._refuse("bad_request", 414, f"request target longer than {MAX_TARGET} characters")
        try:
            url = urlsplit(target)  # ValueError for e.g. "//[x" (an unclosed IPv6 host): a 400, not a traceback
        except ValueError:
            return self._refuse("bad_request", 400, "malformed request target")
        try:
            query = single_values(parse_qsl(url.query, max_num_fields=MAX_QUERY_FIELDS))
        except ValueError:
            return self._refuse("bad_request", 400, f"more than {MAX_QUERY_FIELDS} query parameters")
        return url.path, query

    def check_http(self, path: str, headers: Any) -> HttpResponse | None:
        if path.strip("/") in OPEN_PATHS or self.authorized(_bearer_from_header(headers.get("Authorization"))):
            return None
        return self._unauthorized()

    def origin_ok(self, origin: str | None, host: str | None) -> bool:
        if origin is None:
            return True  # not a browser
        allowed = self.policy.allow_origins
        if "*" in allowed or origin.rstrip("/").lower() in allowed:
            return True
        netloc = urlsplit(origin).netloc.lower()
        host = (host or "").lower()
        if netloc and netloc == host:
            return True
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return any(netloc == f"{hostname}:{p}" for p in self.page_ports)

    def check_websocket(self, headers: Any) -> HttpResponse | None:
        if not self.origin_ok(headers.get("Origin"), headers.get("Host")):
            return self._refuse("origin", 403, "WebSocket from a foreign Origin refused (consume --allow-origin)")
        presented = _bearer_from_header(headers.get("Authorization"))
        if presented is None:
            presented = _bearer_from_protocols(headers.get_all("Sec-WebSocket-Protocol"))
        if not self.authorized(presented):
            return self._unauthorized()
        if self._clients() >= self.policy.max_clients:
            return self._refuse("too_many_clients", 503, f"at most {self.policy.max_clients} WebSocket clients")
        return None


def _json(status: int, obj: Any) -> HttpResponse:
    return HttpResponse(status, orjson.dumps(obj))


def _flag(query: Mapping[str, str], name: str, default: bool) -> bool:
    v = query.get(name)
    return default if v is None else v.lower() in ("1", "true", "yes", "on")


def _limit(query: Mapping[str, str], default: int, most: int) -> int:
    try:
        return max(1, min(most, int(query.get("limit", default))))
    except ValueError:
        return default


def load_page() -> bytes:
    return resources.files("stages").joinpath("static/consume.html").read_bytes()


class HttpApi:
    """The read-only HTTP API of consume, as one function of (path, query)."""

    def __init__(self, state: Any, page: bytes, metrics: Callable[[], tuple[bytes, str]]):
        self.state = state  # .board, .recent, .health() — the running ConsumeService
        self.page = page
        self.metrics = metrics

    def handle(self, path: str, query: Mapping[str, str]) -> HttpResponse:
        board = self.state.board
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        if not parts:
            return HttpResponse(200, self.page, "text/html; charset=utf-8")
        head = parts[0]
        if head == "healthz" and len(parts) == 1:
            health = self.state.health()
            return _json(200 if health["status"] == "ok" else 503, health)
        if head == "auth" and len(parts) == 1:  # the page asks here whether its token is good
            return _json(200, {"authorized": True})
        if head == "metrics" and len(parts) == 1:
            body, ctype = self.metrics()
            return HttpResponse(200, body, ctype)
        if head == "cameras":
            if len(parts) == 1:
                cams = sorted(board.cameras.values(), key=lambda c: c.camera_id)
                return _json(200, {"cameras": [c.as_dict() for c in cams]})
            if len(parts) == 2:
                cam = board.cameras.get(parts[1])
                if cam is None:
                    return _json(404, {"error": f"unknown camera {parts[1]!r}"})
                crops = _flag(query, "crops", False)
                return _json(200, {**cam.as_dict(),
                                   "incidents": [i.as_dict(crops) for i in board.incidents(True, cam.camera_id)],
                                   "recent_results": self.state.recent.latest(cam.camera_id, _limit(query, 50, 1000))})
        if head == "incidents":
            crops = _flag(query, "crops", True)
            if len(parts) == 1:
                items = board.incidents(_flag(query, "open", False), query.get("camera"))
                return _json(200, {"incidents": [i.as_dict(crops) for i in items[: _limit(query, 500, 5000)]]})
            if len(parts) == 2:
                inc = board.find_incident(parts[1])
                if inc is None:
                    return _json(404, {"error": f"unknown incident {parts[1]!r}"})
                return _json(200, inc.as_dict(crops))
        if head == "results" and len(parts) == 1:
            return _json(200, {"results": self.state.recent.latest(query.get("camera"), _limit(query, 100, 10_000))})
        return _json(404, {"error": f"no such path {path!r}",
                           "paths": ["/", "/healthz", "/metrics", "/cameras", "/cameras/{id}",
                                     "/incidents?open=true", "/incidents/{id}", "/results?camera=ID&limit=N", "/ws"]})


def single_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in pairs:
        out.setdefault(k, v)
    return out


def websocket_port_http(api: HttpApi, guard: Guard | None = None) -> Callable[[ServerConnection, Request], Response | None]:
    """`process_request` for websockets: plain GETs on the WebSocket port get the HTTP API; WebSocket
    handshakes pass the guard (Origin, token, client limit) or get its refusal as an HTTP answer."""
    guard = guard or Guard(AccessPolicy(), lambda: 0)

    def respond(connection: ServerConnection, r: HttpResponse) -> Response:
        reason = connection.respond(r.status, "").reason_phrase
        headers = Headers([("Content-Type", r.content_type), ("Content-Length", str(len(r.body))),
                           ("Cache-Control", "no-store"), ("Connection", "close"), *r.headers])
        return Response(r.status, reason, headers, r.body)

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        target = guard.check_target(request.path)
        if isinstance(target, HttpResponse):
            return respond(connection, target)
        path, query = target
        if "websocket" in request.headers.get("Upgrade", "").lower():
            refusal = guard.check_websocket(request.headers)
            return None if refusal is None else respond(connection, refusal)
        r = guard.check_http(path, request.headers) or api.handle(path, query)
        return respond(connection, r)

    return process_request


async def start_http(api: HttpApi, host: str, port: int, guard: Guard | None = None):
    """Serve the API with aiohttp on its own address; returns (runner, bound port)."""
    from aiohttp import web

    guard = guard or Guard(AccessPolicy(), lambda: 0)

    async def handle(request: web.Request) -> web.Response:
        target = guard.check_target(request.raw_path)
        if isinstance(target, HttpResponse):
            r = target
        else:
            path, query = target
            r = guard.check_http(path, request.headers) or api.handle(path, query)
        ctype, _, charset = r.content_type.partition("; charset=")
        return web.Response(status=r.status, body=r.body, content_type=ctype, charset=charset or None,
                            headers={"Cache-Control": "no-store", **dict(r.headers)})

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        from hazardctl.errors import ConfigError

        raise ConfigError(f"--http {host}:{port}: cannot listen ({e.strerror})") from None
    return runner, runner.addresses[0][1]
