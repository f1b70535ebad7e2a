# embedx developer entry points. `make demo` sets everything up and runs the built-in example;
# `make test` runs the test suite (what CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= demo

.PHONY: setup demo test lint bench clean

$(BIN)/embedx: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	bash scripts/install-torch $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/embedx

demo: setup
	rm -rf $(DEMO)
	$(BIN)/embedx synth $(DEMO)
	$(BIN)/embedx extract --model $(DEMO)/tiny-hubert --manifest $(DEMO)/labels.csv $(DEMO)/wavs \
		--layers all --pooling mean,std --frames -o $(DEMO)/feats.h5
	$(BIN)/embedx info $(DEMO)/feats.h5
	$(BIN)/embedx fit --features $(DEMO)/feats.h5 --label label --group speaker --models logreg,svm \
		-o $(DEMO)/results
	$(BIN)/embedx predict $(DEMO)/results/model.joblib $(DEMO)/wavs/spk00 -o $(DEMO)/predictions.csv
	@echo "report: $(DEMO)/results/report.md (plots and tables in $(DEMO)/results/)"

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check embedx tests benchmarks

bench: setup
	$(BIN)/python benchmarks/extract_throughput.py

clean:
	rm -rf $(DEMO) .pytest_cache build *.egg-info
