# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TORCH   := torch==2.13.0
STAMP   := $(VENV)/.installed

.PHONY: demo test test-fast bench clean install mutate

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Install the pinned CPU torch only where no torch is present; leave an existing one alone.
$(STAMP): $(BIN)/python pyproject.toml
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/proxylab study lr-width --quick --out demo-out --db demo-out/proxylab.db

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/logging_overhead.py
	$(BIN)/python benchmarks/optim_step.py

# Mutation testing (docs/testing.md): not part of `make test`; CPU-heavy, so niced. Scope by
# mutant-name globs: make mutate MUTATE_NAMES="proxylab.train.schedules.*" MUTATE_JOBS=1
MUTATE_NAMES ?= proxylab.analysis.* proxylab.train.schedules.* proxylab.optim.base.* \
                proxylab.train.loop.x_lm_loss__mutmut_* proxylab.train.loop.x_accuracy__mutmut_*
MUTATE_JOBS  ?= 2
mutate: $(STAMP)
	@$(BIN)/python -c "import mutmut" 2>/dev/null || $(BIN)/python -m pip install -q -e ".[mutate]"
	-nice -n 10 $(BIN)/mutmut run --max-children $(MUTATE_JOBS) $(foreach n,$(MUTATE_NAMES),"$(n)")
	$(BIN)/python tests/mutation_report.py $(foreach n,$(MUTATE_NAMES),"$(n)")

clean:
	rm -rf $(VENV) demo-out .pytest_cache mutants
