"""The shell scripts (set-up, serve, test, CI, deploy) pass shellcheck."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.tools import REPO, find_tool

SCRIPTS = [
    *sorted((REPO / "scripts").glob("*.sh")),
    *sorted((REPO / "deploy" / "scripts").glob("*.sh")),
    REPO / ".ci" / "run",
]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck(script: Path) -> None:
    proc = subprocess.run([find_tool("shellcheck"), str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
