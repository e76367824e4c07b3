# Everything a fresh machine needs comes from here: a virtual environment in .venv with the
# versions in constraints.txt (what the test suite ran against).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PARAMS ?= params/lab.yaml
OUT    ?= out

.PHONY: help setup run lab jupyter test test-stress lint typecheck unit browser-deps golden bench reliability scenarios clean

help:
	@echo "make run          run the runbook headless against the embedded lab (PARAMS=$(PARAMS))"
	@echo "make test         lint, type check and the whole test suite (random order, seed printed)"
	@echo "make test-stress  the suite 3 times in a row, shuffled, 2 workers, on a loaded machine"
	@echo "make jupyter      open the notebook in JupyterLab"
	@echo "make lab          serve a standalone workshop lab on loopback"
	@echo "make golden       regenerate the committed notebook's outputs"
	@echo "make bench        print the performance figures"
	@echo "make reliability  run the bad-input and fault matrix"
	@echo "make scenarios    run the runbook against each real-account scenario the lab plays"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (carts runbook)" >/dev/null
	touch $@

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/carts-runbook run --params $(PARAMS) --out $(OUT)

lab: $(STAMP)
	$(BIN)/python -m runbook_lib.lab serve

# jupyter_server refuses to run as root without --allow-root (containers, CI images).
jupyter: $(STAMP)
	$(BIN)/jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) notebooks/fix-iam-permissions.ipynb

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The browser test needs Debian's chromium; install it when missing and we may (root).
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium (Debian package) for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "could not install chromium: the browser test will be skipped"; \
	  else echo "chromium missing and not root: the browser test will be skipped"; fi; \
	fi

# The suite runs in a random order (pytest-randomly); the seed is printed so that a failure can be
# replayed with `make test SEED=<seed>`.
# (':=' draws it once: a plain '?=' would draw a new one at every use.)
ifeq ($(SEED),)
SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif

# Two pytest-xdist workers, one module at a time each (a module's lab and its shared runs stay in
# one process): most tests wait on other processes (a kernel, the CLI, a fleet), so two workers
# use a 2-core machine's second core. --heavy-first hands out the modules that run fleets and
# notebooks first (each band in the seed's order: tests/conftest.py), so that no worker is left
# alone with one at the end; --no-loadscope-reorder keeps that order (xdist would otherwise hand
# out the modules with the most tests first, and those with a few long ones, the fleets, last).
# WORKERS=0 runs the suite in this one process.
WORKERS ?= 2
PYTEST_RUN = $(BIN)/pytest -q -p randomly --randomly-seed=$(SEED) -n $(WORKERS) --dist loadscope --no-loadscope-reorder --heavy-first

unit: $(STAMP)
	@echo "test order: --randomly-seed=$(SEED) (replay: make unit SEED=$(SEED))"
	$(PYTEST_RUN)

test: $(STAMP) browser-deps lint typecheck
	@echo "test order: --randomly-seed=$(SEED), $(WORKERS) workers (replay: make test SEED=$(SEED))"
	$(PYTEST_RUN)

# Before each submission: the suite as a loaded 2-core CI machine runs it, 3 rounds in a row.
test-stress: $(STAMP)
	$(BIN)/python tests/stress.py --rounds 3 --workers 2 --hogs 1

golden: $(STAMP)
	$(BIN)/carts-runbook golden

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/bench_fleet.py

reliability: $(STAMP)
	$(BIN)/python benchmarks/reliability.py

scenarios: $(STAMP)
	$(BIN)/python benchmarks/scenarios.py

clean:
	rm -rf $(OUT) .pytest_cache .mypy_cache .ruff_cache
