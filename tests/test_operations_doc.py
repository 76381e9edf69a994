"""docs/operations.md keeps up with what it describes: every alert of deploy/prometheus/alerts.yml and
every unit of deploy/systemd/ is explained there (an alert added without a 'what to do' fails here)."""

from __future__ import annotations

import yaml

from tests.conftest import ROOT

DOC = (ROOT / "docs/operations.md").read_text()


def test_every_alert_is_explained():
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert alerts
    missing = [a for a in alerts if f"`{a}`" not in DOC]
    assert not missing, f"docs/operations.md does not explain: {missing}"


def test_every_unit_is_described():
    units = [p.name.replace("@.service", "@") for p in (ROOT / "deploy/systemd").iterdir()]
    missing = [u for u in units if u.replace(".service", "") not in DOC]
    assert not missing, f"docs/operations.md does not mention: {missing}"
