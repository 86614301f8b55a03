# The README's two commands: `make pipeline` and `make test` (`make test-fast`: the
# unit tier only, the tests not marked slow, for while you edit).
# Each creates the virtual environment and installs the package when missing.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.ficklenet-installed

.PHONY: install test test-fast lint pipeline toy clean-runs constraints

# constraints.txt: the versions the tests passed with, so every install is the same.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check src tests experiments

test: lint
	$(BIN)/python -m pytest

# Pure functions, references, config composition: no console scripts, no
# end-to-end trainings (those are marked slow; `make test` runs them too).
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

toy: install
	$(BIN)/ficklenet-make-toy

# Rerunning skips finished stages; a new RUN_DIR starts afresh.
RUN_DIR ?= runs/pipeline/toy
pipeline: install
	$(BIN)/ficklenet-pipeline hydra.run.dir=$(RUN_DIR)

# Refresh constraints.txt: the newest releases in a fresh environment, the test
# suite, then their versions (commit the file when the tests pass).
REFRESH := .venv-refresh
constraints:
	rm -rf $(REFRESH)
	$(PYTHON) -m venv $(REFRESH)
	$(REFRESH)/bin/python -m pip install --upgrade pip setuptools wheel
	$(REFRESH)/bin/python -m pip install -e '.[dev]'
	$(REFRESH)/bin/ruff check src tests experiments
	$(REFRESH)/bin/python -m pytest
	sed -n '/^#/p' constraints.txt > constraints.txt.new
	$(REFRESH)/bin/python -m pip freeze --exclude-editable | grep -v '^ficklenet' >> constraints.txt.new
	mv constraints.txt.new constraints.txt
