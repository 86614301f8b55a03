# The README's two commands: `make pipeline` and `make test`.
# Each creates the virtual environment and installs the package when missing.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.ficklenet-installed

.PHONY: install test lint pipeline toy clean-runs

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check src tests experiments

test: lint
	$(BIN)/python -m pytest

toy: install
	$(BIN)/ficklenet-make-toy

# Rerunning skips finished stages; a new RUN_DIR starts afresh.
RUN_DIR ?= runs/pipeline/toy
pipeline: install
	$(BIN)/ficklenet-pipeline run_dir=$(RUN_DIR)
