"""The Dockerfiles pass hadolint and keep the runtime contract the manifests rely on."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.tools import DOCKERFILES, REPO, find_tool


def instructions(dockerfile: Path, name: str) -> list[str]:
    """Arguments of every `name` instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", text, re.MULTILINE)]


def test_there_is_a_dockerfile() -> None:
    assert DOCKERFILES, "no deploy/docker/Dockerfile*"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    proc = subprocess.run(
        [find_tool("hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runtime_contract(dockerfile: Path) -> None:
    user = instructions(dockerfile, "USER")[-1]
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), f"last USER must be a numeric non-root uid, not {user}"
    assert "3000" in instructions(dockerfile, "EXPOSE")
    # Exec form: bentoml itself receives SIGTERM (no shell in between).
    entrypoint = json.loads(instructions(dockerfile, "ENTRYPOINT")[-1])
    assert entrypoint[:2] == ["bentoml", "serve"]
    assert "--timeout-graceful-shutdown" in entrypoint
    # BentoML's own images set BENTOML_CONTAINERIZED, and `bentoml serve` then leaves a dead worker dead.
    assert not any("BENTOML_CONTAINERIZED" in env for env in instructions(dockerfile, "ENV"))


def test_build_context_is_small() -> None:
    """.dockerignore allows only what the image needs: no .venv, data or run directories."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in lines
