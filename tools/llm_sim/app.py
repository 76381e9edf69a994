"""The LLM simulator's HTTP app: auth, validation, key and account limits, faults, answers, stats.

One `Sim` per server, run on one event loop (no locks). Order for a chat completion:
arrival jitter → key → `unauthorized` fault → body size (413) → request shape (400) → billing
(insufficient quota) → 429 storm fault → limits of the key, then of its account (429: rate,
tokens, surge) → 5xx / hang / spike / malformed faults → latency → answer with `usage`. Every
step is counted per key and per account, and logged in `GET /requests`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson
from aiohttp import web

from hazardctl.errors import ConfigError
from tools.llm_sim.answers import AnswerMix, Latency, answer_content, answer_variant, decide, make_fault, request_digest
from tools.llm_sim.config import BILLING, SimConfig, SimKey, UnknownKey
from tools.llm_sim.limits import Refusal, ScopeLimit, admit, retry_after_headers
from tools.llm_sim.refusals import refusal
from tools.llm_sim.stats import RequestLog, ScopeStats, totals
from tools.llm_sim.tokens import image_size, image_tokens, text_tokens

log = logging.getLogger("hazardctl.llm_sim")

LOOPBACK = ("127.0.0.1", "::1", "localhost")

# ------------------------------------------------------------------------------------------ HTTP


class BadRequest(Exception):
    pass


@dataclass
class ChatRequest:
    """What the simulator reads from a chat completion request."""

    images: list[str]
    prompt: str  # every text part, joined by newlines
    texts: list[dict[str, str]] = field(default_factory=list)  # [{"role", "text"}] in message order
    model: str | None = None
    response_format: Any = None
    max_tokens: int | None = None


def parse_chat(body: Any) -> ChatRequest:
    """The request's images, texts and options; BadRequest if it is not one we serve."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty list")
    if body.get("stream"):
        raise BadRequest("streaming is not supported by the simulator")
    images: list[str] = []
    texts: list[dict[str, str]] = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        role = str(m.get("role", "")) if isinstance(m, dict) else ""
        if isinstance(content, str):
            texts.append({"role": role, "text": content})
            continue
        if not isinstance(content, list):
            raise BadRequest("each message needs a 'content' string or list of parts")
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append({"role": role, "text": str(part.get("text", ""))})
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
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    return ChatRequest(images, "\n".join(t["text"] for t in texts), texts, body.get("model"),
                       body.get("response_format"), max_tokens if isinstance(max_tokens, int) else None)


def _error(status: int, message: str, type_: str, code: str | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    """An OpenAI-style error body."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


class KeyState:
    def __init__(self, spec: SimKey, limit: ScopeLimit, account: "AccountState | None"):
        self.spec = spec
        self.limit = limit
        self.account = account
        self.fault = spec.fault.model_copy() if spec.fault else None
        self.billing = spec.billing
        self.stats = ScopeStats()

    @property
    def scopes(self) -> list[ScopeLimit]:
        return [self.limit] if self.account is None else [self.limit, self.account.limit]


class AccountState:
    def __init__(self, limit: ScopeLimit):
        self.limit = limit
        self.stats = ScopeStats(watch_401=False)


class Sim:
    """The simulator's state and handlers; single-threaded (one event loop), so no locks.

    `clock` (Unix seconds) drives the limits and every timestamp; tests may inject one.
    """

    def __init__(self, cfg: SimConfig, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.clock = clock
        self.latency = Latency.parse(cfg.latency)
        self.answer_mix = AnswerMix.parse(cfg.answer_mix)
        self.rng = random.Random(cfg.seed)
        self.jitter_rng = random.Random(cfg.seed + 1)
        now = clock()
        surge = (cfg.surge_floor, cfg.surge_growth) if cfg.surge else None
        self.accounts = {name: AccountState(ScopeLimit("account", name, a.limits, cfg.limiter, now, surge,
                                                       cfg.tolerance_s))
                         for name, a in cfg.accounts.items()}
        self.keys = {k.name: KeyState(k, ScopeLimit("key", k.name, k.limits, cfg.limiter, now, surge, cfg.tolerance_s),
                                      self.accounts[k.account] if k.account else None) for k in cfg.keys}
        self.by_secret = {k.api_key: self.keys[k.name] for k in cfg.keys}
        self.unknown = ScopeStats()
        self.all = ScopeStats()
        self.log = RequestLog(cfg.requests_log)

    # --- control (called on the loop's thread)
    def set_fault(self, name: str, fault: str | None, **params: Any) -> dict[str, Any]:
        """Switch a key's fault (`*`: every key); None clears it (and billing). ConfigError for a bad name or fault."""
        if name != "*" and name not in self.keys:
            raise UnknownKey(f"no simulated key named {name!r}")
        targets = list(self.keys.values()) if name == "*" else [self.keys[name]]
        if fault == BILLING:
            for k in targets:
                k.billing = True
                log.info("key %s: billing (insufficient quota)", k.spec.name)
            return {"key": name, "fault": {"kind": BILLING}}
        spec = make_fault({"kind": fault, **params}, where=f"fault for {name}") if fault else None
        for k in targets:
            k.fault = spec.model_copy() if spec else None
            if spec is None:
                k.billing = False
            log.info("key %s: fault %s", k.spec.name, spec.model_dump(exclude_none=True) if spec else None)
        return {"key": name, "fault": spec.model_dump() if spec else None}

    def set_answer_mix(self, spec: str) -> dict[str, Any]:
        """Switch how answers are written (issue 12), e.g. "garbage:1" then "strict:1"; ConfigError if bad."""
        self.answer_mix = AnswerMix.parse(spec)
        log.info("answer mix %s", self.answer_mix)
        return {"answer_mix": str(self.answer_mix)}

    def stats(self) -> dict[str, Any]:
        keys = {name: {**k.stats.as_dict(), "account": k.spec.account} for name, k in self.keys.items()}
        accounts = {name: {**a.stats.as_dict(), "keys": [k for k, s in self.keys.items() if s.account is a]}
                    for name, a in self.accounts.items()}
        every = [k.stats for k in self.keys.values()] + [self.unknown]
        total = totals(every)
        total.update(max_in_any_1s_window=self.all.window.max_seen,
                     max_admitted_in_any_1s_window=self.all.admitted_window.max_seen,
                     unknown_key_requests=self.unknown.counts["requests"])
        faults = {n: k.fault.model_dump(exclude_none=True) for n, k in self.keys.items() if k.fault}
        faults.update({n: {"kind": BILLING} for n, k in self.keys.items() if k.billing})
        return {"keys": keys, "accounts": accounts, "totals": total, "faults": faults,
                "limiter": self.cfg.limiter, "surge": self.cfg.surge, "answer_mix": str(self.answer_mix)}

    def requests(self, limit: int | None = None, key: str | None = None) -> list[dict[str, Any]]:
        return self.log.select(limit, key)

    def reset_stats(self) -> None:
        for s in [k.stats for k in self.keys.values()] + [a.stats for a in self.accounts.values()]:
            s.reset()
        self.unknown.reset()
        self.all.reset()
        self.log.clear()

    # --- the app
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_body_bytes)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/stats", self.get_stats)
        app.router.add_get("/requests", self.get_requests)
        app.router.add_post("/faults", self.faults)
        app.router.add_post("/answer-mix", self.post_answer_mix)
        app.router.add_post("/reset-stats", self.reset)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def healthz(self, _request: web.Request) -> web.Response:
        return _json({"status": "ok", "keys": len(self.keys)})

    async def get_stats(self, _request: web.Request) -> web.Response:
        return _json(self.stats())

    async def get_requests(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", 0)) or None
        except ValueError:
            limit = -1
        if limit is not None and limit < 0:  # -5 would have meant "all but the first 5"
            return _error(400, "limit must be a whole number >= 0", "invalid_request_error")
        return _json({"requests": self.requests(limit, request.query.get("key"))})

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

    async def post_answer_mix(self, request: web.Request) -> web.Response:
        try:
            return _json(self.set_answer_mix(str(orjson.loads(await request.read())["mix"])))
        except (orjson.JSONDecodeError, TypeError, KeyError):
            return _error(400, 'expected {"mix": "strict:0.7,fenced:0.3"}', "invalid_request_error")
        except ConfigError as e:
            return _error(400, str(e), "invalid_request_error")

    async def reset(self, _request: web.Request) -> web.Response:
        self.reset_stats()
        return _json({"reset": True})

    async def chat(self, request: web.Request) -> web.Response:
        jitter = self.jitter_rng.uniform(0.0, self.cfg.jitter_ms) if self.cfg.jitter_ms else 0.0
        if jitter:
            await asyncio.sleep(jitter / 1000.0)
        now = self.clock()
        self.all.arrive(now)
        auth = request.headers.get("Authorization", "")
        key = self.by_secret.get(auth[7:].strip()) if auth[:7].lower() == "bearer " else None
        record = self.log.add({"ts": now, "key": key.spec.name if key else None,
                               "account": key.spec.account if key else None, "jitter_ms": round(jitter, 3),
                               "status": None, "admitted": False, "reason": None})
        if key is None:
            self.unknown.arrive(now)
            self.unknown.count("unauthorized_401")
            record.update(status=401, reason="unknown_key")
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        scopes = [key.stats] + ([key.account.stats] if key.account else [])
        for st in scopes:
            st.arrive(now)
            st.in_flight += 1
            st.max_in_flight = max(st.max_in_flight, st.in_flight)
        try:
            response = await self._handle(request, key, record)
        finally:
            for st in scopes:
                st.in_flight -= 1
        record["status"] = response.status
        return response

    def _count(self, key: KeyState, counter: str) -> None:
        key.stats.count(counter)
        if key.account is not None:
            key.account.stats.count(counter)

    def _refuse(self, key: KeyState, why: str, record: dict[str, Any], wait_s: float | None = None,
                detail: str = "") -> web.Response:
        """A 429 (or billing) answer in the configured provider's style."""
        body_why = "rate" if why == "storm" else why
        status, body = refusal(self.cfg.errors, body_why, f"sim-{uuid.uuid4().hex[:16]}")  # type: ignore[arg-type]
        headers = {"x-llm-sim-reason": f"{why} {detail}".strip()}
        if wait_s is not None and self.cfg.retry_after:
            headers.update(retry_after_headers(wait_s))
        self._count(key, f"refused_{why}")
        if status == 429:
            self._count(key, "rate_limited_429")
        record.update(reason=f"{why} {detail}".strip())
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)

    async def _handle(self, request: web.Request, key: KeyState, record: dict[str, Any]) -> web.Response:
        """auth fault → size → validation → billing → storm → limits → faults → latency → answer."""
        name = key.spec.name
        if decide(key.fault, "auth", self.rng):
            self._count(key, "unauthorized_401")
            record["reason"] = "unauthorized fault"
            return _error(401, f"The API key of {name} is invalid or revoked.", "invalid_request_error",
                          "invalid_api_key")
        limit = self.cfg.max_body_bytes
        try:
            if (request.content_length or 0) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length or 0)
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._count(key, "too_large_413")
            record["reason"] = "too large"
            return _error(413, f"request body larger than {limit} bytes", "invalid_request_error", "request_too_large")
        try:
            chat = parse_chat(orjson.loads(raw))
        except (orjson.JSONDecodeError, BadRequest) as e:
            self._count(key, "bad_requests_400")
            msg = str(e) if isinstance(e, BadRequest) else "the body is not valid JSON"
            record["reason"] = f"bad request: {msg}"
            return _error(400, msg, "invalid_request_error", "invalid_request")

        sizes = [image_size(url) for url in chat.images]
        prompt_tokens = sum(image_tokens(s) for s in sizes) + text_tokens(chat.prompt)
        digest = request_digest(chat.images, chat.prompt, self.cfg.seed)
        variant = self.answer_mix.draw(self.rng)
        content, finish_reason = answer_variant(digest, chat.prompt, variant)
        completion_tokens = text_tokens(content)
        tokens = prompt_tokens + completion_tokens
        cut = RequestLog.PROMPT_CHARS
        record.update(model=chat.model, response_format=chat.response_format, prompt=chat.prompt[:cut], answer=variant,
                      texts=[{"role": t["role"], "text": t["text"][:cut]} for t in chat.texts],
                      images=[list(s) if s else None for s in sizes], max_tokens=chat.max_tokens,
                      prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=tokens)

        if key.billing:
            return self._refuse(key, "billing", record)
        storm = decide(key.fault, "limit", self.rng)
        if storm:
            return self._refuse(key, "storm", record, storm.retry_after, "rate_limit_storm fault")
        now = self.clock()
        for st in [key.stats, self.all] + ([key.account.stats] if key.account else []):
            st.at_limiter(now)
        record["ts_limiter"] = now
        refused: Refusal | None = admit(key.scopes, now, tokens)
        if refused is not None:
            if refused.scope == "account":
                self._count(key, "refused_at_account")
            return self._refuse(key, refused.reason, record, refused.wait_s,
                                f"{refused.scope} {refused.name} {refused.limit}")
        for st in [key.stats, self.all] + ([key.account.stats] if key.account else []):
            st.admit(now, tokens)
        record["admitted"] = True

        effect = decide(key.fault, "answer", self.rng)
        if effect and effect.clear:
            key.fault = None
        if effect and effect.status:
            self._count(key, "server_errors_5xx")
            record["reason"] = f"server_error_burst {effect.status}"
            return _error(effect.status, f"The server had an error processing your request (simulated {effect.status}).",
                          "server_error")
        delay = self.latency.sample(self.rng)
        if effect and effect.hang_s:
            self._count(key, "timeouts")
            record["reason"] = "timeout fault"
            delay = effect.hang_s
        if effect and effect.extra_s:
            self._count(key, "latency_spikes")
            delay += effect.extra_s
        malformed = bool(effect and effect.malformed)
        await asyncio.sleep(delay)
        if malformed:
            content, finish_reason = answer_content(digest, chat.prompt, True), "stop"
            completion_tokens = text_tokens(content)
        if not (effect and effect.hang_s):
            self._count(key, "malformed" if malformed else "ok")
        return _json(self._completion(content, prompt_tokens, completion_tokens, finish_reason))

    def _completion(self, content: str, prompt_tokens: int, completion_tokens: int,
                    finish_reason: str = "stop") -> dict[str, Any]:
        return {
            "id": f"chatcmpl-sim-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(self.clock()),
            "model": self.cfg.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason}],
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
