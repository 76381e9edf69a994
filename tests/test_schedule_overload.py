"""The schedule stage under overload, against the real simulated provider (issues 8, 16): tasks go by
rank (suspect > new > changed > refresh) when the keys are the bottleneck, tasks that cannot be served
in time are answered `stale` (shed) with a reason, never dropped; a full stage reads past waiting
refreshes so suspects behind them are served; the start-up WARNING for an over-claimed account."""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY

from hazardctl.keys import Account, KeysConfig, LLMKey
from tests.test_schedule_stage import run_stage, tasks
from tools.llm_sim import SimConfig, SimKey, SimServer


def test_refreshes_absorb_the_shortfall_and_every_task_is_accounted_for(tmp_path):
    # one 5-qps key, 3 s deadlines: ~10 calls fit; 36 refreshes arrive BEFORE 8 new tasks
    items = tasks(44, deadline_s=3.0)
    items = [t.model_copy(update={"reason": "refresh" if i < 36 else ("new" if i % 2 else "changed")})
             for i, t in enumerate(items)]
    with SimServer(SimConfig(keys=[SimKey(name="k0", api_key="secret-0", qps=5)], latency="fixed:0.1", port=0,
                             limiter="sliding-window")) as sim:
        keys = KeysConfig(keys=[LLMKey(name="k0", api_key="secret-0", qps_limit=5, base_url=sim.base_url)])
        results, dead, stats = run_stage(tmp_path, keys, items)
        refused = sim.stats()["totals"]["rate_limited_429"]
    by_id = {r["task_id"]: r for r in results}
    assert sorted(by_id) == sorted(t.task_id for t in items)  # every task answered exactly once
    urgent = [by_id[t.task_id] for t in items if t.reason != "refresh"]
    refresh = [by_id[t.task_id] for t in items if t.reason == "refresh"]
    assert all(r["status"] == "ok" for r in urgent)  # served first although they came last
    assert {r["status"] for r in refresh} == {"ok", "stale"}
    shed = [r for r in refresh if r["status"] == "stale"]
    assert shed and all(r["error_class"] == "shed" and r["attempts"] == 0 for r in shed)
    assert stats.stale == len(shed) and not dead  # shed tasks are results, not dead letters
    assert refused == 0


def test_an_account_over_claimed_by_its_keys_is_reported_at_start(tmp_path, caplog):
    with SimServer(SimConfig(keys=[SimKey(name=f"k{i}", api_key=f"secret-{i}", qps=5) for i in range(2)],
                             latency="fixed:0.02", port=0)) as sim:
        keys = KeysConfig(accounts={"acct": Account(qps=6)},
                          keys=[LLMKey(name=f"k{i}", api_key=f"secret-{i}", qps_limit=5, account="acct",
                                       base_url=sim.base_url) for i in range(2)])
        with caplog.at_level(logging.WARNING, logger="hazardctl"):
            results, _, _ = run_stage(tmp_path, keys, tasks(3))
    assert all(r["status"] == "ok" for r in results)
    assert "keys of account acct claim 10 qps, account allows 6: the pool will do <= 6/s" in caplog.text


def shed_count(reason: str) -> float:
    return REGISTRY.get_sample_value("hazardctl_schedule_shed_total", {"reason": reason}) or 0.0


def _ranked(items, reasons):
    return [t.model_copy(update={"reason": r}) for t, r in zip(items, reasons)]


def test_the_key_serves_suspect_then_new_then_changed_then_refresh(tmp_path):
    """One 5-qps key, 3 s deadlines, the most urgent tasks last in the input: after the first call (it
    goes out before the rest is queued) the provider sees them strictly by rank; suspects and new
    groups are all answered, the shortfall falls on refreshes first."""
    reasons = ["refresh"] * 10 + ["changed"] * 6 + ["new"] * 4 + ["suspect"] * 4
    items = _ranked(tasks(len(reasons), deadline_s=3.0), reasons)
    shed_before = {o: shed_count(o) for o in ("suspect", "new", "changed", "refresh")}
    with SimServer(SimConfig(keys=[SimKey(name="k0", api_key="secret-0", qps=5)], latency="fixed:0.1", port=0,
                             limiter="sliding-window")) as sim:
        keys = KeysConfig(keys=[LLMKey(name="k0", api_key="secret-0", qps_limit=5, base_url=sim.base_url)])
        results, dead, stats = run_stage(tmp_path, keys, items)
        refused = sim.stats()["totals"]["rate_limited_429"]
    reason = {t.task_id: t.reason for t in items}
    assert sorted(r["task_id"] for r in results) == sorted(reason)  # every task answered exactly once
    called = sorted((r for r in results if r["attempts"]), key=lambda r: r["times"]["llm_start"])
    order = ["suspect", "new", "changed", "refresh"]
    ranks = [order.index(reason[r["task_id"]]) for r in called[1:]]
    assert ranks == sorted(ranks) and ranks[0] == 0  # by rank, suspects first
    status = {o: [r["status"] for r in results if reason[r["task_id"]] == o] for o in order}
    assert set(status["suspect"]) == set(status["new"]) == {"ok"}
    assert "stale" in status["refresh"]
    shed_share = [status[o].count("stale") / len(status[o]) for o in order]
    assert shed_share == sorted(shed_share)  # the lower the rank, the larger the share shed
    # hazardctl_schedule_shed_total{reason} counts them by rank
    assert {o: shed_count(o) - shed_before[o] for o in order} == {o: status[o].count("stale") for o in order}
    assert not dead and refused == 0


def test_a_full_stage_reads_past_its_refreshes_so_suspects_behind_them_are_served(tmp_path):
    """Six workers, 30 refreshes ahead of 5 suspects in the input, one 5-qps key, 4 s deadlines. Paused
    behind the refreshes, the suspects would be read only when ~24 refreshes had gone (~5 s at 5/s):
    stale. The stage reads on while refreshes wait for a key; each task read past the cap makes a
    refresh give way (a suspect takes a waiting refresh's place, a refresh gives way itself)."""
    reasons = ["refresh"] * 30 + ["suspect"] * 5
    items = _ranked(tasks(len(reasons), deadline_s=4.0), reasons)
    with SimServer(SimConfig(keys=[SimKey(name="k0", api_key="secret-0", qps=5)], latency="fixed:0.1", port=0,
                             limiter="sliding-window")) as sim:
        keys = KeysConfig(keys=[LLMKey(name="k0", api_key="secret-0", qps_limit=5, base_url=sim.base_url)])
        results, dead, stats = run_stage(tmp_path, keys, items, workers=6)
    reason = {t.task_id: t.reason for t in items}
    assert sorted(r["task_id"] for r in results) == sorted(reason)
    suspects = [r for r in results if reason[r["task_id"]] == "suspect"]
    assert [r["status"] for r in suspects] == ["ok"] * 5
    refreshes = [r for r in results if reason[r["task_id"]] == "refresh"]
    given_way = [r for r in refreshes if r["status"] == "stale"]
    assert len(given_way) >= 20 and all(r["error_class"] == "shed" and r["attempts"] == 0 for r in given_way)
    assert stats.stale == len(given_way) and not dead
