"""The loadtest's figures: exact percentiles from raw samples, produced vs expected, asserts.

All latencies are per task from its `times` record. End to end = capture → the result on the
results topic (the broker's LogAppendTime; over pipes, when the loadtest read it from schedule's
stdout); a dead letter's end is when it landed. LLM-only = llm_end − llm_start (the HTTP exchange of
the attempt that answered). Retry time = the HTTP windows of the attempts that did not answer
(`times.llm_attempts`). The headline: per task, end to end − every HTTP window (our own time), and
its P95; the difference of the two P95s (e2e, LLM-only) stays beside it, named as what it is.
Percentiles are exact (nearest rank over every sample), never estimated from histogram buckets.

The accounting check that can fail: the task ids expand produced against the ones the same gate
predicted from the frames the cameras sent (`production`). The outcome identity (`identity`) is
bookkeeping: every task lands in exactly one outcome by construction.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from hazardctl.errors import ConfigError
from tools.loadtest.ledger import OUTCOMES, TaskRow

PCTS = (50, 90, 95, 99)

#: per-stage spans of the `times` record: (name, from, to); "topic" is the result landing on its topic
STAGES = (
    ("camera lag", "capture", "detect"),
    ("detections → expand", "published", "expand"),
    ("tasks → schedule", "expand", "dequeue"),
    ("wait for a key", "dequeue", "llm_start"),
    ("llm", "llm_start", "llm_end"),
    ("answer → result", "llm_end", "result"),
    ("result → topic", "result", "topic"),
)


def pct(values: list[float], p: float) -> float | None:
    """Exact percentile, nearest rank: the smallest sample with at least p % of samples at or below it."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def dist(values: list[float]) -> dict:
    d = {f"p{p}": pct(values, p) for p in PCTS}
    d["max"] = max(values) if values else None
    d["n"] = len(values)
    return d


def row_times(r: TaskRow) -> dict:
    t = dict(r.times)
    t["topic"] = r.on_topic
    if t.get("capture") is None:
        t["capture"] = r.capture
    return t


def http_windows(t: dict) -> tuple[float | None, float]:
    """(the answering attempt's HTTP time or None, the other attempts' HTTP time) from a `times` record.
    Without `llm_attempts` (a scheduler that does not record them) retries are unknown: 0."""
    llm = t["llm_end"] - t["llm_start"] if t.get("llm_start") is not None and t.get("llm_end") is not None else None
    attempts = [(a, b) for a, b in (t.get("llm_attempts") or []) if a is not None and b is not None]
    total = sum(b - a for a, b in attempts)
    if llm is None:
        return None, total
    return llm, max(0.0, total - llm) if attempts else 0.0


def latencies(rows: list[TaskRow]) -> dict:
    ok = [r for r in rows if r.outcome == "ok" and r.on_topic is not None]
    e2e, llm, over, retry = [], [], [], []
    stages: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    for r in ok:
        t = row_times(r)
        if t.get("capture") is None:
            continue
        e = t["topic"] - t["capture"]
        e2e.append(e)
        answer, retried = http_windows(t)
        if answer is not None:
            llm.append(answer)
            over.append(e - answer - retried)
            if retried > 0:
                retry.append(retried)
        for name, a, b in STAGES:
            if t.get(a) is not None and t.get(b) is not None:
                stages[name].append(t[b] - t[a])
    by_reason: dict[str, list[float]] = {}
    for r in ok:
        if r.capture is not None:
            by_reason.setdefault(r.reason or "?", []).append(r.on_topic - r.capture)
    by_outcome: dict[str, list[float]] = {}
    for r in rows:
        capture = r.capture if r.capture is not None else r.times.get("capture")
        if r.outcome not in (None, "ok") and r.on_topic is not None and capture is not None:
            by_outcome.setdefault(r.outcome, []).append(r.on_topic - capture)
    return {"e2e": dist(e2e), "llm": dist(llm), "e2e_minus_llm": dist(over), "retry": dist(retry),
            "e2e_by_reason": {k: dist(v) for k, v in sorted(by_reason.items())},
            "e2e_by_outcome": {k: dist(by_outcome[k]) for k in OUTCOMES if k in by_outcome},
            "stages": {name: dist(v) for name, v in stages.items()}}


def production(expected: dict[str, str], rows: list[TaskRow]) -> dict:
    """Tasks expand produced against the ones the gate predicted from the frames the cameras sent, by
    task id (deterministic from detection and group). `produced_vs_expected` = produced / expected
    (1.0 when the counts agree); `unexpected` = produced but not predicted (e.g. a gate that forgot its
    state on a restart sends groups again as new); `never_produced` = predicted but never produced (a
    detection that never became its tasks: lost, counted against success)."""
    produced = {r.task_id: r.reason for r in rows if r.offered_at is not None}
    missing = [tid for tid in expected if tid not in produced]
    extra = [tid for tid in produced if tid not in expected]

    def by_reason(ids: list[str], reasons: dict[str, str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for tid in ids:
            out[reasons.get(tid) or "?"] = out.get(reasons.get(tid) or "?", 0) + 1
        return dict(sorted(out.items()))

    ratio = len(produced) / len(expected) if expected else (1.0 if not produced else float("inf"))
    exact = not missing and not extra
    return {"expected": len(expected), "produced": len(produced), "as_predicted": len(produced) - len(extra),
            "unexpected": len(extra), "never_produced": len(missing), "produced_vs_expected": round(ratio, 6),
            "unexpected_by_reason": by_reason(extra, produced), "never_produced_by_reason": by_reason(missing, expected),
            "never_produced_tasks": [{"task_id": tid, "reason": expected[tid]} for tid in missing[:1000]], "exact": exact,
            "text": f"expand produced {len(produced)} tasks, the gate predicted {len(expected)} from the frames the "
                    f"cameras sent: {len(produced) - len(extra)} as predicted, {len(extra)} not predicted"
                    f"{' ' + str(by_reason(extra, produced)) if extra else ''}, {len(missing)} predicted but never "
                    f"produced{' ' + str(by_reason(missing, expected)) if missing else ''}"}


def identity(c: dict) -> dict:
    terms = sum(c[k] for k in OUTCOMES) + c["in_flight"]
    return {"offered": c["offered"], "sum": terms, "holds": terms == c["offered"] and c["unknown"] == 0,
            "text": f"offered {c['offered']} = ok {c['ok']} + failed {c['failed']} + stale {c['stale']} + shed "
                    f"{c['shed']} + dead letters {c['dead_letter']} + in flight {c['in_flight']}"
                    + ("" if terms == c["offered"] else f"  (terms add up to {terms})")
                    + (f"; {c['unknown']} results/dead letters of tasks never offered" if c["unknown"] else "")}


def per_key(rows: list[TaskRow], sim_stats: dict | None, key_states: dict[str, str]) -> list[dict]:
    out: dict[str, dict] = {}
    for name in (sim_stats or {}).get("keys", {}):
        out[name] = {"key": name}
    llm_by_key: dict[str, list[float]] = {}
    for r in rows:
        if r.key_name is None:
            continue
        k = out.setdefault(r.key_name, {"key": r.key_name})
        k["results_ok"] = k.get("results_ok", 0) + (r.outcome == "ok")
        if r.outcome == "ok" and r.times.get("llm_end") and r.times.get("llm_start"):
            llm_by_key.setdefault(r.key_name, []).append(r.times["llm_end"] - r.times["llm_start"])
    for name, k in out.items():
        s = (sim_stats or {}).get("keys", {}).get(name, {})
        k.setdefault("results_ok", 0)
        k.update(requests=s.get("requests"), sim_ok=s.get("ok"), http_429=s.get("rate_limited_429"),
                 http_401=s.get("unauthorized_401"), http_5xx=s.get("server_errors_5xx"),
                 max_in_1s=s.get("max_in_any_1s_window"), after_first_401=s.get("requests_after_first_401"),
                 llm_p95=pct(llm_by_key.get(name, []), 95), state=key_states.get(name))
    return sorted(out.values(), key=lambda k: k["key"])


def per_second(times: list[float], start: float, seconds: int) -> list[int]:
    out = [0] * max(1, seconds)
    for t in times:
        i = int(t - start)
        if 0 <= i < len(out):
            out[i] += 1
    return out


# -- asserts ------------------------------------------------------------------------------------------

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}
ASSERT_RE = re.compile(r"^\s*([a-z0-9_.]+)\s*(<=|>=|==|<|>)\s*(-?[0-9.]+(?:e-?\d+)?)\s*$")


@dataclass(frozen=True)
class Assert:
    text: str
    name: str
    op: str
    value: float


def parse_assert(text: str) -> Assert:
    m = ASSERT_RE.match(text)
    if not m:
        raise ConfigError(f"--assert {text!r}: expected NAME OP NUMBER, e.g. 'e2e.p95<2.0' or 'success>=0.99'")
    return Assert(text, m.group(1), m.group(2), float(m.group(3)))


def flat_figures(s: dict) -> dict[str, float]:
    """Every figure an --assert may name: e2e.p95, llm.p99, e2e_minus_llm.p95 (per task, the headline),
    e2e_over_llm.p95 (difference of percentiles), retry.p95, e2e_new.p95 (by the task's reason: new,
    changed, refresh, suspect), e2e_failed.p95 (by outcome: failed, stale, shed, dead_letter), stage
    names (spaces → _), produced_vs_expected, unexpected, never_produced, success, achieved,
    offered_rate, in_flight, lost, failed, stale, shed, dead_letters, late, ..."""
    f: dict[str, float] = {}
    lat = s["latency"]
    for group in ("e2e", "llm", "e2e_minus_llm", "retry", "alert"):
        for k, v in lat.get(group, {}).items():
            if v is not None:
                f[f"{group}.{k}"] = v
    for reason, d in [*lat.get("e2e_by_reason", {}).items(), *lat.get("e2e_by_outcome", {}).items()]:
        for k, v in d.items():
            if v is not None:
                f[f"e2e_{reason}.{k}"] = v
    for name, d in lat["stages"].items():
        for k, v in d.items():
            if v is not None:
                f[f"stage.{re.sub(r'[^a-z0-9]+', '_', name).strip('_')}.{k}"] = v
    c = s["counts"]
    prod = s.get("production") or {}
    if prod:
        f.update(produced_vs_expected=prod["produced_vs_expected"], unexpected=prod["unexpected"],
                 never_produced=prod["never_produced"], expected=prod["expected"])
    f.update(success=s["success"], achieved=s["rates"]["achieved_per_s"], offered_rate=s["rates"]["tasks_per_s"],
             in_flight=c["in_flight"], lost=c["in_flight"] + prod.get("never_produced", 0), failed=c["failed"],
             stale=c["stale"], shed=c["shed"],
             dead_letters=c["dead_letter"], ok=c["ok"], offered=c["offered"], late=s["cameras"]["late"],
             duplicates=c["duplicate_results"], identity=1.0 if s["identity"]["holds"] else 0.0)
    for k, v in (s.get("motion") or {}).items():  # --motion: calls_per_camera_s, hazard_recall, suspect_ok_share, ...
        if v is not None:
            f[k] = v
    if f.get("e2e.p95") is not None and f.get("llm.p95") is not None:
        f["e2e_over_llm.p95"] = f["e2e.p95"] - f["llm.p95"]
    return f


def check_asserts(summary: dict, asserts: list[Assert]) -> list[dict]:
    figures = flat_figures(summary)
    out = []
    for a in asserts:
        value = figures.get(a.name)
        if value is None:
            known = ", ".join(sorted(figures))
            out.append({"assert": a.text, "value": None, "ok": False, "why": f"no figure {a.name!r}; known: {known}"})
        else:
            out.append({"assert": a.text, "value": value, "ok": bool(OPS[a.op](value, a.value))})
    return out
