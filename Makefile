# embedx developer entry points. `make demo` sets everything up and runs the built-in example;
# `make test` runs the test suite (what CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= demo

.PHONY: setup demo test wheel-test lint bench clean

$(BIN)/embedx: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	bash scripts/install-torch $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/embedx

# the README's commands as a user types them, inside the example folder
demo: setup
	rm -rf $(DEMO)
	$(BIN)/embedx synth $(DEMO)
	cd $(DEMO) && $(abspath $(BIN))/embedx extract --model tiny-hubert wavs/ --pooling mean,std --frames
	cd $(DEMO) && $(abspath $(BIN))/embedx info feats.h5
	cd $(DEMO) && $(abspath $(BIN))/embedx fit --features feats.h5 --models logreg,svm
	cd $(DEMO) && $(abspath $(BIN))/embedx predict results/model.skops wavs/spk00 -o predictions.csv
	cd $(DEMO) && $(abspath $(BIN))/embedx fit --features feats.h5 --frames --alignments alignments/ -o frames
	@echo "report: $(DEMO)/results/report.md (plots and tables in $(DEMO)/results/); frame level: $(DEMO)/frames/report.md"
	@echo "to use embedx yourself: source $(VENV)/bin/activate"

test: setup
	$(BIN)/python -m pytest -q

# what users install: sdist + wheel, installed (not editable) into a fresh venv, the main commands
# run from a folder outside the checkout (CI runs it after the suite)
wheel-test: setup
	bash scripts/wheel-smoke $(BIN)/python

lint: setup
	$(BIN)/ruff check embedx tests benchmarks

bench: setup
	$(BIN)/python benchmarks/extract_throughput.py

clean:
	rm -rf $(DEMO) .pytest_cache build dist *.egg-info
