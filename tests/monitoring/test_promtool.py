"""The shipped Prometheus config and rules pass promtool's checks and unit tests, and follow conventions."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.monitoring.prom import CONFIG, RULE_TESTS_DIR, load_rules, parse_sample, require_binary, rule_files

# level:metric:operations, e.g. endpoint:bentoml_service_request_duration_seconds:p99_rate1m
RECORD_NAME = re.compile(r"^[a-z_]+:[a-z_]+:[a-z0-9_]+$")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    command = [require_binary("promtool"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_check_config() -> None:
    result = promtool("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_rules() -> None:
    assert rule_files(), "no rule files"
    result = promtool("check", "rules", *map(str, rule_files()))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    tests = sorted(RULE_TESTS_DIR.glob("*.yml"))
    assert tests, f"no promtool unit tests in {RULE_TESTS_DIR}"
    result = promtool("test", "rules", *map(str, tests))
    assert result.returncode == 0, result.stdout + result.stderr


def alert_cases() -> list[dict[str, Any]]:
    return [
        case
        for path in sorted(RULE_TESTS_DIR.glob("*.yml"))
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]


@pytest.mark.parametrize("alert", [r["alert"] for r in load_rules() if "alert" in r])
def test_every_alert_is_unit_tested_firing_and_not_firing(alert: str) -> None:
    cases = [case for case in alert_cases() if case["alertname"] == alert]
    assert any(case["exp_alerts"] for case in cases), f"{alert}: no unit test where it fires"
    assert any(not case["exp_alerts"] for case in cases), f"{alert}: no unit test where it stays silent"


def test_alerts_have_severity_and_runbook_annotations() -> None:
    for rule in (r for r in load_rules() if "alert" in r):
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description", "runbook"} <= rule["annotations"].keys(), rule["alert"]
        assert rule.get("for"), f"{rule['alert']}: fires on a single evaluation"


def test_recording_rule_names_follow_level_metric_operations() -> None:
    names = [rule["record"] for rule in load_rules() if "record" in rule]
    assert len(names) == len(set(names)), "a series is recorded twice"
    assert [n for n in names if not RECORD_NAME.match(n)] == []


def test_request_series_leave_out_the_probe_endpoints() -> None:
    """Every raw BentoML request metric in a rule is filtered to /classify/..., never /livez & co."""
    raw = re.compile(r"(?<![\w:])bentoml_service_request_\w+(\{[^}]*\})?")
    for rule in load_rules():
        for selector in raw.finditer(rule["expr"]):
            assert 'endpoint=~"/classify/.+"' in (selector.group(1) or ""), (rule.get("record"), selector[0])


def test_nan_is_not_a_number() -> None:
    """Prometheus writes a quantile over an empty window as "NaN": the tests treat it as no value."""
    assert parse_sample("0.25") == 0.25
    assert parse_sample("0") == 0
    assert parse_sample("NaN") is None
    assert parse_sample("+Inf") is None
