"""The LLM simulator's HTTP app: auth, validation, per-key limits and faults, answers, stats.

One `Sim` per server, run on one event loop (no locks). Order of checks for a chat completion:
key → `unauthorized` fault → body size (413) → request shape (400) → 429 storm or rate limits →
5xx / hang / spike / malformed faults → latency → answer. Every step is counted per key.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from typing import Any, Callable

import orjson
from aiohttp import web

from hazardctl.errors import ConfigError
from tools.llm_sim.answers import Latency, answer_content, decide, make_fault, request_digest
from tools.llm_sim.config import SimConfig, SimKey, UnknownKey
from tools.llm_sim.limits import KeyLimit, RateWindow, retry_after_headers

log = logging.getLogger("hazardctl.llm_sim")

LOOPBACK = ("127.0.0.1", "::1", "localhost")

# ----------------------------------------------------------------------------------------- stats

COUNTERS = (
    "requests", "ok", "rate_limited_429", "unauthorized_401", "server_errors_5xx", "timeouts", "malformed",
    "bad_requests_400", "too_large_413", "latency_spikes", "requests_after_first_401",
)


class KeyStats:
    """What one key saw; `requests_after_first_401` shows whether a client stopped using a revoked key."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.window = RateWindow(1.0)
        self.first_request_ts: float | None = None
        self.last_request_ts: float | None = None
        self.seen_401 = False
        self.max_in_flight = self.in_flight

    def arrive(self, mono: float, wall: float) -> None:
        self.counts["requests"] += 1
        if self.seen_401:
            self.counts["requests_after_first_401"] += 1
        self.window.add(mono)
        self.first_request_ts = self.first_request_ts or wall
        self.last_request_ts = wall

    def count(self, counter: str) -> None:
        self.counts[counter] += 1
        if counter == "unauthorized_401":
            self.seen_401 = True

    def as_dict(self) -> dict[str, Any]:
        return {**self.counts, "max_in_any_1s_window": self.window.max_seen, "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight, "first_request_ts": self.first_request_ts,
                "last_request_ts": self.last_request_ts}


# ------------------------------------------------------------------------------------------ HTTP


class BadRequest(Exception):
    pass


def parse_chat(body: Any) -> tuple[list[str], str]:
    """(image URLs, prompt text) of a chat completion request; BadRequest if it is not one we serve."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty list")
    if body.get("stream"):
        raise BadRequest("streaming is not supported by the simulator")
    images: list[str] = []
    texts: list[str] = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            texts.append(content)
            continue
        if not isinstance(content, list):
            raise BadRequest("each message needs a 'content' string or list of parts")
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(str(part.get("text", "")))
            elif kind == "image_url":
                ref = part.get("image_url")
                url = ref.get("url") if isinstance(ref, dict) else ref
                if not isinstance(url, str) or not url:
                    raise BadRequest("an image_url part needs a non-empty 'url'")
                images.append(url)
            else:
                raise BadRequest(f"unsupported content part type {kind!r}")
    if not images:
        raise BadRequest("no image in 'messages': send the crop as an image_url part (data URL)")
    return images, "\n".join(texts)


def _error(status: int, message: str, type_: str, code: str | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    """An OpenAI-style error body."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


class KeyState:
    def __init__(self, spec: SimKey, now: float, tolerance_s: float):
        self.spec = spec
        self.limit = KeyLimit(spec.qps, spec.rpm, now, tolerance_s)
        self.fault = spec.fault.model_copy() if spec.fault else None
        self.stats = KeyStats()


class Sim:
    """The simulator's state and handlers; single-threaded (one event loop), so no locks."""

    def __init__(self, cfg: SimConfig, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.cfg = cfg
        self.clock, self.wall = clock, wall
        self.latency = Latency.parse(cfg.latency)
        self.rng = random.Random(cfg.seed)
        now = clock()
        self.keys = {k.name: KeyState(k, now, cfg.tolerance_s) for k in cfg.keys}
        self.by_secret = {k.api_key: self.keys[k.name] for k in cfg.keys}
        self.unknown = KeyStats()
        self.all = RateWindow(1.0)

    # --- control (called on the loop's thread)
    def set_fault(self, name: str, fault: str | None, **params: Any) -> dict[str, Any]:
        """Switch a key's fault (`*`: every key); None clears it. ConfigError for a bad name or fault."""
        if name != "*" and name not in self.keys:
            raise UnknownKey(f"no simulated key named {name!r}")
        targets = list(self.keys.values()) if name == "*" else [self.keys[name]]
        spec = make_fault({"kind": fault, **params}, where=f"fault for {name}") if fault else None
        for k in targets:
            k.fault = spec.model_copy() if spec else None
            log.info("key %s: fault %s", k.spec.name, spec.model_dump(exclude_none=True) if spec else None)
        return {"key": name, "fault": spec.model_dump() if spec else None}

    def stats(self) -> dict[str, Any]:
        keys = {name: k.stats.as_dict() for name, k in self.keys.items()}
        every = [k.stats for k in self.keys.values()] + [self.unknown]
        totals: dict[str, Any] = {c: sum(s.counts[c] for s in every) for c in COUNTERS}
        firsts = [s.first_request_ts for s in every if s.first_request_ts]
        lasts = [s.last_request_ts for s in every if s.last_request_ts]
        totals.update(max_in_any_1s_window=self.all.max_seen, in_flight=sum(s.in_flight for s in every),
                      unknown_key_requests=self.unknown.counts["requests"],
                      first_request_ts=min(firsts, default=None), last_request_ts=max(lasts, default=None))
        return {"keys": keys, "totals": totals,
                "faults": {n: k.fault.model_dump(exclude_none=True) for n, k in self.keys.items() if k.fault}}

    def reset_stats(self) -> None:
        for k in self.keys.values():
            k.stats.reset()
        self.unknown.reset()
        self.all = RateWindow(1.0)

    # --- the app
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_body_bytes)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/stats", self.get_stats)
        app.router.add_post("/faults", self.faults)
        app.router.add_post("/reset-stats", self.reset)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def healthz(self, _request: web.Request) -> web.Response:
        return _json({"status": "ok", "keys": len(self.keys)})

    async def get_stats(self, _request: web.Request) -> web.Response:
        return _json(self.stats())

    async def models(self, _request: web.Request) -> web.Response:
        return _json({"object": "list", "data": [{"id": self.cfg.model, "object": "model", "owned_by": "llm-sim"}]})

    async def faults(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            params = {k: v for k, v in body.items() if k not in ("key", "fault")}
            return _json(self.set_fault(str(body["key"]), body.get("fault"), **params))
        except (orjson.JSONDecodeError, AttributeError, KeyError):
            return _error(400, 'expected {"key": NAME, "fault": KIND|null, ...params}', "invalid_request_error")
        except UnknownKey as e:
            return _error(404, str(e), "invalid_request_error")
        except ConfigError as e:
            return _error(400, str(e), "invalid_request_error")

    async def reset(self, _request: web.Request) -> web.Response:
        self.reset_stats()
        return _json({"reset": True})

    async def chat(self, request: web.Request) -> web.Response:
        mono = self.clock()
        self.all.add(mono)
        auth = request.headers.get("Authorization", "")
        key = self.by_secret.get(auth[7:].strip()) if auth[:7].lower() == "bearer " else None
        if key is None:
            self.unknown.arrive(mono, self.wall())
            self.unknown.count("unauthorized_401")
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        st = key.stats
        st.arrive(mono, self.wall())
        st.in_flight += 1
        st.max_in_flight = max(st.max_in_flight, st.in_flight)
        try:
            return await self._handle(request, key)
        finally:
            st.in_flight -= 1

    async def _handle(self, request: web.Request, key: KeyState) -> web.Response:
        """auth fault → size → validation → rate limit → faults → latency → answer."""
        st, name = key.stats, key.spec.name
        if decide(key.fault, "auth", self.rng):
            st.count("unauthorized_401")
            return _error(401, f"The API key of {name} is invalid or revoked.", "invalid_request_error",
                          "invalid_api_key")
        limit = self.cfg.max_body_bytes
        try:
            if (request.content_length or 0) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length or 0)
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            st.count("too_large_413")
            return _error(413, f"request body larger than {limit} bytes", "invalid_request_error", "request_too_large")
        try:
            images, prompt = parse_chat(orjson.loads(raw))
        except (orjson.JSONDecodeError, BadRequest) as e:
            st.count("bad_requests_400")
            msg = str(e) if isinstance(e, BadRequest) else "the body is not valid JSON"
            return _error(400, msg, "invalid_request_error", "invalid_request")

        storm = decide(key.fault, "limit", self.rng)
        wait = storm.retry_after if storm else key.limit.admit(self.clock())
        if wait:
            st.count("rate_limited_429")
            why = "429 storm" if storm else f"qps {key.spec.qps:g}" + (f", rpm {key.spec.rpm}" if key.spec.rpm else "")
            return _error(429, f"Rate limit reached for {name} ({why}); retry after {wait:.3f} s.", "requests",
                          "rate_limit_exceeded", headers=retry_after_headers(wait))

        effect = decide(key.fault, "answer", self.rng)
        if effect and effect.clear:
            key.fault = None
        if effect and effect.status:
            st.count("server_errors_5xx")
            return _error(effect.status, f"The server had an error processing your request (simulated {effect.status}).",
                          "server_error")
        delay = self.latency.sample(self.rng)
        if effect and effect.hang_s:
            st.count("timeouts")
            delay = effect.hang_s
        if effect and effect.extra_s:
            st.count("latency_spikes")
            delay += effect.extra_s
        malformed = bool(effect and effect.malformed)
        await asyncio.sleep(delay)
        content = answer_content(request_digest(images, prompt, self.cfg.seed), prompt, malformed)
        if not (effect and effect.hang_s):
            st.count("malformed" if malformed else "ok")
        return _json(self._completion(content, prompt, len(images)))

    def _completion(self, content: str, prompt: str, n_images: int) -> dict[str, Any]:
        prompt_tokens = len(prompt) // 4 + 258 * n_images
        completion_tokens = len(content) // 4 + 1
        return {
            "id": f"chatcmpl-sim-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(self.wall()),
            "model": self.cfg.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


async def listen(sim: Sim, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner and the port actually bound (port 0 → ephemeral)."""
    runner = web.AppRunner(sim.app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise ConfigError(f"llm-sim: cannot listen on {host}:{port} ({e.strerror or e})") from None
    bound = runner.addresses[0][1]
    if host not in LOOPBACK:
        log.warning("llm-sim listens on %s: anyone who can reach it can use the fake keys", host)
    return runner, bound


def url_for(host: str, port: int) -> str:
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/v1"
