"""consume's WebSocket fan-out: who listens to which cameras, and one encoded event to all of them.

Every event is encoded once (by the caller) and the same bytes go to every matching client.
A client that keeps up is written to directly (`websockets.broadcast`, no task switch per client);
a client whose socket buffer is full gets its own bounded backlog drained by its own writer task,
and when that overflows it is closed with 4008 "too slow" — it never holds the others back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed

log = logging.getLogger("hazardctl.consume")

CLOSE_TOO_SLOW = 4008
"""private-use close code (4000–4999): the client did not read fast enough and was dropped"""
CLOSE_REASON_TOO_SLOW = "too slow: send queue overflow"
MAX_SUBSCRIBED_CAMERAS = 10_000


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
        self.on_action: Callable[["Hub", Client, dict], bytes | None] | None = None
        """handles a client's `action` message (stages.consume_history.IncidentApi.on_ws_message)"""

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
            if kind == "action" and self.on_action is not None:  # an operator's ack/resolve/false positive
                return self.on_action(self, c, msg)
            raise ValueError(f"unknown message type {kind!r} (expected 'subscribe', 'ping' or 'action')")
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
