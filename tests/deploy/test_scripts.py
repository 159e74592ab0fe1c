"""The deploy scripts pass shellcheck."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.tools import REPO, find_tool

SCRIPTS = sorted((REPO / "deploy" / "scripts").glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script: Path) -> None:
    proc = subprocess.run([find_tool("shellcheck"), str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
