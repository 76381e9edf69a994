"""The error answers of a refused request, as DashScope (Model Studio, OpenAI-compatible mode) or OpenAI send them.

Sources (stored public docs, checked 2026-11): DashScope's status-code table lists 429
`Throttling.RateQuota` "Requests rate limit exceeded, please try again later." and 429
`Throttling.AllocationQuota` "Allocated quota exceeded, please increase your quota limit.", and 400
`Arrearage` "Access denied, please make sure your account is in good standing." (the newer error
page files overdue payments under 403 access denied; we answer 400 as the table says). Model
Studio's rate-limit page names the surge message "Request rate increased too quickly" but no code:
`Throttling.BurstRate` is our choice by analogy. OpenAI: 429 `rate_limit_exceeded` (type
`requests` or `tokens`) and 429 `insufficient_quota`. Bodies carry `type` = `code` for DashScope
(as its Arrearage example shows) and a `request_id`.
"""

from __future__ import annotations

from typing import Literal

ErrorStyle = Literal["dashscope", "openai"]
ERROR_STYLES: tuple[str, ...] = ErrorStyle.__args__  # type: ignore[attr-defined]
Why = Literal["rate", "tokens", "surge", "billing"]

#: (HTTP status, code, type, message) per style and reason.
CATALOG: dict[str, dict[str, tuple[int, str, str, str]]] = {
    "dashscope": {
        "rate": (429, "Throttling.RateQuota", "Throttling.RateQuota",
                 "Requests rate limit exceeded, please try again later."),
        "tokens": (429, "Throttling.AllocationQuota", "Throttling.AllocationQuota",
                   "Allocated quota exceeded, please increase your quota limit."),
        "surge": (429, "Throttling.BurstRate", "Throttling.BurstRate",
                  "Request rate increased too quickly, please reduce your request rate."),
        "billing": (400, "Arrearage", "Arrearage", "Access denied, please make sure your account is in good standing."),
    },
    "openai": {
        "rate": (429, "rate_limit_exceeded", "requests", "Rate limit reached for requests. Please try again later."),
        "tokens": (429, "rate_limit_exceeded", "tokens", "Rate limit reached for tokens. Please try again later."),
        "surge": (429, "rate_limit_exceeded", "requests",
                  "Request rate increased too quickly, please reduce your request rate."),
        "billing": (429, "insufficient_quota", "insufficient_quota",
                    "You exceeded your current quota, please check your plan and billing details."),
    },
}


def refusal(style: ErrorStyle, why: Why, request_id: str) -> tuple[int, dict]:
    """(status, body) of a refusal."""
    status, code, type_, message = CATALOG[style][why]
    body: dict = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    if style == "dashscope":
        body["request_id"] = request_id
    return status, body
