# Two commands do everything on a fresh machine: `make report` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install report test test-fast lint constraints clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# With the real data ($$FACELIB_DATA): the cpu report rebuilt from the committed runs (no training, a few
# minutes) into results/cpu/. Without it: the smoke profile on the built-in synthetic faces (it trains its tiny
# runs, a few minutes) into results/smoke/. PROFILE=... picks another; facelib report --help has the options.
PROFILE ?= $(if $(FACELIB_DATA),cpu,smoke)
report: install
	$(BIN)/facelib report --profile $(PROFILE)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two pytest processes, each running whole test files with one compute thread: the exports' tracing and the
# notebooks' kernels are mostly single-threaded Python, and two 2-thread processes on 2 cores stall each
# other. TEST_WORKERS=0: one process, torch's default threads.
TEST_WORKERS ?= 2
ifeq ($(TEST_WORKERS),0)
PYTEST := $(BIN)/python -m pytest
else
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile
endif
test: lint
	$(PYTEST) -q --durations=15

# The developer's loop: everything but the tests marked slow (about 2 minutes on 2 cores).
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

constraints: install
	{ head -2 constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -vi '^facelib'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
