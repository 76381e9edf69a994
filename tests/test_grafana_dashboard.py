"""The Grafana files in deploy/grafana/: no Grafana package exists here, so the dashboard JSON is
checked for the structure Grafana needs to load it (schemaVersion, unique panel ids, grid positions,
targets on the provisioned Prometheus datasource), every expression is parsed by promtool (as a
recording rule), and the expressions are exactly those tests/test_prometheus.py evaluates against
the running pipeline (`dashboard_exprs`, which must see every target of every panel). The
provisioning files point Grafana at that dashboard folder and that datasource uid.
"""

from __future__ import annotations

import json

import yaml

from tests.conftest import ROOT
from tests.test_prometheus import DASHBOARD, dashboard_exprs, need_prometheus, promtool

GRAFANA = ROOT / "deploy" / "grafana"
PANEL_TYPES = {"row", "timeseries", "table", "stat", "gauge", "bargauge", "state-timeline", "heatmap", "text"}


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(d: dict) -> list[dict]:
    return [q for p in d["panels"] for q in [p, *p.get("panels", [])]]


def test_dashboard_is_valid_grafana_dashboard_json():
    d = load()
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36  # Grafana 9+ layout
    assert d["uid"] and d["title"] and isinstance(d["version"], int)
    assert {"time", "templating", "annotations", "panels"} <= set(d)
    panels = all_panels(d)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids), ids
    occupied: set[tuple[int, int]] = set()
    for p in panels:
        assert p["type"] in PANEL_TYPES and p["title"], p
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0 and g["y"] >= 0, (p["title"], g)
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & occupied, f"panel {p['title']!r} overlaps another"
        occupied |= cells
        if p["type"] == "row":
            assert "targets" not in p
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "hazardctl-prometheus"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == "hazardctl-prometheus", (p["title"], t)
            assert "$" not in t["expr"], f"{p['title']}: Grafana variables would not evaluate in the Prometheus test"


def test_dashboard_has_the_plans_panels():
    """Kafka lag; key-pool usage and health per key; end-to-end P50/P95/P99; throughput and errors per
    stage; per-stage latency from the `times` record."""
    exprs = dashboard_exprs()
    text = "\n".join(exprs)
    assert "hazardctl_kafka_consumer_lag" in text
    assert any("hazardctl_llm_calls_total" in e and "key" in e for e in exprs)
    assert any("hazardctl_key_success_ratio" in e for e in exprs)
    assert any("hazardctl_key_state" in e for e in exprs)
    for q in ("0.50", "0.95", "0.99"):
        assert any(f"histogram_quantile({q}" in e and "hazardctl_e2e_latency_seconds_bucket" in e for e in exprs), q
    assert any("hazardctl_messages_out_total" in e and "stage" in e for e in exprs)
    assert any("hazardctl_dead_letters_total" in e and "stage" in e for e in exprs)
    assert any("hazardctl_hop_latency_seconds_bucket" in e and "hop" in e for e in exprs)


def test_prometheus_test_evaluates_every_target():
    """`dashboard_exprs` (what tests/test_prometheus.py evaluates) covers every target of every panel."""
    targets = [t["expr"] for p in all_panels(load()) for t in p.get("targets", [])]
    assert targets and set(targets) == set(dashboard_exprs())


def test_every_dashboard_expression_parses(tmp_path):
    need_prometheus()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(dashboard_exprs())]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    out = promtool("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


def test_provisioning_loads_this_dashboard_from_this_datasource():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["apiVersion"] == 1
    [prom] = ds["datasources"]
    assert prom["type"] == "prometheus" and prom["uid"] == "hazardctl-prometheus" and prom["url"].startswith("http")
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "hazardctl.yml").read_text())
    assert prov["apiVersion"] == 1
    [provider] = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    assert sorted(p.name for p in (GRAFANA / "dashboards").glob("*.json")) == [DASHBOARD.name]
