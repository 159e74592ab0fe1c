#!/usr/bin/env bash
# Creates .venv/ with torch, torchvision and the project (dev extra); does nothing when it is up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=.venv/.installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
    exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
# torch first, pinned, so that pip takes this exact build instead of resolving another one.
.venv/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
.venv/bin/pip install --quiet -e '.[dev]'
touch "$stamp"
