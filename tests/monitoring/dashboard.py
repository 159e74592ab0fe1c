"""The PromQL expressions of the shipped Grafana dashboard, and the metric names they refer to."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from tests.monitoring.prom import DASHBOARD

# What Grafana puts in place of the dashboard's variables when "All" is selected.
ALL_VALUES = {"$model": ".*", "$endpoint": ".*"}
# Series that no recording rule writes but Prometheus itself does.
BUILTIN_SERIES = {"ALERTS"}
_KEYWORDS = {"offset", "bool", "and", "or", "unless", "inf", "nan"}
_STRIP = [
    re.compile(r'"(?:[^"\\]|\\.)*"'),  # string literals
    re.compile(r"\{[^}]*\}"),  # label matchers
    re.compile(r"\[[^\]]*\]"),  # range and subquery selectors
    re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE),
]
_TOKEN = re.compile(r"\d[\w.]*|([A-Za-z_:][\w:]*)(\s*\()?")


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL as Grafana sends it with every variable set to All) for every target."""
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in ALL_VALUES.items():
                expr = expr.replace(variable, value)
            found.append((panel["title"], expr))
    return found


def variable_metrics(dashboard: dict[str, Any]) -> list[str]:
    """The metric of each label_values(<metric>, <label>) variable query."""
    queries = [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return [re.fullmatch(r"label_values\((\S+), \w+\)", query)[1] for query in queries]  # type: ignore[index]


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: the identifiers left once strings, label matchers, ranges
    and grouping clauses are gone, other than functions, aggregations and keywords."""
    for pattern in _STRIP:
        expr = pattern.sub(" ", expr)
    return {
        match[1]
        for match in _TOKEN.finditer(expr)
        if match[1] and not match[2] and match[1].lower() not in _KEYWORDS
    }
