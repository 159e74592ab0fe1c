#!/usr/bin/env bash
# Sets up .venv/ and the system tools the tests run for real, lints, and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/install-system-deps.sh
export BENTOML_DO_NOT_TRACK=true
.venv/bin/ruff check .
.venv/bin/python -m pytest -m "not slow" "$@"
