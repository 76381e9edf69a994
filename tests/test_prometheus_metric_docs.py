"""docs/metrics.md documents every metric the code defines (name, type, labels, meaning in one table row).

The names are read from the source (every "hazardctl_..." string literal in hazardctl/, stages/ and
tools/), so a metric added anywhere without a line in the doc fails here with its name and file.
"""

from __future__ import annotations

import re

from tests.conftest import ROOT

DOC = ROOT / "docs" / "metrics.md"
NAME = re.compile(r'"(hazardctl_[a-z0-9_]+)"')
ROW = re.compile(r"^\| `(hazardctl_[a-z0-9_]+)` \| (counter|gauge|histogram) \| [^|]+ \| [^|]+ \|$", re.M)


def defined() -> dict[str, str]:
    out: dict[str, str] = {}
    for folder in ("hazardctl", "stages", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for name in NAME.findall(path.read_text("utf-8")):
                out.setdefault(name, str(path.relative_to(ROOT)))
    return out


def test_every_metric_in_the_code_has_a_row_in_docs_metrics_md():
    rows = set(ROW.findall(DOC.read_text("utf-8")))
    documented = {name for name, _type in rows}
    names = defined()
    assert len(names) > 40, names  # the scan found the stages' metrics
    # a counter may be written without _total in the code (a CounterMetricFamily): Prometheus adds it
    missing = {n: f for n, f in names.items() if n not in documented and f"{n}_total" not in documented}
    assert not missing, f"document these metrics in docs/metrics.md (name, type, labels, meaning): {missing}"
    counters = {name for name, kind in rows if kind == "counter"}
    assert all(n.endswith("_total") for n in counters), sorted(n for n in counters if not n.endswith("_total"))
