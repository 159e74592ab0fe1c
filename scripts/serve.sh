#!/usr/bin/env bash
# Sets up .venv/, imports the embedded models into the BentoML model store and serves on port 3000.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export BENTOML_DO_NOT_TRACK=true  # BentoML would otherwise send usage statistics
export PATH="$PWD/.venv/bin:$PATH"
python -m training export models/mnist --onnx
# The ImageNet photo model, unless the store already holds a photo-classifier (a fine-tuned export stays).
python -m training export models/mobilenet-v2-imagenet --onnx --if-absent
exec bentoml serve "$@"
