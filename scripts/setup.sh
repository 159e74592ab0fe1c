#!/usr/bin/env bash
# Creates .venv/ from the locks: torch and torchvision from their pin, everything else (the dev extra
# included) exactly as requirements/dev.lock.txt says, hashes checked, then the project itself.
# Does nothing while .venv/ is newer than pyproject.toml and requirements/.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=.venv/.installed
if [ -f "$stamp" ] && [ -z "$(find pyproject.toml requirements -newer "$stamp")" ]; then
    exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet --requirement requirements/torch.txt
.venv/bin/pip install --quiet --require-hashes --no-deps --requirement requirements/dev.lock.txt
.venv/bin/pip install --quiet --no-deps --editable .
.venv/bin/pip check
touch "$stamp"
