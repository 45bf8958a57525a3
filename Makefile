# Two commands do all setup on a fresh machine:
#   make demo   - create .venv, install voxelflow, run the end-to-end demo
#   make test   - create .venv, install voxelflow with test extras, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck install install-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e ".[demo]"

install-test: $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"

demo: install
	$(BIN)/voxelflow demo $(ARGS)

test: install-test
	$(BIN)/python -m pytest -n 2 $(ARGS)

lint: install-test
	$(BIN)/ruff check src tests benchmarks

# mypy, configured in pyproject.toml [tool.mypy] (strict for io/, metrics/, config/); .ci/run runs it
typecheck: install-test
	$(BIN)/python -m mypy src/voxelflow
