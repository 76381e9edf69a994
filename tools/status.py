"""`hazardctl status`: a live terminal view of a running pipeline (spec §8).

It reads what an operator's tools read: each stage's Prometheus `/metrics` endpoint and the Kafka
broker's consumer-group offsets. Rates and the end-to-end P95 come from the difference between two
scrapes, so the view shows what is happening now, not totals since start. A stage that does not
answer is DOWN, never a row of zeros.

The pure part (`Scrape` → `derive` → `Frame`) takes no clock and does no I/O; `poll` and `render`
are the shell.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, Field

from hazardctl.config import load_model

#: the stages a pipeline has, in pipeline order, and where `config/status.yaml` expects them
DEFAULT_STAGES = {
    "detect": "127.0.0.1:9101",
    "expand": "127.0.0.1:9103",
    "schedule": "127.0.0.1:9102",
    "consume": "127.0.0.1:9104",
    "llm-sim": "127.0.0.1:9105",
}
DEFAULT_GROUPS = ["hazardctl-expand", "hazardctl-schedule", "hazardctl-consume"]
#: end-to-end histograms (metric, span), best first: the first one some stage exports is shown
E2E_SOURCES = (("hazardctl_e2e_latency_seconds", "capture_to_result"),
               ("hazardctl_e2e_latency_seconds", "capture_to_alert"),
               ("hazardctl_consume_alert_latency_seconds", None))
#: the same minus the LLM call (what the pipeline itself adds), shown beside it when exported
E2E_EXCL_LLM = ("hazardctl_e2e_latency_seconds", "capture_to_result_excl_llm")

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, dict[Labels, float]]  # metric sample name → labels → value


class StatusConfig(BaseModel):
    """What `hazardctl status` watches (config/status.yaml)."""

    model_config = ConfigDict(extra="forbid")

    stages: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_STAGES),
                                   description="stage name → HOST:PORT (or URL) of its /metrics")
    groups: list[str] = Field(default_factory=lambda: list(DEFAULT_GROUPS),
                              description="Kafka consumer groups whose lag is shown")
    interval_s: float = Field(default=2.0, gt=0, le=60)
    timeout_s: float = Field(default=1.0, gt=0, le=10)


def load_status_config(path: str | Path | None) -> StatusConfig:
    return load_model(StatusConfig, path) if path else StatusConfig()


def metrics_url(address: str) -> str:
    if address.startswith(("http://", "https://")):
        return address if address.rstrip("/").endswith("/metrics") else address.rstrip("/") + "/metrics"
    return f"http://{address}/metrics"


# --- scraping (I/O) ------------------------------------------------------------------------------

def parse_metrics(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def scrape(address: str, timeout: float, token: str | None = None) -> Samples | None:
    """The stage's samples, or None when it does not answer (down)."""
    return fetch(address, timeout, token)[0]


def fetch(address: str, timeout: float, token: str | None = None) -> tuple[Samples | None, str | None]:
    """(samples, None), or (None, why) when the stage does not answer or refuses (401: it wants a token)."""
    req = urllib.request.Request(metrics_url(address))
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return parse_metrics(resp.read().decode("utf-8", "replace")), None
    except urllib.error.HTTPError as e:
        return None, f"HTTP {e.code}" + (" (its metrics need the token: --token-file)" if e.code == 401 else "")
    except (OSError, urllib.error.URLError, ValueError):
        return None, None


@dataclass
class Scrape:
    """One look at the whole pipeline at time `at`."""

    at: float
    stages: dict[str, Samples | None]
    lag: dict[str, dict[str, int]] | None  # None: the broker did not answer (or no Kafka configured)
    lag_error: str | None = None
    notes: list[str] = field(default_factory=list)  # why a stage that answered is still shown DOWN


def poll(cfg: StatusConfig, kafka_settings=None, tokens: dict[str, str] | None = None) -> Scrape:
    """One look; `tokens`: bearer tokens by stage name (consume's metrics need --token-file's)."""
    stages, notes = {}, []
    for name, addr in cfg.stages.items():
        stages[name], why = fetch(addr, cfg.timeout_s, (tokens or {}).get(name))
        if why:
            notes.append(f"{name}: {why}")
    lag, err = None, None
    if kafka_settings is not None and cfg.groups:
        from hazardctl.errors import HazardError, ServiceUnavailable
        from hazardctl.transports.kafka import consumer_group_lag

        try:
            lag = consumer_group_lag(kafka_settings, cfg.groups, timeout=cfg.timeout_s * 3)
        except ServiceUnavailable as e:
            err = f"broker unreachable: {e}"
        except HazardError as e:
            err = str(e)
    return Scrape(time.time(), stages, lag, err, notes)


# --- deriving what to show (pure) ----------------------------------------------------------------

def total(samples: Samples, name: str, **match: str) -> float:
    """Sum of a metric's samples whose labels include `match`."""
    return sum(v for labels, v in samples.get(name, {}).items() if all((k, val) in labels for k, val in match.items()))


def by_label(samples: Samples, name: str, label: str, **match: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, v in samples.get(name, {}).items():
        d = dict(labels)
        if label in d and all(d.get(k) == val for k, val in match.items()):
            out[d[label]] = out.get(d[label], 0.0) + v
    return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket counts {upper bound: count}."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    n = buckets[bounds[-1]]
    if n <= 0:
        return None
    rank, prev_bound, prev_count = q * n, 0.0, 0.0
    for b in bounds:
        c = buckets[b]
        if c >= rank:
            if math.isinf(b):
                return prev_bound
            return prev_bound + (b - prev_bound) * ((rank - prev_count) / max(c - prev_count, 1e-12))
        prev_bound, prev_count = b, c
    return prev_bound


def _buckets(samples: Samples | None, name: str, span: str | None = None) -> dict[float, float]:
    out: dict[float, float] = {}
    for labels, v in (samples or {}).get(f"{name}_bucket", {}).items():
        d = dict(labels)
        if span is None or d.get("span") == span:
            out[float(d["le"])] = out.get(float(d["le"]), 0.0) + v
    return out


def _delta(cur: dict[float, float], prev: dict[float, float] | None) -> dict[float, float]:
    return {b: c - (prev or {}).get(b, 0.0) for b, c in cur.items()}


@dataclass
class StageRow:
    name: str
    up: bool
    in_per_s: float | None = None
    out_per_s: float | None = None
    in_flight: float | None = None
    errors: float | None = None  # dead letters + delivery failures, total since the stage started
    dead_letters: float | None = None


@dataclass
class KeyRow:
    key: str
    state: str
    in_flight: float
    calls_per_s: float | None
    success: float | None
    cooldown_s: float
    last_error: str


@dataclass
class VariantRow:
    """schedule's results of one variant in one role (issue 22): a canary or shadow beside the default."""

    variant: str
    role: str  # primary (to operators) | shadow (to --shadow-out)
    results: float  # since the stage started
    per_s: float | None
    ok: float | None  # share of its results with status ok
    llm_p95_s: float | None


@dataclass
class Frame:
    at: float
    stages: list[StageRow]
    keys: list[KeyRow]
    lag: dict[str, dict[str, int]] | None
    lag_error: str | None
    e2e_p95_s: float | None
    e2e_source: str | None
    e2e_window: str = "since start"
    e2e_excl_llm_p95_s: float | None = None
    notes: list[str] = field(default_factory=list)
    variants: list[VariantRow] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def _rate(cur: float, prev: float | None, dt: float | None) -> float | None:
    if prev is None or not dt or dt <= 0:
        return None
    return max(0.0, cur - prev) / dt


def derive(cur: Scrape, prev: Scrape | None = None) -> Frame:
    """What the dashboard shows, from two scrapes (rates need both; the first frame has totals only)."""
    dt = cur.at - prev.at if prev else None
    rows, keys, variants = [], [], []
    for name, s in cur.stages.items():
        if s is None:
            rows.append(StageRow(name, up=False))
            continue
        p = prev.stages.get(name) if prev else None
        label = {"stage": name}
        ins = total(s, "hazardctl_messages_in_total", **label)
        outs = total(s, "hazardctl_messages_out_total", **label)
        dead = total(s, "hazardctl_dead_letters_total", **label)
        fails = total(s, "hazardctl_delivery_failures_total", **label)
        rows.append(StageRow(
            name, up=True,
            in_per_s=_rate(ins, total(p, "hazardctl_messages_in_total", **label) if p else None, dt),
            out_per_s=_rate(outs, total(p, "hazardctl_messages_out_total", **label) if p else None, dt),
            in_flight=total(s, "hazardctl_in_flight", **label), errors=dead + fails, dead_letters=dead))
        if "hazardctl_key_state" in s:
            keys = _keys(s, p, dt)
        if "hazardctl_variant_results_total" in s:
            variants = _variants(s, p, dt)
    e2e, source, window = None, None, "since start"
    for metric, span in E2E_SOURCES:
        found = _p95(cur, prev, metric, span)
        if found:
            (e2e, window), source = found, f"{metric}{{span={span}}}" if span else metric
            break
    excl = _p95(cur, prev, *E2E_EXCL_LLM)
    return Frame(cur.at, rows, keys, cur.lag, cur.lag_error, e2e, source, window, excl[0] if excl else None,
                 notes=list(cur.notes), variants=variants)


def _p95(cur: Scrape, prev: Scrape | None, metric: str, span: str | None) -> tuple[float, str] | None:
    """P95 of a histogram some stage exports: over the last interval when observations arrived in it,
    else since the stage started; None when no stage exports it (or it is empty)."""
    for name, s in cur.stages.items():
        now_b = _buckets(s, metric, span)
        if not now_b:
            continue
        if prev and prev.stages.get(name):
            q = histogram_quantile(0.95, _delta(now_b, _buckets(prev.stages[name], metric, span)))
            if q is not None:
                return q, f"last {cur.at - prev.at:.0f}s"
        q = histogram_quantile(0.95, now_b)
        return (q, "since start") if q is not None else None
    return None


def _keys(s: Samples, p: Samples | None, dt: float | None) -> list[KeyRow]:
    states: dict[str, str] = {}
    for labels, v in s.get("hazardctl_key_state", {}).items():
        d = dict(labels)
        if v >= 1:
            states[d["key"]] = d["state"]
    in_flight = by_label(s, "hazardctl_key_in_flight", "key")
    success = by_label(s, "hazardctl_key_success_ratio", "key")
    cooldown = by_label(s, "hazardctl_key_cooldown_seconds", "key")
    calls = by_label(s, "hazardctl_llm_calls_total", "key")
    prev_calls = by_label(p, "hazardctl_llm_calls_total", "key") if p else {}
    last: dict[str, str] = {}
    for labels, v in s.get("hazardctl_key_last_error", {}).items():
        d = dict(labels)
        if v >= 1:
            last[d["key"]] = d.get("error_class", "")
    return [KeyRow(k, states[k], in_flight.get(k, 0.0),
                   _rate(calls.get(k, 0.0), prev_calls.get(k, 0.0) if p else None, dt),
                   success.get(k), cooldown.get(k, 0.0), last.get(k, ""))
            for k in sorted(states)]


#: schedule's LLM-call histogram by variant and role (its `_bucket` series are read)
VARIANT_LLM = "hazardctl_variant_llm_latency_seconds"


def _variants(s: Samples, p: Samples | None, dt: float | None) -> list[VariantRow]:
    """Results per (variant, role): rate, ok share, and the P95 of its LLM calls (over the last interval)."""
    counts: dict[tuple[str, str], dict[str, float]] = {}
    for labels, v in s.get("hazardctl_variant_results_total", {}).items():
        d = dict(labels)
        counts.setdefault((d["variant"], d["role"]), {})[d["status"]] = v
    rows = []
    for (variant, role), by_status in sorted(counts.items()):
        n = sum(by_status.values())
        prev_n = total(p, "hazardctl_variant_results_total", variant=variant, role=role) if p else None
        match = {"variant": variant, "role": role}
        now_b = {float(dict(lb)["le"]): v for lb, v in s.get(VARIANT_LLM + "_bucket", {}).items()
                 if all(dict(lb).get(k) == val for k, val in match.items())}
        prev_b = {float(dict(lb)["le"]): v for lb, v in (p or {}).get(VARIANT_LLM + "_bucket", {}).items()
                  if all(dict(lb).get(k) == val for k, val in match.items())} if p else None
        p95 = histogram_quantile(0.95, _delta(now_b, prev_b)) if prev_b else None
        rows.append(VariantRow(variant, role, n, _rate(n, prev_n, dt), by_status.get("ok", 0.0) / n if n else None,
                               p95 if p95 is not None else histogram_quantile(0.95, now_b)))
    return rows


# --- rendering (rich) ----------------------------------------------------------------------------

def _num(v: float | None, fmt: str = "{:.1f}") -> str:
    return "—" if v is None else fmt.format(v)


def render(frame: Frame, cfg: StatusConfig):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    stages = Table(title="stages", title_justify="left", expand=False)
    for col in ("stage", "address", "state", "in/s", "out/s", "in flight", "errors", "dead letters"):
        stages.add_column(col, justify="right" if col not in ("stage", "address", "state") else "left")
    for r in frame.stages:
        state = Text("UP", style="bold green") if r.up else Text("DOWN", style="bold red")
        stages.add_row(r.name, cfg.stages.get(r.name, ""), state, _num(r.in_per_s), _num(r.out_per_s),
                       _num(r.in_flight, "{:.0f}"), _num(r.errors, "{:.0f}"), _num(r.dead_letters, "{:.0f}"))

    lag = Table(title="kafka consumer lag (from the broker)", title_justify="left")
    lag.add_column("group")
    lag.add_column("topic")
    lag.add_column("lag", justify="right")
    if frame.lag is None:
        lag.add_row(Text(frame.lag_error or "no Kafka configured", style="red"), "", "—")
    elif not frame.lag:
        lag.add_row("(no committed offsets for the watched groups)", "", "")
    for group, topics in sorted((frame.lag or {}).items()):
        for topic, n in sorted(topics.items()):
            lag.add_row(group, topic, Text(str(n), style="yellow" if n > 1000 else ""))

    keys = Table(title="key pool", title_justify="left")
    for col in ("key", "state", "in flight", "calls/s", "success", "cooldown s", "last error"):
        keys.add_column(col, justify="left" if col in ("key", "state", "last error") else "right")
    style = {"available": "green", "in_use": "green", "cooling": "yellow", "disabled": "red"}
    for k in frame.keys:
        keys.add_row(k.key, Text(k.state, style=style.get(k.state, "")), _num(k.in_flight, "{:.0f}"),
                     _num(k.calls_per_s), _num(None if k.success is None else 100 * k.success, "{:.1f} %"),
                     _num(k.cooldown_s, "{:.1f}"), k.last_error or "")
    if not frame.keys:
        keys.add_row("(schedule down or no keys)", "", "", "", "", "", "")
    tables = [stages, lag, keys]
    if frame.variants:  # schedule's variants (issue 22): only when it reports them
        variants = Table(title="variants", title_justify="left")
        for col in ("variant", "role", "results/s", "ok", "LLM P95", "results"):
            variants.add_column(col, justify="left" if col in ("variant", "role") else "right")
        for v in frame.variants:
            variants.add_row(v.variant, v.role, _num(v.per_s), _num(None if v.ok is None else 100 * v.ok, "{:.1f} %"),
                             _num(None if v.llm_p95_s is None else v.llm_p95_s * 1000, "{:.0f} ms"),
                             _num(v.results, "{:.0f}"))
        tables.append(variants)

    when = time.strftime("%H:%M:%S", time.localtime(frame.at))
    p95 = "—" if frame.e2e_p95_s is None else f"{frame.e2e_p95_s * 1000:.0f} ms"
    excl = "" if frame.e2e_excl_llm_p95_s is None else f", without the LLM call {frame.e2e_excl_llm_p95_s * 1000:.0f} ms"
    head = Text.assemble(("hazardctl status ", "bold"), f"{when}   end-to-end P95 ", (p95, "bold"), excl,
                         f"  ({frame.e2e_window}; {frame.e2e_source or 'no end-to-end histogram yet'})")
    return Group(head, *[Text(n, style="yellow") for n in frame.notes], *tables)


def run(cfg: StatusConfig, kafka_settings=None, *, once: bool = False, as_json: bool = False,
        iterations: int | None = None, tokens: dict[str, str] | None = None) -> Frame:
    """Show the live dashboard until Ctrl-C (or `iterations` frames); `once`: one frame and return.

    One frame still takes two scrapes `interval_s` apart, so its rates are real rates."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    prev = poll(cfg, kafka_settings, tokens)
    if once:
        time.sleep(cfg.interval_s)
        frame = derive(poll(cfg, kafka_settings, tokens), prev)
        if as_json:
            print(frame.to_json())
        else:
            console.print(render(frame, cfg))
        return frame
    frame = derive(prev)
    shown = 0
    with Live(render(frame, cfg), console=console, refresh_per_second=4, screen=False) as live:
        try:
            while iterations is None or shown < iterations:
                time.sleep(cfg.interval_s)
                cur = poll(cfg, kafka_settings, tokens)
                frame = derive(cur, prev)
                prev = cur
                live.update(render(frame, cfg))
                shown += 1
        except KeyboardInterrupt:
            pass
    return frame


def parse_stage_flags(flags: Iterable[str]) -> dict[str, str]:
    """`--stage NAME=HOST:PORT` flags → mapping (a flag without '=' is an error)."""
    from hazardctl.errors import ConfigError

    out = {}
    for f in flags:
        name, sep, addr = f.partition("=")
        if not sep or not name or not addr:
            raise ConfigError(f"--stage {f!r}: expected NAME=HOST:PORT, e.g. schedule=127.0.0.1:9102")
        out[name] = addr
    return out
