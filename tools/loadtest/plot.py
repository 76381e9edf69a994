"""The loadtest picture: latency of every task over time, and throughput per second, chaos marked."""

from __future__ import annotations

from pathlib import Path


def plot(path: Path, s: dict, ledger, start: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in ledger.rows() if r.on_topic and r.capture]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    ok = [r for r in rows if r.outcome == "ok"]
    ax1.scatter([r.capture - start for r in ok], [r.on_topic - r.capture for r in ok], s=3, label="end to end (ok)",
                color="tab:blue")
    llm = [r for r in ok if r.times.get("llm_end") and r.times.get("llm_start")]
    ax1.scatter([r.capture - start for r in llm], [r.times["llm_end"] - r.times["llm_start"] for r in llm], s=2,
                label="LLM call", color="tab:orange", alpha=0.5)
    bad = [r for r in rows if r.outcome != "ok"]
    if bad:
        ax1.scatter([r.capture - start for r in bad], [r.on_topic - r.capture for r in bad], s=10, marker="x",
                    label="not ok", color="tab:red")
    e95, l95 = s["latency"]["e2e"]["p95"], s["latency"]["llm"]["p95"]
    if e95:
        ax1.axhline(e95, color="tab:blue", lw=0.8, ls="--", label=f"e2e P95 {e95:.2f} s")
    if l95:
        ax1.axhline(l95, color="tab:orange", lw=0.8, ls="--", label=f"LLM P95 {l95:.2f} s")
    ax1.set_ylabel("seconds (by capture time)")
    ax1.legend(loc="upper right", fontsize=8)
    cfg = s["config"]
    ax1.set_title(f"{cfg['cameras']} cameras × {cfg['rate']:g}/s over {cfg['transport']}, {cfg['keys']} keys × "
                  f"{cfg['qps_per_key']:g} qps — success {s['success']:.2%}, achieved {s['rates']['achieved_per_s']}/s")
    tl = s["timeline"]
    xs = list(range(len(tl["tasks"])))
    ax2.plot(xs, tl["tasks"], label="tasks offered/s", color="tab:gray", drawstyle="steps-post")
    ax2.plot(xs, tl["ok"], label="ok results/s", color="tab:green", drawstyle="steps-post")
    if any(tl["not_ok"]):
        ax2.plot(xs, tl["not_ok"], label="not ok/s", color="tab:red", drawstyle="steps-post")
    ax2.axhline(s["rates"]["design_tasks_per_s"], color="k", lw=0.6, ls=":", label="design rate")
    ax2.set_xlabel("seconds since the cameras started")
    ax2.set_ylabel("per second")
    ax2.legend(loc="upper right", fontsize=8)
    for ch in s["chaos"]:
        for ax in (ax1, ax2):
            ax.axvline(ch["at"], color="tab:red", lw=1.2)
        ax1.annotate(ch["name"], (ch["at"], ax1.get_ylim()[1]), color="tab:red", fontsize=9, va="top",
                     xytext=(3, -3), textcoords="offset points")
    ax2.axvline(cfg["duration_s"], color="k", lw=0.6, ls="--")
    last = max([i for i, v in enumerate(tl["ok"]) if v] + [i for i, v in enumerate(tl["not_ok"]) if v] + [0])
    ax2.set_xlim(-1, max(cfg["duration_s"], last + 1) + 2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
