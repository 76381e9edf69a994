"""consume's read-only HTTP API as one function of (path, query), and the live page.

The same routing (`HttpApi`) is served on two listeners (stages.consume_listeners): on the WebSocket
port and, with `--http`, on its own address. Who may call it is decided before, by
stages.consume_auth.Guard.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import unquote

import orjson

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()



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
        self.incidents: Any = None
        """stages.consume_history.IncidentApi: the store's history routes and the actions (POST)"""

    async def respond(self, method: str, path: str, query: Mapping[str, str], *, authorized: bool = True,
                      body: bytes = b"", content_type: str | None = None) -> HttpResponse:
        """Any request: the history and action routes (stages.consume_history) when they are ours,
        else `handle` (GET/HEAD only)."""
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        if self.incidents is not None and self.incidents.wants(method, parts, query):
            return await self.incidents.handle(method, parts, dict(query), body, content_type)
        if method not in ("GET", "HEAD"):
            return HttpResponse(405, orjson.dumps({"error": f"{method} is not allowed here"}), JSON,
                                (("Allow", "GET, HEAD"),))
        return self.handle(path, query, authorized)

    def handle(self, path: str, query: Mapping[str, str], authorized: bool = True) -> HttpResponse:
        """`authorized`: the request carried the token (or none is required); without it the open
        paths say no more than they must (/healthz: only its status)."""
        board = self.state.board
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        if not parts:
            return HttpResponse(200, self.page, "text/html; charset=utf-8")
        head = parts[0]
        if head == "healthz" and len(parts) == 1:
            health = self.state.health()
            code = 200 if health["status"] == "ok" else 503
            return _json(code, health if authorized else {"status": health["status"]})
        if head == "auth" and len(parts) == 1:  # the page asks here whether its token is good
            return _json(200, {"authorized": True})
        if head == "metrics" and len(parts) == 1:
            body, ctype = self.metrics()
            return HttpResponse(200, body, ctype)
        if head == "cameras":
            if len(parts) == 1:
                cams = sorted(board.cameras.values(), key=lambda c: c.camera_id)
                return _json(200, {"cameras": [c.as_dict() for c in cams]})
            if len(parts) == 3 and parts[2] == "snapshot":  # detect's latest snapshot, the scene drawn on it
                snap = self.state.camera_watch.snapshot(parts[1])
                if snap is None:
                    return _json(404, {"error": f"no snapshot of camera {parts[1]!r} (detect --status-out with "
                                                 f"--snapshot-every, consume --camera-status)"})
                jpeg_b64, (width, height), ts = snap
                return HttpResponse(200, base64.b64decode(jpeg_b64), "image/jpeg",
                                    (("X-Snapshot-Ts", f"{ts:.3f}"), ("X-Snapshot-Size", f"{width}x{height}")))
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
                           "paths": ["/", "/healthz", "/metrics", "/cameras", "/cameras/{id}", "/cameras/{id}/snapshot",
                                     "/incidents?open=true", "/incidents/{id}", "/results?camera=ID&limit=N", "/ws",
                                     "/incidents?camera=&since=&until=&level=&state=&limit=&cursor= (store)",
                                     "/incidents/{id}/evidence/{n}", "/incidents.csv", "/incidents.jsonl",
                                     "POST /incidents/{id}/ack|resolve|false-positive"]})


def single_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in pairs:
        out.setdefault(k, v)
    return out
