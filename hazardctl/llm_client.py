"""One LLM call with one key: the OpenAI-compatible client per key, and how a call ended.

Every way a call can end is mapped to a key-pool `Outcome` (429 with its Retry-After, 401/403,
5xx, timeout, connection, 400/413, an unusable answer), with an error text in our own words: a
provider's error message is never kept, since some echo part of the API key.
"""

from __future__ import annotations

import email.utils
import inspect
import math
import re
import time
from dataclasses import dataclass

import openai
import orjson

from hazardctl.keypool import Outcome
from hazardctl.keys import LLMKey
from hazardctl.answers import BadResponse, read_answer
from hazardctl.messages import AssessmentTask, RiskAssessment
from hazardctl.prompt import chat_messages, prompt_for, user_text

try:  # openai ≥ 2 builds on httpx2; older releases on httpx
    import httpx2 as _httpx
except ImportError:  # pragma: no cover
    import httpx as _httpx


@dataclass
class Call:
    """How one HTTP call ended: the pool's outcome, the assessment when OK, and what to report."""

    outcome: Outcome
    assessment: RiskAssessment | None = None
    retry_after: float | None = None
    error: str | None = None
    http_s: float = 0.0
    """time inside the HTTP request alone (not building the body, not parsing the reply)"""
    window: tuple[float, float] | None = None
    """the HTTP exchange itself, (sent, answered) in Unix seconds: `times.llm_start/llm_end` (issue 17.3)"""
    normalized: tuple[str, ...] = ()
    """rules of the tolerant reader the answer needed (`hazardctl.answers`); empty: strict"""
    reject_reason: str | None = None
    """BAD_RESPONSE: why the answer was unusable (a `hazardctl.answers.REASONS` entry)"""
    usage: int | None = None
    """tokens the provider counted (`usage.total_tokens`), to correct the pool's estimate"""


def open_clients(keys: list[LLMKey]) -> dict[str, openai.AsyncOpenAI]:
    """One client and one connection pool per key, sized for the key's in-flight cap; no SDK retries."""
    clients = {}
    for k in keys:
        n = k.in_flight_cap
        http = openai.DefaultAsyncHttpxClient(
            limits=_httpx.Limits(max_connections=n, max_keepalive_connections=n, keepalive_expiry=30.0),
            timeout=k.timeout)
        clients[k.name] = openai.AsyncOpenAI(api_key=k.secret(), base_url=k.base_url, max_retries=0,
                                             timeout=k.timeout, http_client=http)
    return clients


def retry_after_s(headers) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if headers is None:
        return None
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


_SAFE_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,48}$")


def _status_error(e: openai.APIStatusError) -> str:
    """Our own words for an HTTP error: the status and the provider's error code, never its message
    (providers echo part of the API key in 401 messages)."""
    code = getattr(e, "code", None)
    return f"HTTP {e.status_code}" + (f" {code}" if isinstance(code, str) and _SAFE_CODE.match(code) else "")


#: Billing refusals (the account cannot pay): OpenAI 429 insufficient_quota, DashScope 400 Arrearage.
_BILLING_CODES = {"insufficient_quota", "arrearage", "billing_hard_limit_reached", "billing_not_active"}


def refusal_class(e: openai.APIStatusError, default: Outcome | None = Outcome.RATE_LIMITED) -> Outcome | None:
    """Which refusal a 429 (or a billing 400/402/403) is, from the body's code and message: request
    rate, token quota, surge, or insufficient quota. The message is read here and never kept."""
    body = e.body if isinstance(e.body, dict) else {}
    code = str(body.get("code") or getattr(e, "code", None) or "").lower()
    kind = str(body.get("type") or "").lower()
    msg = str(body.get("message") or "").lower()
    if code in _BILLING_CODES or kind in _BILLING_CODES or e.status_code == 402 or "current quota" in msg \
            or "good standing" in msg or "billing" in msg:
        return Outcome.INSUFFICIENT_QUOTA
    if e.status_code != 429:
        return default
    if code == "throttling.burstrate" or "too quickly" in msg or "surge" in msg:
        return Outcome.SURGE
    if code == "throttling.allocationquota" or kind == "tokens" or "allocated quota" in msg or "tokens" in msg:
        return Outcome.RATE_LIMITED_TOKENS
    return Outcome.RATE_LIMITED


def estimate_tokens(task: AssessmentTask, max_tokens: int, language: str = "en") -> int:
    """Tokens a provider will count for this task's request, before sending it (corrected later by the
    answer's `usage`): one per 28x28 px patch of the crop (Qwen-VL), ~4 characters of prompt text per
    token, and `max_tokens` for the answer (providers reserve it up front)."""
    image = 0
    if task.group.crop_jpeg_b64:
        if task.group.crop_size:
            w, h = task.group.crop_size
        else:  # the crop is the group's box plus a small margin
            x1, y1, x2, y2 = task.group.bbox
            w, h = x2 - x1 + 24, y2 - y1 + 24
        image = math.ceil(max(1, w) / 28) * math.ceil(max(1, h) / 28)
    for f in task.group.frames or ():  # earlier crops and the thumbnail (issue 19)
        image += math.ceil(max(1, f.size[0]) / 28) * math.ceil(max(1, f.size[1]) / 28)
    text = math.ceil((len(prompt_for(language).system) + len(user_text(task, language))) / 4)
    return int(image + text + max_tokens)


def usage_tokens(raw: bytes) -> int | None:
    """total_tokens from a chat completion's `usage`, or None."""
    try:
        u = orjson.loads(raw).get("usage") or {}
        total = u.get("total_tokens")
        if total is None and ("prompt_tokens" in u or "completion_tokens" in u):
            total = (u.get("prompt_tokens") or 0) + (u.get("completion_tokens") or 0)
        return int(total) if total is not None else None
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return None


#: openai ≥ 2 takes a pre-encoded body (`content=`); older releases take the dict
_RAW_BODY = "content" in inspect.signature(openai.AsyncOpenAI.post).parameters


def response_format(kind: str) -> dict | None:
    """The request's `response_format` for a key's setting (issue 12); None: not sent at all."""
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        return {"type": "json_schema",
                "json_schema": {"name": "risk_assessment", "schema": RiskAssessment.model_json_schema()}}
    return None


async def call_llm(client: openai.AsyncOpenAI, key: LLMKey, task: AssessmentTask, timeout: float, *,
                   temperature: float = 0.1, max_tokens: int = 400, language: str = "en",
                   motion: bool = True) -> Call:
    """One call with one key. `Call.http_s` and `Call.window` are the HTTP exchange alone, so building
    the body (prompt, data URL, JSON) and reading the reply count as our own time, not the LLM's."""
    request = {"model": key.model, "messages": chat_messages(task, language, motion), "temperature": temperature,
               "max_tokens": max_tokens}
    fmt = response_format(getattr(key, "response_format", "none"))
    if fmt is not None:
        request["response_format"] = fmt
    body = orjson.dumps(request)
    sent = time.time()
    t0 = time.perf_counter()
    reply = await _post(client, body, timeout)
    http_s = time.perf_counter() - t0
    window = (sent, sent + http_s)  # one clock for both ends: the window is exactly http_s long
    if isinstance(reply, Call):
        reply.http_s, reply.window = http_s, window
        return reply
    try:
        text, finish_reason = reply_message(reply.content)
        reading = read_answer(text, task, finish_reason)
        call = Call(Outcome.OK, assessment=reading.assessment, normalized=reading.rules)
    except BadResponse as e:
        call = Call(Outcome.BAD_RESPONSE, error=f"bad response: {e}", reject_reason=e.reason)
    except (AttributeError, TypeError, ValueError, RecursionError) as e:  # e.g. content as a list of parts
        call = Call(Outcome.BAD_RESPONSE, error=f"bad response: unexpected shape ({type(e).__name__})",
                    reject_reason="not_a_completion")
    call.http_s, call.window = http_s, window
    call.usage = usage_tokens(reply.content)
    return call


async def _post(client: openai.AsyncOpenAI, body: bytes, timeout: float) -> _httpx.Response | Call:
    """POST /chat/completions through the client's own request path (auth, errors, timeouts), but
    without `chat.completions.create`'s per-call walk over the typed params and its response
    models: together ~3 ms of CPU per call on the event loop, which pacing at 50/s cannot afford.
    An HTTP failure comes back as the Call that describes it."""
    try:
        if _RAW_BODY:
            return await client.post("/chat/completions", cast_to=_httpx.Response, content=body,
                                     options={"timeout": timeout, "headers": {"Content-Type": "application/json"}})
        return await client.post("/chat/completions", cast_to=_httpx.Response,  # pragma: no cover
                                 body=orjson.loads(body), options={"timeout": timeout})
    except openai.RateLimitError as e:
        return Call(refusal_class(e), retry_after=retry_after_s(e.response.headers), error=_status_error(e))
    except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
        return Call(refusal_class(e, Outcome.UNAUTHORIZED), error=_status_error(e))
    except openai.APITimeoutError:
        return Call(Outcome.TIMEOUT, error=f"timeout after {timeout:.1f}s")
    except openai.APIConnectionError as e:
        return Call(Outcome.CONNECTION, error=f"connection error ({type(e.__cause__ or e).__name__})")
    except openai.APIStatusError as e:
        if refusal_class(e, None) is Outcome.INSUFFICIENT_QUOTA:  # DashScope: 400 Arrearage
            return Call(Outcome.INSUFFICIENT_QUOTA, error=_status_error(e))
        if e.status_code in (400, 413, 422):
            return Call(Outcome.BAD_REQUEST, error=_status_error(e))
        return Call(Outcome.SERVER_ERROR, error=_status_error(e))
    except openai.APIError as e:  # e.g. a body the SDK could not decode
        return Call(Outcome.BAD_RESPONSE, error=f"unreadable response ({type(e).__name__})",
                    reject_reason="not_a_completion")


def reply_message(raw: bytes) -> tuple[str | None, str | None]:
    """(the assistant's text, finish_reason) of a chat completion body; a refusal is BadResponse."""
    try:
        choice = orjson.loads(raw)["choices"][0]
        message = choice["message"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        raise BadResponse("not_a_completion", "not a chat completion") from None
    if not message.get("content") and message.get("refusal"):
        raise BadResponse("refusal", "the model declined to assess")
    return message.get("content"), choice.get("finish_reason")


def reply_text(raw: bytes) -> str | None:
    """The assistant's text in a chat completion body."""
    return reply_message(raw)[0]
