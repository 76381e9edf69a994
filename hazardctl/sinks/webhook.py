"""Webhook sink: one HTTPS POST per event, signed, with an idempotency key.

The receiver checks `X-Hazardctl-Signature: sha256=<hex>` = HMAC-SHA256(secret, raw body) and drops
a repeated `Idempotency-Key` (`incident_id:seq`): at-least-once delivery means a retry after a lost
answer arrives twice. A 2xx answer is delivery; 408, 429, 5xx, a timeout, a refused connection or
a certificate that does not verify are retried; any other 4xx means the receiver will never accept
this event: it is a dead letter at once. Certificates are always verified (system CAs, plus
`ca_file`); the secret never appears in a log line, an error or a metric.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ssl

import aiohttp

from hazardctl.sinks import SinkError, SinkSpec
from hazardctl.sinks.outbox import Pending

SIGNATURE_HEADER = "X-Hazardctl-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRYABLE_4XX = {408, 425, 429}


def sign(body: bytes, secret: bytes) -> str:
    """The signature header's value: `sha256=` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: bytes, header: str | None) -> bool:
    """For receivers (and tests): constant-time check of a signature header."""
    return bool(header) and hmac.compare_digest(sign(body, secret), header)


class WebhookSink:
    def __init__(self, spec: SinkSpec, *, secret: bytes | None, timeout_s: float = 5.0, ca_file: str | None = None):
        self.name = spec.name
        self.url = spec.target
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        ctx = ssl.create_default_context()
        if self._ca_file:
            ctx.load_verify_locations(self._ca_file)
        self._session = aiohttp.ClientSession(timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=ctx, limit=32),
                                              headers={"User-Agent": "hazardctl-sink"})

    async def deliver(self, entry: Pending) -> None:
        assert self._session is not None, "start() first"
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: entry.key,
                   "X-Hazardctl-Event-Seq": str(entry.seq)}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(entry.payload, self._secret)
        try:
            async with self._session.post(self.url, data=entry.payload, headers=headers, allow_redirects=False) as r:
                await r.read()
                if 200 <= r.status < 300:
                    return
                permanent = 400 <= r.status < 500 and r.status not in RETRYABLE_4XX
                raise SinkError(f"HTTP {r.status}", permanent=permanent)
        except SinkError:
            raise
        except aiohttp.ClientConnectorCertificateError as e:
            raise SinkError(f"certificate not trusted ({_short(e.certificate_error)})") from None
        except aiohttp.ClientSSLError as e:
            raise SinkError(f"TLS failed ({_short(e)})") from None
        except aiohttp.ClientConnectorError as e:
            raise SinkError(f"cannot connect ({e.strerror or type(e).__name__})") from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise SinkError(f"no answer within {self._timeout.total:g}s") from None
        except aiohttp.ClientError as e:
            raise SinkError(f"{type(e).__name__}: {_short(e)}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _short(e: object) -> str:
    s = str(e)
    return s if len(s) <= 160 else s[:157] + "..."
