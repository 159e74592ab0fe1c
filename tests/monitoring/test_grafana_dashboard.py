"""The Grafana dashboard is valid JSON whose every query parses in a real Prometheus and reads only
series that the shipped recording rules (or Prometheus itself) write."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.monitoring import dashboard
from tests.monitoring.prom import PrometheusServer, load_rules, recorded_names, rule_files, run_prometheus

# One view per need: latency per endpoint and per model, throughput, errors by code, batch size,
# queue time, inference time, replicas.
REQUIRED = {
    "endpoint:bentoml_service_request_duration_seconds:p99_rate1m",
    "model:bentoml_service_request_duration_seconds:p99_rate1m",
    "endpoint:bentoml_service_request:rate1m",
    "endpoint_code:bentoml_service_request:rate1m",
    "model:convnet_batch_size:mean_rate1m",
    "model:convnet_batch_wait_seconds:p99_rate1m",
    "model:convnet_inference_seconds:p99_rate1m",
    "job:up:sum",
}


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    return dashboard.load()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus with the shipped rules loaded and nothing to scrape."""
    config = {"global": {"evaluation_interval": "1s"}, "rule_files": [str(p) for p in rule_files()]}
    with run_prometheus(config, tmp_path_factory.mktemp("prometheus")) as server:
        yield server


def test_panels_are_well_formed(board: dict[str, Any]) -> None:
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard.panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard.panels(board):
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]


def test_dashboard_shows_every_required_view(board: dict[str, Any]) -> None:
    used = {name for _, expr in dashboard.expressions(board) for name in dashboard.metric_names(expr)}
    assert REQUIRED - used == set()


def test_queries_read_only_recorded_series(board: dict[str, Any]) -> None:
    known = recorded_names() | dashboard.BUILTIN_SERIES
    for title, expr in dashboard.expressions(board):
        assert "$" not in expr, f"{title}: unknown dashboard variable in {expr!r}"
        assert dashboard.metric_names(expr), f"{title}: no metric in {expr!r}"
        assert dashboard.metric_names(expr) <= known, f"{title}: {expr!r} reads series no rule records"
    assert set(dashboard.variable_metrics(board)) <= known


def test_metric_names_finds_metrics_and_skips_the_rest() -> None:
    expr = 'sum by (a, b) (rate(foo{x="y(z)"}[5m])) > 1.5 * (l:bar:p90 offset 1d) and on (c) q > bool 1e3'
    assert dashboard.metric_names(expr) == {"foo", "l:bar:p90", "q"}


def test_every_query_parses_in_prometheus(board: dict[str, Any], prometheus: PrometheusServer) -> None:
    for metric in dashboard.variable_metrics(board):
        prometheus.query(metric)
    for _, expr in dashboard.expressions(board):
        prometheus.query(expr)  # fails on Prometheus' parse error (HTTP 400, bad_data)


def test_prometheus_refuses_a_broken_query(prometheus: PrometheusServer) -> None:
    """The parse check above is real: Prometheus answers bad_data for invalid PromQL."""
    body = prometheus.api("query", query="sum by (endpoint (job:up:sum)")
    assert (body["status"], body["errorType"]) == ("error", "bad_data")


def test_rules_load_in_prometheus(prometheus: PrometheusServer) -> None:
    groups = prometheus.api("rules")["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    assert loaded == {rule.get("record") or rule["alert"] for rule in load_rules()}
