# imgq: `make demo` and `make test` do all set-up on a fresh machine (Python 3.11+ and a C compiler).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
export TIKTOKEN_CACHE_DIR ?= $(CURDIR)/.cache/tiktoken

.PHONY: install test test-fast lint demo bench sim clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

demo: $(STAMP)
	$(VENV)/bin/imgq demo

bench: $(STAMP)
	$(PY) -m benchmarks

sim: $(STAMP)
	$(VENV)/bin/imgq sim

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
