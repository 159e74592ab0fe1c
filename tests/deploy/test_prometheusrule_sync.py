"""The PrometheusRule manifest carries exactly the rules in deploy/prometheus/rules/."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from tests.deploy.tools import REPO

SCRIPT = REPO / "deploy" / "scripts" / "sync_prometheusrule.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sync_prometheusrule", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prometheusrule_is_in_sync_with_the_rule_files() -> None:
    sync = load_script()
    if not sync.rule_files():
        pytest.skip(f"no rule files in {sync.RULES_DIR} yet (written by the monitoring side)")
    assert sync.MANIFEST.read_text() == sync.render(), (
        f"{sync.MANIFEST.relative_to(REPO)} is stale: run python {SCRIPT.relative_to(REPO)}"
    )
