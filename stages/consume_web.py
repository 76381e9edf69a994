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
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
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


def websocket_port_http(api: HttpApi) -> Callable[[ServerConnection, Request], Response | None]:
    """`process_request` for websockets: plain GETs on the WebSocket port get the HTTP API."""

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if "websocket" in request.headers.get("Upgrade", "").lower():
            return None
        url = urlsplit(request.path)
        r = api.handle(url.path, single_values((k, v[0]) for k, v in parse_qs(url.query).items()))
        reason = connection.respond(r.status, "").reason_phrase
        headers = Headers([("Content-Type", r.content_type), ("Content-Length", str(len(r.body))),
                           ("Cache-Control", "no-store"), ("Connection", "close")])
        return Response(r.status, reason, headers, r.body)

    return process_request


async def start_http(api: HttpApi, host: str, port: int):
    """Serve the API with aiohttp on its own address; returns (runner, bound port)."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        r = api.handle(request.path, single_values(request.query.items()))
        ctype, _, charset = r.content_type.partition("; charset=")
        return web.Response(status=r.status, body=r.body, content_type=ctype, charset=charset or None,
                            headers={"Cache-Control": "no-store"})

    app = web.Application()
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
