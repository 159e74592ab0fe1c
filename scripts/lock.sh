#!/usr/bin/env bash
# Regenerates the locks from pyproject.toml with uv, for Linux x86_64 and Python 3.11, with hashes:
#   requirements/runtime.lock.txt  the runtime dependencies but torch and torchvision (the image)
#   requirements/dev.lock.txt      the same pins plus the dev extra (scripts/setup.sh)
#   requirements/bento.lock.txt    the runtime lock plus torch and torchvision as PyPI builds them,
#                                  with their CUDA libraries (`bentoml build`)
# requirements/torch.txt pins torch and torchvision (and says why the first two locks leave them out).
# Existing pins are kept unless pyproject.toml no longer allows them; arguments go to every uv call:
# --upgrade moves every pin to the newest release allowed, --upgrade-package NAME one of them.
# LOCK_DIR writes the locks elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

uv=${UV:-.venv/bin/uv}
out=${LOCK_DIR:-requirements}
compile=("$uv" pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28
    --generate-hashes --custom-compile-command "bash scripts/lock.sh")
"${compile[@]}" pyproject.toml --excludes requirements/torch.txt --output-file "$out/runtime.lock.txt" "$@"
"${compile[@]}" pyproject.toml --excludes requirements/torch.txt --extra dev \
    --constraints "$out/runtime.lock.txt" --output-file "$out/dev.lock.txt" "$@"
"${compile[@]}" requirements/torch.txt "$out/runtime.lock.txt" --output-file "$out/bento.lock.txt" "$@"
