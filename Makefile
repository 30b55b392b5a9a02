PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev,viz,checkpoint,experiments]"
	touch $(STAMP)

install: $(STAMP)

# lint and type-check first: they take seconds, the suite minutes
test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q

# stops at the first failure; skips the tests marked slow
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -x -q

demo: $(STAMP)
	$(BIN)/python experiments/recover_cross.py

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# train_bench.py takes --quick from BENCH_ARGS unless TRAIN_BENCH_ARGS is given
bench: TRAIN_BENCH_ARGS ?= $(filter --quick,$(BENCH_ARGS))
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/train_bench.py $(TRAIN_BENCH_ARGS)

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis .mypy_cache
