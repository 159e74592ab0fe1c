# convnet-serve: `make serve` serves the embedded MNIST model, `make test` runs the test suite.
# Both first create .venv/ with everything installed (see README.md).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EMBEDDED_RUN := models/mnist

# BentoML would otherwise send usage statistics: nothing here talks to the internet.
export BENTOML_DO_NOT_TRACK := true

.PHONY: setup serve test lint system-deps

setup: $(VENV)/.installed

# torch is installed first, pinned, so that pip takes the exact build instead of resolving one.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

serve: setup
	$(BIN)/python -m training export $(EMBEDDED_RUN)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/bentoml serve

system-deps:
	bash scripts/install-system-deps.sh

lint: setup
	$(BIN)/ruff check .

test: setup system-deps lint
	$(BIN)/python -m pytest -m "not slow"
