# ferrule: `make run` serves the example, `make test` runs every test.
# Both set up everything they need first (scripts/setup.sh).

VENV    := .venv
PY      := $(VENV)/bin/python
PYTEST_WORKERS ?= 2
FUZZ_SECONDS ?= 20

.PHONY: help setup build run test test-rust test-python lint fmt docs fuzz bench bench-smoke bench-hello bench-latency bench-instructions bench-guard clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: ## Create .venv and install what the build and tests need
	@scripts/setup.sh

build: setup ## Build ferrule (release) into .venv
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --quiet

run: build ## Serve examples/hello.py on http://127.0.0.1:8000
	$(VENV)/bin/ferrule --chdir examples hello

test: build test-rust test-python ## Build, then run the Rust and Python tests

test-rust: ## Rust unit tests (pure protocol code and settings)
	PYO3_PYTHON=$(abspath $(PY)) cargo test --release --lib

test-python: ## Black-box tests against the real ferrule process
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q

lint: ## rustfmt and clippy, warnings as errors
	cargo fmt --check
	PYO3_PYTHON=$(abspath $(PY)) cargo clippy --release --all-targets -- -D warnings

fuzz: setup ## Every parser's fuzz target (HTTP/1 head, chunked, uwsgi, SCGI, FastCGI), FUZZ_SECONDS each
	scripts/fuzz.sh $(FUZZ_SECONDS)

docs: build ## Regenerate the README settings table from the declaration
	$(PY) scripts/update_readme_settings.py

bench: build ## Every workload against every peer (bench/results/<date>.md and .png), memory at 1,000 connections, then a 1,000,000-request soak
	bench/setup.sh --latency
	bench/.venv/bin/python bench/run.py
	bench/.venv/bin/python bench/latency.py
	bench/.venv/bin/python bench/memory.py --save
	.venv/bin/python bench/soak.py

bench-smoke: build ## Every benchmark cell for one second, file for three (proves the harness works)
	bench/setup.sh
	bench/.venv/bin/python bench/run.py --smoke

bench-hello: build ## hello-world req/s, ferrule vs the no-Python hyper ceiling
	bench/hello.sh

bench-latency: build ## p50/p99/p99.9 at 50% and 90% of the best peer's saturation, with oha at a fixed rate
	bench/setup.sh --latency
	bench/.venv/bin/python bench/latency.py

bench-instructions: build ## Instructions per request under callgrind (repeatable on a noisy machine)
	.venv/bin/python bench/instructions.py --apps hello,json,echo

bench-guard: build ## Fail if instructions per request rose over 3% above bench/instructions-baseline.json
	.venv/bin/python bench/instructions.py --check bench/instructions-baseline.json

fmt: ## Format the Rust code
	cargo fmt

clean: ## Remove build products and .venv
	cargo clean
	rm -rf $(VENV)
