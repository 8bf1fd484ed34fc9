"""``examples/``: the Grafana dashboard only asks for metrics the exporter has, and the
Prometheus configuration and rules pass ``promtool``. (The dashboard's queries are also run
against a real Prometheus in test_prometheus_tools.)"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.metrics.metrics_examples import EXAMPLES, METRIC_NAME, dashboard, dashboard_queries
from tests.metrics.metrics_scraping import INTERFACE

PROMTOOL = shutil.which("promtool")
_SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")
SAMPLE_NAMES = {family + suffix for family in INTERFACE for suffix in _SUFFIXES}


def test_dashboard_is_importable_json() -> None:
    board = dashboard()
    panels = board["panels"]
    assert isinstance(panels, list)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    assert board["uid"] == "shardcorn-overview"
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"


def test_dashboard_asks_only_for_exported_metrics() -> None:
    seen = set()
    for title, expr in dashboard_queries():
        for name in METRIC_NAME.findall(expr):
            assert name in SAMPLE_NAMES, f"{title}: {name} is not exported"
            seen.add(name)
    # Every family is on the dashboard somewhere.
    for family in INTERFACE:
        assert any(name.startswith(family) for name in seen), family


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
@pytest.mark.parametrize(
    ("command", "file"), [("config", "prometheus.yml"), ("rules", "shardcorn-rules.yml")]
)
def test_promtool_accepts_the_examples(command: str, file: str) -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", command, file],
        cwd=EXAMPLES,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


def test_rules_ask_only_for_exported_metrics() -> None:
    text = (EXAMPLES / "shardcorn-rules.yml").read_text()
    for name in METRIC_NAME.findall(text):
        assert name in SAMPLE_NAMES, name
