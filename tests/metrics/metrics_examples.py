"""The examples in ``examples/``, as the tests read them: the dashboard's PromQL, resolved."""

from __future__ import annotations

import json
import re
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DASHBOARD = EXAMPLES / "grafana-dashboard.json"

# What Grafana substitutes before a query reaches Prometheus.
_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "5m",
    "$job": "shardcorn",
    "$instance": ".*",
}
METRIC_NAME = re.compile(r"\bshardcorn_[a-z_]+")


def dashboard() -> dict[str, object]:
    loaded: dict[str, object] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables filled in) for every query."""
    panels = dashboard()["panels"]
    assert isinstance(panels, list)
    out = []
    for panel in panels:
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in _VARIABLES.items():
                expr = expr.replace(name, value)
            out.append((panel["title"], expr))
    return out
