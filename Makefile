# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each installs what is missing into the project-local virtual environment .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-perf protos clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m demo

test: $(STAMP)
	bash tests/setup_services.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy common site_agent demo coordinator transplant
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.paper bench all --workers 2

bench-perf: $(STAMP)
	$(PY) -m benchmarks.perf
	$(PY) -m benchmarks.perf_inference  # after perf.py, which rewrites perf.json; this one merges

protos: $(STAMP)
	$(PY) -m protos.build

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
