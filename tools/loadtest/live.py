"""The live view while a loadtest runs: offered vs achieved, in flight, success, running P95, keys.

On a terminal it is a rich Live panel redrawn twice a second; otherwise (CI, a pipe) one progress
line every 5 s. Per-key state comes from the simulator's /stats (what each key saw) and schedule's
/metrics (the key pool's own state: available, cooling, disabled).
"""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from tools.loadtest.report import pct

WINDOW_S = 10.0


class LiveView:
    def __init__(self, console: Console, opts, start: float, cameras, ledger, sim, pipeline, *, enabled: bool | None):
        self.console, self.o, self.start = console, opts, start
        self.cameras, self.ledger, self.sim, self.pipeline = cameras, ledger, sim, pipeline
        self.enabled = console.is_terminal if enabled is None else enabled
        self._live: Live | None = None
        self._last = 0.0
        self._states: dict[str, str] = {}
        self._sim: dict = {}

    def __enter__(self) -> "LiveView":
        if self.enabled:
            self._live = Live(console=self.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(self, elapsed: float) -> None:
        every = 0.5 if self.enabled else 5.0
        if time.time() - self._last < every:
            return
        self._last = time.time()
        figures = self.figures(elapsed)
        if self._live is not None:
            self._live.update(self.render(figures))
        else:
            self.console.print(self.line(figures), highlight=False)

    def figures(self, elapsed: float) -> dict:
        now = time.time()
        c = self.ledger.counts()
        recent = self.ledger.recent_ok(now - WINDOW_S)
        e2e = [r.on_topic - r.capture for r in recent if r.capture]
        llm = [r.times["llm_end"] - r.times["llm_start"] for r in recent
               if r.times.get("llm_end") and r.times.get("llm_start")]
        cs = self.cameras.stats
        with cs.lock:
            frames, late, predicted = cs.frames, cs.late, cs.predicted_tasks
        span = max(1.0, min(WINDOW_S, elapsed))
        with self.ledger.lock:
            offered_recent = sum(1 for r in self.ledger.tasks.values() if r.offered_at and r.offered_at >= now - span)
        self._sim = self.sim.stats() or self._sim
        if self.enabled:
            from tools.loadtest.run import key_states

            self._states = key_states(self.pipeline.metrics_text("schedule")) or self._states
        done = c["ok"] + c["failed"] + c["stale"] + c["shed"] + c["dead_letter"]
        return {"elapsed": elapsed, "frames": frames, "late": late, "predicted": predicted, "counts": c,
                "offered_rate": offered_recent / span, "achieved_rate": len(recent) / span,
                "success": c["ok"] / done if done else None, "e2e_p95": pct(e2e, 95), "llm_p95": pct(llm, 95),
                "dead": self.pipeline.dead()}

    def line(self, f: dict) -> str:
        c = f["counts"]
        p = f"{f['e2e_p95']:.2f}" if f["e2e_p95"] is not None else "-"
        s = f"{f['success']:.2%}" if f["success"] is not None else "-"
        dead = f"  DOWN: {','.join(f['dead'])}" if f["dead"] else ""
        return (f"[{f['elapsed']:5.1f}s] frames {f['frames']} (late {f['late']})  tasks {c['offered']} "
                f"(offered {f['offered_rate']:.1f}/s)  ok {c['ok']} ({f['achieved_rate']:.1f}/s)  failed {c['failed']} "
                f"stale {c['stale']} shed {c['shed']} dl {c['dead_letter']}  in flight {c['in_flight']}  "
                f"success {s}  e2e p95 {p} s{dead}")

    def render(self, f: dict):
        c = f["counts"]
        o = self.o
        head = Table.grid(padding=(0, 2))
        head.add_column(style="bold")
        head.add_column()
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        head.add_row("elapsed", f"{f['elapsed']:.0f} / {o.duration:g} s   ({o.cameras} cameras × {o.rate:g}/s, "
                                f"{o.transport}, {o.keys} keys × {o.qps_per_key:g} qps)")
        head.add_row("cameras", f"{f['frames']} frames, {f['late']} late; {f['predicted']} tasks expected by the gate")
        head.add_row("offered / achieved", f"{f['offered_rate']:.1f} tasks/s → {f['achieved_rate']:.1f} ok/s "
                                           f"(last {WINDOW_S:g} s; design {o.cameras * o.rate:g}/s)")
        head.add_row("outcomes", f"offered {c['offered']}  ok {c['ok']}  failed {c['failed']}  stale {c['stale']}  "
                                 f"shed {c['shed']}  dead letters {c['dead_letter']}  in flight {c['in_flight']}")
        head.add_row("success", fmt(f["success"], ".2%"))
        head.add_row("running P95", f"e2e {fmt(f['e2e_p95'], '.2f')} s   LLM {fmt(f['llm_p95'], '.2f')} s")
        if f["dead"]:
            head.add_row("[red]down[/]", ", ".join(f["dead"]))
        keys = Table(title="keys", title_justify="left", show_edge=False, pad_edge=False)
        for col in ("key", "state", "requests", "ok", "429", "401", "5xx", "in flight"):
            keys.add_column(col, justify="right" if col not in ("key", "state") else "left")
        for name, k in sorted((self._sim or {}).get("keys", {}).items()):
            state = self._states.get(name, "")
            style = {"disabled": "red", "cooling": "yellow"}.get(state, "")
            keys.add_row(name, f"[{style}]{state}[/]" if style else state, str(k.get("requests")), str(k.get("ok")),
                         str(k.get("rate_limited_429")), str(k.get("unauthorized_401")),
                         str(k.get("server_errors_5xx")), str(k.get("in_flight")))
        return Group(head, keys)
