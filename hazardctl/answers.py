"""What vision models answer, read tolerantly: the model's wording is not the key's fault (issue 12).

`read_answer(text, task, finish_reason)` turns an assistant message into a `RiskAssessment` and says
which named rules it needed (`Reading.rules`; empty on the strict path). A conforming answer (one
JSON object with the asked keys and values) takes the strict path: one `orjson.loads` and one
pydantic validation, as cheap as before. Anything else goes through the rules below, in this order;
what none of them can read is a `BadResponse` with a short `reason` (the scheduler retries it once,
then reports `bad_response`).

Rules (each is a label of `hazardctl_answer_normalized_total` and an entry of `answer_normalized`):

  reasoning           `<think>…</think>` (or <thinking>/<reasoning>/<analysis>) removed before reading
  fenced              a markdown code fence around the object
  surrounding_text    prose before or after the object
  relaxed_json        single quotes, trailing commas, bare keys, True/None, full-width ：，
  list_wrapped        the object inside a list: `[{...}]`
  several_objects     several objects that agree on the level: the first is kept
  nested              the assessment one level down: `{"assessment": {...}}`
  synonym_keys        risk_level / riskLevel / severity / 风险等级 / 风险类型 / 描述 / 置信度 …
  level_text          "HIGH", "High risk", "moderate", "severe", "safe" …
  level_zh            高 / 中 / 低 / 无 (and 高风险, 中等, 轻微, 安全 …)
  level_number        0–3 → none/low/medium/high
  level_score         a 0–1 risk score → <0.2 none, <0.45 low, <0.7 medium, else high
  risk_types_text     one string instead of a list ("a, b" is split)
  confidence_percent  85 or "85%" → 0.85
  confidence_text     "high"/"高" → 0.8, "medium"/"中" → 0.5, "low"/"低" → 0.3
  ids_text            danger object ids as "3", "id 3", {"id": 3} or a single number
  complete_before_cut finish_reason "length", but the object was complete before the cut

Rejections (`BadResponse.reason`): empty, refusal, truncated (an object cut before its end, or
reasoning never closed: what was cut may have held the level or the danger ids, so it is not
guessed), no_object, invalid_json, no_level (an object without any risk level), bad_level (a level
that is none of the recognised forms), invalid_fields (e.g. a confidence of 700), ambiguous
(several objects with different levels: which one the model meant is a guess, so none is taken).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from hazardctl.messages import RISK_LEVELS, AssessmentTask, RiskAssessment

RULES: tuple[str, ...] = (
    "reasoning", "fenced", "surrounding_text", "relaxed_json", "list_wrapped", "several_objects", "nested",
    "synonym_keys", "level_text", "level_zh", "level_number", "level_score", "risk_types_text",
    "confidence_percent", "confidence_text", "ids_text", "complete_before_cut",
)
REASONS: tuple[str, ...] = (
    "empty", "refusal", "truncated", "no_object", "invalid_json", "no_level", "bad_level", "invalid_fields",
    "ambiguous", "not_a_completion",
)


class BadResponse(Exception):
    """The model answered, but not with a usable assessment; `reason` is one of `REASONS`."""

    def __init__(self, reason: str, detail: str | None = None):
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class Reading:
    assessment: RiskAssessment
    rules: tuple[str, ...] = ()


def read_answer(text: str | None, task: AssessmentTask | None = None, finish_reason: str | None = None) -> Reading:
    """The model's reply → a validated assessment and the rules used; `BadResponse` if unreadable.
    Danger ids outside the task's group are dropped; risk types are trimmed to 3 phrases."""
    if not text or not text.strip():
        raise BadResponse("empty", "empty reply")
    if finish_reason != "length":  # the strict path: exactly what the prompt asks for
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            data = None
        if type(data) is dict:
            try:
                return Reading(_tidy(RiskAssessment.model_validate(data), task))
            except ValidationError:
                pass
    ra, rules = _tolerant(text, finish_reason)
    return Reading(_tidy(ra, task), tuple(dict.fromkeys(rules)))


def _tidy(ra: RiskAssessment, task: AssessmentTask | None) -> RiskAssessment:
    if task is not None:
        members = {o.object_id for o in task.objects} or set(task.group.member_ids)
        ra.danger_object_ids = [i for i in ra.danger_object_ids if i in members]
    ra.risk_types = [r.strip()[:80] for r in ra.risk_types if r.strip()][:3]
    return ra


# ------------------------------------------------------------------------------ the tolerant path

_THINK = re.compile(r"<(think|thinking|reasoning|analysis)>.*?</\1>", re.S | re.I)
_THINK_OPEN = re.compile(r"<(think|thinking|reasoning|analysis)>", re.I)
_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?|```")
_REFUSAL = re.compile(
    r"\b(sorry|apologi[sz]e|cannot|can't|can not|unable|not able|won't|refuse)\b|抱歉|无法|不能|对不起", re.I)
_FILLER = re.compile(r"[\s\[\],]*")


def _tolerant(text: str, finish_reason: str | None) -> tuple[RiskAssessment, list[str]]:
    rules: list[str] = []
    body = text.strip()
    if "<" in body:
        without = _THINK.sub(" ", body)
        if without != body:
            rules.append("reasoning")
            body = without.strip()
        if _THINK_OPEN.search(body):
            raise BadResponse("truncated", "the reasoning never ends (no closing tag)")
    if "```" in body:
        rules.append("fenced")
        body = _FENCE.sub("\n", body).strip()
    spans, unclosed = _object_spans(body)
    cut = finish_reason == "length"
    if unclosed and (cut or not spans):
        raise BadResponse("truncated", "the answer ends inside a JSON object"
                          + (" (finish_reason length)" if cut else ""))
    if not spans:
        if _REFUSAL.search(body):
            raise BadResponse("refusal", "the model declined to assess")
        raise BadResponse("no_object", "no JSON object in the reply")
    outside = "".join(body[a:b] for a, b in _gaps(spans, len(body)))
    if _FILLER.fullmatch(outside) is None:
        rules.append("surrounding_text")
    elif "[" in outside:
        rules.append("list_wrapped" if len(spans) == 1 else "several_objects")
    found: list[tuple[RiskAssessment, list[str]]] = []
    first_error: BadResponse | None = None
    for a, b in spans:
        try:
            found.append(_read_object(body[a:b]))
        except BadResponse as e:
            first_error = first_error or e
    if not found:
        assert first_error is not None
        raise first_error
    if len(found) > 1:
        levels = {ra.level for ra, _ in found}
        if len(levels) > 1:
            raise BadResponse("ambiguous", f"{len(found)} assessments with different levels ({', '.join(sorted(levels))})")
        rules.append("several_objects")
    ra, more = found[0]
    rules += more
    if cut:
        rules.append("complete_before_cut")
    return ra, rules


def _object_spans(s: str) -> tuple[list[tuple[int, int]], bool]:
    """Top-level balanced `{...}` spans (braces inside quoted strings ignored), and whether one is left open."""
    spans: list[tuple[int, int]] = []
    depth, start, quote, i, n = 0, 0, "", 0, len(s)
    while i < n:
        c = s[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c == "{":
            if depth == 0:
                start = i
            depth += 1
        elif c == "}" and depth:
            depth -= 1
            if depth == 0:
                spans.append((start, i + 1))
        elif depth and c in "\"'" and (c == '"' or _single_quote_opens(s, i)):
            quote = c
        i += 1
    return spans, depth > 0


def _single_quote_opens(s: str, i: int) -> bool:
    """A ' inside an object starts a string only where a key or a value may start (not in don't)."""
    j = i - 1
    while j >= 0 and s[j] in " \t\r\n":
        j -= 1
    return j < 0 or s[j] in "{[,:：，"


def _gaps(spans: list[tuple[int, int]], n: int):
    pos = 0
    for a, b in spans:
        yield pos, a
        pos = b
    yield pos, n


def _read_object(src: str) -> tuple[RiskAssessment, list[str]]:
    rules: list[str] = []
    try:
        data = orjson.loads(src)
    except orjson.JSONDecodeError:
        try:
            data = _Relaxed(src).document()
        except ValueError as e:
            raise BadResponse("invalid_json", str(e)) from None
        except RecursionError:  # nesting deeper than orjson's limit too: no assessment looks like that
            raise BadResponse("invalid_json", "nested too deeply") from None
        rules.append("relaxed_json")
    if not isinstance(data, dict):
        raise BadResponse("no_object", "no JSON object in the reply")
    inner = _nested(data)
    if inner is not None:
        data = inner
        rules.append("nested")
    fields, more = _map_fields(data)
    rules += more
    try:
        return RiskAssessment.model_validate(fields), rules
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "reply"
        raise BadResponse("invalid_fields", f"{where}: {first['msg']}") from None


# --------------------------------------------------------------------------------- keys and values

def _norm(key: str) -> str:
    return re.sub(r"[\s_\-]", "", key.strip().lower())


_SYNONYMS: dict[str, tuple[str, ...]] = {
    "level": ("level", "risk_level", "riskLevel", "risk", "severity", "danger_level", "hazard_level", "risk_rating",
              "rating", "风险等级", "风险级别", "危险等级", "等级", "级别", "风险"),
    "score": ("risk_score", "score", "danger_score", "hazard_score", "风险分数", "风险评分", "风险分值"),
    "risk_types": ("risk_types", "risk_type", "types", "risks", "hazards", "hazard_types", "risk_categories",
                   "categories", "风险类型", "危险类型", "风险种类", "类型"),
    "description": ("description", "desc", "reason", "explanation", "summary", "details", "scene",
                    "描述", "说明", "原因", "场景描述", "解释"),
    "confidence": ("confidence", "conf", "certainty", "confidence_score", "置信度", "可信度", "信心", "把握"),
    "danger_object_ids": ("danger_object_ids", "danger_ids", "danger_objects", "dangerous_object_ids", "object_ids",
                          "involved_ids", "involved_objects", "objects_involved", "危险对象", "危险对象id",
                          "危险目标", "危险目标id", "涉及对象", "涉及目标"),
}
_CANON = {_norm(s): field for field, names in _SYNONYMS.items() for s in names}
_ASSESSMENT_FIELDS = frozenset(("level", "risk_types", "description", "confidence", "danger_object_ids"))

_LEVEL_WORDS = {
    "none": "none", "no": "none", "no risk": "none", "safe": "none", "nil": "none", "null": "none", "zero": "none",
    "normal": "none", "low": "low", "minor": "low", "minimal": "low", "slight": "low", "mild": "low",
    "medium": "medium", "moderate": "medium", "mid": "medium", "med": "medium", "elevated": "medium",
    "intermediate": "medium", "high": "high", "severe": "high", "critical": "high", "dangerous": "high",
    "extreme": "high", "very high": "high", "serious": "high",
}
_LEVEL_ZH = {
    "无": "none", "无风险": "none", "没有": "none", "没有风险": "none", "安全": "none", "正常": "none", "无危险": "none",
    "低": "low", "低风险": "low", "较低": "low", "轻微": "low", "低危": "low",
    "中": "medium", "中等": "medium", "中风险": "medium", "中度": "medium", "一般": "medium", "中危": "medium",
    "高": "high", "高风险": "high", "较高": "high", "严重": "high", "高危": "high", "危险": "high", "极高": "high",
}
_LEVEL_SUFFIX = re.compile(r"[\s_\-]*(risk|level|danger)$")
_CONF_TEXT = {"high": 0.8, "medium": 0.5, "moderate": 0.5, "low": 0.3, "高": 0.8, "中": 0.5, "中等": 0.5, "低": 0.3}
_ID = re.compile(r"(?<!\d)\d{1,18}(?!\d)")  # an id, not a 5000-digit run (int() refuses those)


def _nested(data: dict) -> dict | None:
    """`{"assessment": {...}}`: the one dict value that holds a level, when the outer one has none."""
    if any(_CANON.get(_norm(k)) in ("level", "score") for k in data if isinstance(k, str)):
        return None
    inner = [v for v in data.values() if isinstance(v, dict)
             and any(_CANON.get(_norm(k)) in ("level", "score") for k in v if isinstance(k, str))]
    return inner[0] if len(inner) == 1 else None


def _map_fields(data: dict) -> tuple[dict, list[str]]:
    rules: list[str] = []
    got: dict[str, Any] = {}
    for k, v in data.items():
        field = _CANON.get(_norm(k)) if isinstance(k, str) else None
        if field is None or field in got:
            continue
        if k != field:
            rules.append("synonym_keys")
        got[field] = v
    out: dict[str, Any] = {}
    if "level" in got and got["level"] is not None:
        out["level"] = _level(got["level"], rules)
    elif "score" in got:
        out["level"] = _level_from_score(got["score"], rules)
    else:
        raise BadResponse("no_level", "no risk level in the answer")
    if "risk_types" in got:  # at most 3 kept (as _tidy does): 6 phrases are a usable answer, not invalid_fields
        out["risk_types"] = [t for t in _risk_types(got["risk_types"], rules) if t.strip()][:3]
    if got.get("description") is not None:
        d = got["description"]
        out["description"] = d if isinstance(d, str) else str(d)
    if got.get("confidence") is not None:
        out["confidence"] = _confidence(got["confidence"], rules)
    if got.get("danger_object_ids") is not None:
        out["danger_object_ids"] = _ids(got["danger_object_ids"], rules)
    return out, rules


def _level(v: Any, rules: list[str]) -> str:
    if isinstance(v, bool):
        raise BadResponse("bad_level", "level is true/false")
    if isinstance(v, (int, float)):
        if float(v).is_integer() and 0 <= v <= 3:
            rules.append("level_number")
            return RISK_LEVELS[int(v)]
        if 0 < v < 1:
            return _level_from_score(v, rules)
        raise BadResponse("bad_level", f"level {v!r} is not 0–3 or a 0–1 score")
    if isinstance(v, dict):  # {"level": {"value": "high"}}: take its first string
        v = next((x for x in v.values() if isinstance(x, (str, int, float))), "")
    if not isinstance(v, str):
        raise BadResponse("bad_level", f"level is a {type(v).__name__}")
    s = v.strip().strip("\"'。.!").strip()
    low = s.lower()
    if low in RISK_LEVELS:
        if v != low:
            rules.append("level_text")
        return low
    if s in _LEVEL_ZH or s.rstrip("级") in _LEVEL_ZH:
        rules.append("level_zh")
        return _LEVEL_ZH.get(s) or _LEVEL_ZH[s.rstrip("级")]
    word = _LEVEL_SUFFIX.sub("", low).strip()
    if word in _LEVEL_WORDS or low in _LEVEL_WORDS:
        rules.append("level_text")
        return _LEVEL_WORDS.get(low) or _LEVEL_WORDS[word]
    try:
        return _level(float(s), rules)
    except ValueError:
        pass
    raise BadResponse("bad_level", f"level {s[:20]!r} is not a recognised risk level")


def _level_from_score(v: Any, rules: list[str]) -> str:
    try:
        x = float(v.strip().rstrip("%")) / (100 if v.strip().endswith("%") else 1) if isinstance(v, str) else float(v)
    except (TypeError, ValueError):
        raise BadResponse("bad_level", "risk score is not a number") from None
    if isinstance(v, bool) or not 0 <= x <= 1:
        raise BadResponse("bad_level", f"risk score {x:g} is not within 0–1")
    rules.append("level_score")
    return "none" if x < 0.2 else "low" if x < 0.45 else "medium" if x < 0.7 else "high"


def _risk_types(v: Any, rules: list[str]) -> list[str]:
    if isinstance(v, str):
        rules.append("risk_types_text")
        return [p for p in re.split(r"[,;、，；/]", v) if p.strip()]
    if isinstance(v, list):
        out = []
        for x in v:
            if isinstance(x, dict):
                x = next((y for y in x.values() if isinstance(y, str)), None)
            if isinstance(x, str):
                out.append(x)
        return out
    return []


def _confidence(v: Any, rules: list[str]) -> Any:
    if isinstance(v, str):
        s = v.strip().lower()
        if s in _CONF_TEXT:
            rules.append("confidence_text")
            return _CONF_TEXT[s]
        if s.endswith("%"):
            try:
                x = float(s[:-1]) / 100
            except ValueError:
                return v
            rules.append("confidence_percent")
            return x
        try:
            v = float(s)
        except ValueError:
            return v  # pydantic rejects it: invalid_fields
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 1 < v <= 100:
        rules.append("confidence_percent")
        return v / 100
    return v


def _ids(v: Any, rules: list[str]) -> list[int]:
    items = v if isinstance(v, list) else [v]
    out: list[int] = []
    texty = not isinstance(v, list)
    for x in items:
        if isinstance(x, bool):
            continue
        if isinstance(x, int):
            out.append(x)
            continue
        texty = True
        if isinstance(x, dict):
            x = next((y for k, y in x.items() if _norm(str(k)) in ("id", "objectid")), None)
        if isinstance(x, float) and x.is_integer():
            out.append(int(x))
        elif isinstance(x, (str, int)):
            out += [int(m) for m in _ID.findall(str(x))]
    if texty and out:
        rules.append("ids_text")
    return out


# ---------------------------------------------------------------------------- relaxed JSON parser

class _Relaxed:
    """JSON as models write it by hand: 'single' or "double" quotes, bare keys, trailing commas,
    True/False/None, full-width ：and ，. Raises ValueError (one line) on anything else."""

    _WORD = re.compile(r"[A-Za-z_\u4e00-\u9fff][\w\u4e00-\u9fff\-]*")
    _NUM = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?%?")
    _CONST = {"true": True, "false": False, "null": None, "none": None}

    def __init__(self, s: str):
        self.s, self.i = s.replace("：", ":").replace("，", ","), 0

    def document(self) -> Any:
        v = self.value()
        self.ws()
        if self.i != len(self.s):
            raise ValueError(f"unexpected {self.s[self.i]!r} at {self.i}")
        return v

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t\r\n":
            self.i += 1

    def value(self) -> Any:
        self.ws()
        if self.i >= len(self.s):
            raise ValueError("ends early")
        c = self.s[self.i]
        if c == "{":
            return self.obj()
        if c == "[":
            return self.arr()
        if c in "\"'":
            return self.string()
        m = self._NUM.match(self.s, self.i)
        if m:
            self.i = m.end()
            t = m.group(0)
            return t if t.endswith("%") else (float(t) if any(ch in t for ch in ".eE") else int(t))
        m = self._WORD.match(self.s, self.i)
        if m:
            self.i = m.end()
            w = m.group(0)
            return self._CONST.get(w.lower(), w)
        raise ValueError(f"unexpected {c!r} at {self.i}")

    def obj(self) -> dict:
        self.i += 1
        out: dict = {}
        while True:
            self.ws()
            if self.peek("}"):
                return out
            key = self.string() if self.s[self.i:self.i + 1] in ("\"", "'") else self.word()
            self.ws()
            if not self.peek(":"):
                raise ValueError(f"expected ':' at {self.i}")
            out[key] = self.value()
            self.ws()
            if self.peek("}"):
                return out
            if not self.peek(","):
                raise ValueError(f"expected ',' or '}}' at {self.i}")

    def arr(self) -> list:
        self.i += 1
        out: list = []
        while True:
            self.ws()
            if self.peek("]"):
                return out
            out.append(self.value())
            self.ws()
            if self.peek("]"):
                return out
            if not self.peek(","):
                raise ValueError(f"expected ',' or ']' at {self.i}")

    def word(self) -> str:
        m = self._WORD.match(self.s, self.i)
        if not m:
            raise ValueError(f"expected a key at {self.i}")
        self.i = m.end()
        return m.group(0)

    def string(self) -> str:
        q = self.s[self.i]
        j = self.i + 1
        buf: list[str] = []
        while j < len(self.s):
            c = self.s[j]
            if c == "\\" and j + 1 < len(self.s):
                nxt = self.s[j + 1]
                buf.append({"n": "\n", "t": "\t", "r": "\r"}.get(nxt, nxt))
                j += 2
                continue
            if c == q:
                self.i = j + 1
                return "".join(buf)
            buf.append(c)
            j += 1
        raise ValueError("unterminated string")

    def peek(self, c: str) -> bool:
        if self.s.startswith(c, self.i):
            self.i += len(c)
            return True
        return False
