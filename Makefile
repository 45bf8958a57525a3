# Two commands do all setup on a fresh machine:
#   make demo   - create .venv, install voxelflow, run the end-to-end demo
#   make test   - create .venv, install voxelflow with test extras, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint install install-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e ".[demo]"

install-test: $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"

# Until `voxelflow demo` (train/infer/evaluate) lands, the main job builds one real-MRI demo
# subject from the MNI152 template shipped by nilearn and inspects it.
demo: install
	$(BIN)/voxelflow --help
	$(BIN)/python -c "from pathlib import Path; from voxelflow.demo.data import make_demo_dataset; make_demo_dataset(Path('voxelflow-demo/data'), num_train=1, num_test=0)"
	$(BIN)/voxelflow info voxelflow-demo/data/images/train000_t1.nii.gz voxelflow-demo/data/labels/train000_tissue.nii.gz

test: install-test
	$(BIN)/python -m pytest -n 2 $(ARGS)

lint: install-test
	$(BIN)/ruff check src tests benchmarks
