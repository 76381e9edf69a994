"""Who may use consume's API and WebSocket: the bearer token, the Origin check, the client limit.

One decision per request (`Guard`), taken before any data is touched, the same on both listeners.
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from prometheus_client import Counter
from websockets.asyncio.server import ServerConnection

from stages.consume_http import JSON, HttpResponse, single_values

log = logging.getLogger("hazardctl.consume")

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
                  "(unauthorized, origin, host, too_many_clients, bad_request)", ["stage", "reason"])


@dataclass(frozen=True)
class AccessPolicy:
    token: str | None = None
    """bearer token required by the API and the WebSocket (None: no authentication)"""
    allow_origins: frozenset[str] = frozenset()
    """browser origins allowed to open a WebSocket or call the API besides the server's own ("*": any)"""
    max_clients: int = 1000
    allow_hosts: frozenset[str] = frozenset()
    """Host names accepted besides loopback and the bound addresses (--allow-host; "*": any)"""


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
"""Host names every listener accepts; with the bound address(es) and --allow-host, the whole list"""
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})


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


def parse_hosts(values: Iterable[str]) -> frozenset[str]:
    """--allow-host values: "*" or a host name / IP address (no scheme, no port), compared lower-case."""
    from hazardctl.errors import ConfigError

    out = set()
    for v in values:
        name = v.strip().lower().rstrip(".")
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        if not name or "/" in name or " " in name or (":" in name and not _is_ip(name)):
            raise ConfigError(f"--allow-host {v!r}: expected a host name or address like ops.example.com "
                              "(no scheme, no port) or *")
        out.add(name)
    return frozenset(out)


def host_name(host: str) -> str:
    """The name part of a Host header ("Name:8765" → "name", "[::1]:8765" → "::1"), lower-case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


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
                         ("unauthorized", "origin", "host", "too_many_clients", "bad_request")}
        self.page_ports: set[int] = set()
        """ports that serve the page (the WebSocket port and --http), so their origins are our own"""
        self.listen_hosts: set[str] = set()
        """the addresses the listeners are bound to: names a client may use besides loopback"""

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

    def host_ok(self, host: str | None) -> bool:
        """DNS rebinding: a page on evil.example whose name later resolves to 127.0.0.1 talks to us
        same-origin, with `Host: evil.example`; only names we answer to pass. A wildcard-bound
        listener also accepts any IP address (a rebinding page always sends its own name)."""
        if host is None:
            return True  # HTTP/1.0 without a Host: no name that could have been rebound
        allowed = self.policy.allow_hosts
        name = host_name(host)
        if "*" in allowed or name in LOOPBACK_NAMES or name in allowed:
            return True
        listen = {host_name(h) for h in self.listen_hosts}
        return name in listen or (bool(listen & WILDCARD_ADDRESSES) and _is_ip(name))

    def check_host(self, headers: Any) -> HttpResponse | None:
        if self.host_ok(headers.get("Host")):
            return None
        return self._refuse("host", 421, "unknown Host refused (consume --allow-host NAME)")

    def check_http(self, path: str, headers: Any) -> HttpResponse | None:
        """Host, then Origin (a browser's cross-site fetch), then the token (except the open paths)."""
        refusal = self.check_host(headers)
        if refusal is not None:
            return refusal
        if not self.origin_ok(headers.get("Origin"), headers.get("Host")):
            return self._refuse("origin", 403, "request from a foreign Origin refused (consume --allow-origin)")
        if path.strip("/") in OPEN_PATHS or self.request_authorized(headers):
            return None
        return self._unauthorized()

    def request_authorized(self, headers: Any) -> bool:
        """Whether a plain HTTP request carries the token (or none is required)."""
        return self.authorized(_bearer_from_header(headers.get("Authorization")))

    def origin_ok(self, origin: str | None, host: str | None) -> bool:
        if origin is None:
            return True  # not a browser
        allowed = self.policy.allow_origins
        if "*" in allowed or origin.rstrip("/").lower() in allowed:
            return True
        try:
            netloc = urlsplit(origin).netloc.lower()
        except ValueError:  # e.g. "http://[x": malformed, so not ours
            return False
        host = (host or "").lower()
        if netloc and netloc == host:
            return True
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return any(netloc == f"{hostname}:{p}" for p in self.page_ports)

    def check_websocket(self, headers: Any) -> HttpResponse | None:
        refusal = self.check_host(headers)
        if refusal is not None:
            return refusal
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
