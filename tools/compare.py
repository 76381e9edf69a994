"""`hazardctl compare`: how a candidate variant's answers differ from the running one's on the same
tasks (issue 22): schedule's primary results next to its shadow results (or two replays).

The pure part (`compare(primary, shadow)` → `Agreement`) pairs results by task id and counts; the
shell reads results from a file or a Kafka topic, prints the report and draws the PNG. Pairs are
tasks that both sides answered `ok`; per-variant latency and tokens come from every result of a side.

- level confusion matrix: rows the primary's level, columns the candidate's; exact agreement, within
  one level, and how often the candidate is higher (escalates) or lower;
- risk-type overlap: the mean Jaccard index of the two sets of risk types (lower-cased), over pairs
  where either side named one, and the types each side names most;
- per variant: results, ok share, LLM call P50/P95 (times.llm_start → llm_end), tokens mean and P95.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

LEVELS = ("none", "low", "medium", "high")


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


@dataclass
class VariantStats:
    variant: str
    side: str  # from | to
    results: int
    ok: int
    llm_p50_s: float | None
    llm_p95_s: float | None
    tokens_mean: float | None
    tokens_p95: float | None


@dataclass
class Agreement:
    paired: int
    only_from: int
    only_to: int
    matrix: list[list[int]]
    """matrix[i][j]: tasks the `from` side judged LEVELS[i] and the `to` side LEVELS[j]"""
    exact: float | None
    within_one: float | None
    to_higher: float | None
    to_lower: float | None
    risk_type_overlap: float | None
    risk_type_pairs: int
    top_types: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    variants: list[VariantStats] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


def _latest(results: Iterable[dict]) -> dict[str, dict]:
    """One result per task id: the last one read (at-least-once delivery may repeat a task)."""
    out: dict[str, dict] = {}
    for r in results:
        if isinstance(r, dict) and r.get("task_id"):
            out[r["task_id"]] = r
    return out


def _variant_stats(results: dict[str, dict], side: str) -> list[VariantStats]:
    by: dict[str, list[dict]] = {}
    for r in results.values():
        by.setdefault(r.get("variant") or "-", []).append(r)
    rows = []
    for name, rs in sorted(by.items()):
        llm = [t["llm_end"] - t["llm_start"] for r in rs if (t := r.get("times") or {}).get("llm_start")
               and t.get("llm_end")]
        tokens = [float(r["tokens"]) for r in rs if r.get("tokens")]
        rows.append(VariantStats(name, side, len(rs), sum(r.get("status") == "ok" for r in rs), _pct(llm, 0.5),
                                 _pct(llm, 0.95), sum(tokens) / len(tokens) if tokens else None, _pct(tokens, 0.95)))
    return rows


def _types(r: dict) -> set[str]:
    return {t.strip().lower() for t in r.get("risk_types") or [] if isinstance(t, str) and t.strip()}


def compare(primary: Iterable[dict], candidate: Iterable[dict]) -> Agreement:
    a, b = _latest(primary), _latest(candidate)
    ok_a = {k: r for k, r in a.items() if r.get("status") == "ok" and r.get("level") in LEVELS}
    ok_b = {k: r for k, r in b.items() if r.get("status") == "ok" and r.get("level") in LEVELS}
    both = sorted(set(ok_a) & set(ok_b))
    matrix = [[0] * len(LEVELS) for _ in LEVELS]
    diffs, jaccard = [], []
    counts = {"from": Counter(), "to": Counter()}
    for tid in both:
        i, j = LEVELS.index(ok_a[tid]["level"]), LEVELS.index(ok_b[tid]["level"])
        matrix[i][j] += 1
        diffs.append(j - i)
        ta, tb = _types(ok_a[tid]), _types(ok_b[tid])
        counts["from"].update(ta)
        counts["to"].update(tb)
        if ta or tb:
            jaccard.append(len(ta & tb) / len(ta | tb))
    n = len(diffs)
    return Agreement(
        paired=n, only_from=len(set(ok_a) - set(ok_b)), only_to=len(set(ok_b) - set(ok_a)), matrix=matrix,
        exact=sum(d == 0 for d in diffs) / n if n else None,
        within_one=sum(abs(d) <= 1 for d in diffs) / n if n else None,
        to_higher=sum(d > 0 for d in diffs) / n if n else None,
        to_lower=sum(d < 0 for d in diffs) / n if n else None,
        risk_type_overlap=sum(jaccard) / len(jaccard) if jaccard else None, risk_type_pairs=len(jaccard),
        top_types={side: c.most_common(5) for side, c in counts.items()},
        variants=_variant_stats(a, "from") + _variant_stats(b, "to"))


# --- the shell: read, print, draw ------------------------------------------------------------------

def read_results(spec: str, endpoints=None, since: float = 0.0) -> list[dict]:
    """Results from a JSON-lines file or a Kafka topic (read from `since` to its end at open); lines that
    are not JSON objects are skipped and counted in the report's header by the caller."""
    from hazardctl.errors import ConfigError
    from hazardctl.transports import is_kafka, kafka_topic

    out: list[dict] = []
    if is_kafka(spec):
        endpoints.wait_ready([spec], 30.0)
        replay = endpoints.kafka.replay(kafka_topic(spec), since)
        try:
            for batch in replay.batches(timeout=300.0):
                out.extend(_parse(r.value) for r in batch)
        finally:
            replay.close()
    else:
        p = Path(spec)
        if not p.is_file():
            raise ConfigError(f"{spec}: file not found")
        with p.open("rb") as f:
            out.extend(_parse(line) for line in f if line.strip())
    return [r for r in out if r is not None and (since <= 0 or (r.get("times") or {}).get("result", since) >= since)]


def _parse(raw: bytes) -> dict | None:
    try:
        v = json.loads(raw)
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


def report(ag: Agreement, names: tuple[str, str]) -> str:
    """The agreement as text, for a terminal."""
    f = lambda v: "—" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    a, b = names
    lines = [f"{ag.paired} tasks answered ok by both ({ag.only_from} only by {a}, {ag.only_to} only by {b})",
             f"level: exact {f(ag.exact)}, within one level {f(ag.within_one)}; {b} higher {f(ag.to_higher)}, "
             f"lower {f(ag.to_lower)}",
             "", f"{'levels: ' + a + ' (rows) vs ' + b + ' (columns)':<40}", "        " + "".join(f"{x:>8}" for x in LEVELS)]
    for lvl, row in zip(LEVELS, ag.matrix):
        lines.append(f"{lvl:>8}" + "".join(f"{n:>8}" for n in row))
    lines += ["", f"risk types: mean overlap (Jaccard) {f(ag.risk_type_overlap)} over {ag.risk_type_pairs} pairs"]
    for side, name in (("from", a), ("to", b)):
        top = ", ".join(f"{t} ({n})" for t, n in ag.top_types.get(side, [])) or "—"
        lines.append(f"  {name}: {top}")
    lines += ["", f"{'variant':<16}{'side':<6}{'results':>8}{'ok':>8}{'LLM P50':>10}{'LLM P95':>10}"
                  f"{'tokens':>9}{'tok P95':>9}"]
    ms = lambda v: "—" if v is None else f"{v * 1000:.0f} ms"  # noqa: E731
    num = lambda v: "—" if v is None else f"{v:.0f}"  # noqa: E731
    for v in ag.variants:
        lines.append(f"{v.variant:<16}{v.side:<6}{v.results:>8}{f(v.ok / v.results if v.results else None):>8}"
                     f"{ms(v.llm_p50_s):>10}{ms(v.llm_p95_s):>10}{num(v.tokens_mean):>9}{num(v.tokens_p95):>9}")
    return "\n".join(lines)


def plot(path: Path, ag: Agreement, names: tuple[str, str], primary: list[dict], candidate: list[dict]) -> Path:
    """Confusion matrix (left) and the LLM-call latency of each side (right)."""
    from hazardctl.errors import ConfigError

    try:
        import matplotlib
    except ImportError:
        raise ConfigError("--png needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax1.imshow(ag.matrix, cmap="Blues")
    ax1.set_xticks(range(len(LEVELS)), LEVELS)
    ax1.set_yticks(range(len(LEVELS)), LEVELS)
    ax1.set_xlabel(names[1])
    ax1.set_ylabel(names[0])
    for i, row in enumerate(ag.matrix):
        for j, n in enumerate(row):
            ax1.text(j, i, str(n), ha="center", va="center", color="black" if n < max(map(max, ag.matrix)) / 2 else "white")
    exact = "—" if ag.exact is None else f"{ag.exact:.0%}"
    ax1.set_title(f"levels, {ag.paired} tasks: {exact} agree")
    for label, rs in ((names[0], primary), (names[1], candidate)):
        llm = [t["llm_end"] - t["llm_start"] for r in _latest(rs).values()
               if (t := r.get("times") or {}).get("llm_start") and t.get("llm_end")]
        if llm:
            ax2.hist(llm, bins=40, alpha=0.6, label=f"{label} (P95 {_pct(llm, 0.95):.2f} s)")
    ax2.set_xlabel("LLM call, seconds")
    ax2.set_ylabel("results")
    ax2.legend(fontsize=8)
    overlap = "—" if ag.risk_type_overlap is None else f"{ag.risk_type_overlap:.0%}"
    ax2.set_title(f"latency; risk-type overlap {overlap}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
