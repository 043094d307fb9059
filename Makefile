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

# The notebook series in the smoke profile (CPU, a few minutes) on $$FACELIB_DATA, else the synthetic faces:
# results/smoke/{notebooks,html,tables,figures,README.md}. Other profiles: facelib report --profile gpu-short.
PROFILE ?= smoke
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
