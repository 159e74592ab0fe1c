"""Running `python -m training` as a user would, and checking its one-line errors."""

from __future__ import annotations

import io
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from tests.conftest import REPO


def run_cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """In a new process: what a user's shell runs (the import time included)."""
    return subprocess.run(
        [sys.executable, "-m", "training", *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def invoke(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`python -m training ARGS` in this process (its entry point, error handling included): the same
    exit code and output as `run_cli` without the seconds of importing torch again."""
    from training.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["python -m training", *map(str, args)]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(list(map(str, args)), code, out.getvalue(), err.getvalue())


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    """A non-zero exit with exactly one `error: ...` line containing every `expected` text."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0], errors[0]
