"""The Grafana dashboard (deploy/grafana/flowline.json) is built from the series Flowline
exports: every expression names only those, so no panel stays empty for a misspelt name."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from workflow_core import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "flowline.json"
PROMQL_WORDS = frozenset(
    {"sum", "max", "min", "avg", "rate", "increase", "histogram_quantile", "time", "by", "le"}
)
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def expressions(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in expressions(value)]
    if isinstance(node, list):
        return [e for item in node for e in expressions(item)]
    return []


def series_named(expr: str) -> set[str]:
    """The series an expression reads: its identifiers, less label matchers, grouping labels,
    durations, numbers, strings and PromQL's own words."""
    bare = re.sub(r'"[^"]*"', "", expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)  # label matchers
    bare = re.sub(r"\bby\s*\([^)]*\)", "", bare)  # grouping labels
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # ranges
    return {word for word in _IDENTIFIER.findall(bare) if word not in PROMQL_WORDS}


ALL = expressions(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def test_the_dashboard_has_its_panels() -> None:
    assert len(ALL) >= 15
    for wanted in (
        "flowline_stream_lag",
        "flowline_stream_pending",
        "flowline_outbox_unpublished",
        "flowline_runs",
        "flowline_action_attempts_total",
        "flowline_action_duration_seconds_bucket",
        "flowline_emails_total",
        "flowline_http_requests_total",
        "flowline_http_request_duration_seconds_bucket",
        "flowline_dependency_up",
    ):
        assert any(wanted in series_named(expr) for expr in ALL), wanted


@pytest.mark.parametrize("expr", ALL)
def test_an_expression_names_only_series_flowline_exports(expr: str) -> None:
    named = series_named(expr)
    assert named, expr
    assert named <= metrics.exported_names(), named - metrics.exported_names()


def test_the_parser_itself() -> None:
    expr = 'sum by (le, route) (rate(flowline_x_bucket{route="/a", le=~"1"}[5m])) / time()'
    assert series_named(expr) == {"flowline_x_bucket"}
    assert "flowline_nope_total" not in metrics.exported_names()
    assert {"flowline_emails_total", "flowline_runs"} <= metrics.exported_names()
