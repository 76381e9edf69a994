"""consume's two listeners of the HTTP API: the WebSocket port (websockets' `process_request`, so
`hazardctl consume --ws :8765` is one port for the page, the API and the socket) and, with `--http`,
its own address served by aiohttp (a well-kept async server with keep-alive and HEAD for scrapers and
proxies). Both pass every request through the same Guard first.
"""

from __future__ import annotations

from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from stages.consume_auth import AccessPolicy, Guard
from stages.consume_http import HttpApi, HttpResponse


def websocket_port_http(api: HttpApi, guard: Guard | None = None) -> Callable[[ServerConnection, Request], Response | None]:
    """`process_request` for websockets: plain GETs on the WebSocket port get the HTTP API; WebSocket
    handshakes pass the guard (Host, Origin, token, client limit) or get its refusal as an HTTP answer."""
    guard = guard or Guard(AccessPolicy(), lambda: 0)

    def respond(connection: ServerConnection, r: HttpResponse) -> Response:
        reason = connection.respond(r.status, "").reason_phrase
        headers = Headers([("Content-Type", r.content_type), ("Content-Length", str(len(r.body))),
                           ("Cache-Control", "no-store"), ("Connection", "close"), *r.headers])
        return Response(r.status, reason, headers, r.body)

    async def process_request(connection: ServerConnection, request: Request) -> Response | None:
        target = guard.check_target(request.path)
        if isinstance(target, HttpResponse):
            return respond(connection, target)
        path, query = target
        if "websocket" in request.headers.get("Upgrade", "").lower():
            refusal = guard.check_websocket(request.headers)
            return None if refusal is None else respond(connection, refusal)
        r = (guard.check_http(path, request.headers)
             or await api.respond("GET", path, query, authorized=guard.request_authorized(request.headers)))
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
            r = guard.check_http(path, request.headers)
            if r is None:
                body = await request.read() if request.can_read_body else b""
                r = await api.respond(request.method, path, query, body=body,
                                      content_type=request.headers.get("Content-Type"),
                                      authorized=guard.request_authorized(request.headers))
        ctype, _, charset = r.content_type.partition("; charset=")
        return web.Response(status=r.status, body=r.body, content_type=ctype, charset=charset or None,
                            headers={"Cache-Control": "no-store", **dict(r.headers)})

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_get("/{tail:.*}", handle)
    app.router.add_post("/{tail:.*}", handle)  # operators' actions (stages.consume_history)
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
