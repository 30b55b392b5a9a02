PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo lint typecheck bench notebooks docs docs-check lab clean FORCE

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev,viz,checkpoint,experiments,notebooks,interop]"
	touch $(STAMP)

# the demo needs the library and matplotlib only
DEMO_STAMP := $(VENV)/.installed-demo
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[viz]"
	touch $(DEMO_STAMP)

# the docs site: mkdocs + the executed notebooks
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[docs,notebooks]"
	touch $(DOCS_STAMP)

# a Jupyter kernel for this venv's python, so jupytext/nbclient run the notebooks with it
KERNEL := $(VENV)/share/jupyter/kernels/jaxconv/kernel.json
$(KERNEL): $(DOCS_STAMP)
	$(BIN)/python -m ipykernel install --sys-prefix --name jaxconv --display-name "jaxconv (.venv)"

install: $(STAMP)

# lint and type-check first: they take seconds, the suite minutes
test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q

# stops at the first failure; skips the tests marked slow
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -x -q

demo: $(DEMO_STAMP)
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
	$(BIN)/python benchmarks/arch_bench.py $(filter --quick,$(BENCH_ARGS))

# every experiments/*.py and docs/planner.py, executed headless into docs/notebooks/*.ipynb;
# NOTEBOOK_ARGS=--quick for the short runs. The flags a build ran with are recorded in
# docs/notebooks/.args and in each notebook's metadata ("jaxconv": {"args": ...}): changing
# them rebuilds every experiment notebook, and the docs hook refuses to publish one built
# with other flags than the full run's. A notebook also rebuilds when its source or any
# jaxconv module (the shared plumbing jaxconv/_experiment.py and tasks jaxconv/_tasks.py
# included) changes.
NOTEBOOK_ARGS ?=
NOTEBOOKS := $(patsubst experiments/%.py,docs/notebooks/%.ipynb,$(wildcard experiments/*.py)) \
	docs/notebooks/planner.ipynb
LIBRARY := $(wildcard jaxconv/*.py jaxconv/*/*.py)
NOTEBOOK_ARGS_STAMP := docs/notebooks/.args

# rewritten only when the flags differ from the last build's, so make's timestamps see it
$(NOTEBOOK_ARGS_STAMP): FORCE
	@mkdir -p $(@D)
	@printf '%s\n' '$(NOTEBOOK_ARGS)' | cmp -s - $@ || printf '%s\n' '$(NOTEBOOK_ARGS)' > $@

docs/notebooks/%.ipynb: experiments/%.py $(LIBRARY) $(NOTEBOOK_ARGS_STAMP) | $(KERNEL)
	@mkdir -p docs/notebooks
	JAXCONV_EXPERIMENT_ARGS="$(NOTEBOOK_ARGS)" $(BIN)/jupytext --to ipynb --set-kernel jaxconv \
		--update-metadata '{"jaxconv": {"args": "$(NOTEBOOK_ARGS)"}}' \
		--execute --run-path . --output $@ $<

docs/notebooks/planner.ipynb: docs/planner.py $(LIBRARY) | $(KERNEL)
	@mkdir -p docs/notebooks
	$(BIN)/jupytext --to ipynb --set-kernel jaxconv --execute --run-path . --output $@ $<

notebooks: $(NOTEBOOKS)

# strict: any warning (a broken link, a docstring griffe cannot parse) fails the build; the
# site is always built from the full runs (NOTEBOOK_ARGS is not passed on)
docs: | $(DOCS_STAMP)
	$(MAKE) notebooks NOTEBOOK_ARGS=
	$(BIN)/mkdocs build --strict

# the built site (run `make docs` first) opened in the system's headless Chromium (apt-get
# install chromium): every page loads with no console error, each to_jshtml animation has its
# frames and steps; a full-page screenshot of each page goes to site-check/. The checker's own
# tests run first, in the same browser. Fails (exit 1) naming every failing page.
DOCS_CHECK_STAMP := $(VENV)/.installed-docs-check
$(DOCS_CHECK_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[docs-check]"
	touch $(DOCS_CHECK_STAMP)

docs-check: $(DOCS_CHECK_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_docs_check.py
	$(BIN)/python tools/docs_check.py --site site --out site-check

# JupyterLab on the tutorial, with its live ipywidgets controls: writes the tutorial as a
# notebook on the kernel "jaxconv (.venv)" to build/lab/ (not executed: run all its cells)
LAB_NOTEBOOK := build/lab/convolution_tutorial.ipynb
lab: $(KERNEL)
	$(BIN)/python -m pip install -q -e ".[lab]"
	@mkdir -p $(dir $(LAB_NOTEBOOK))
	$(BIN)/jupytext --to ipynb --set-kernel jaxconv --output $(LAB_NOTEBOOK) \
		experiments/convolution_tutorial.py
	$(BIN)/jupyter lab $(LAB_NOTEBOOK)

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis .mypy_cache site site-check docs/notebooks \
		.cache/xla build/lab
