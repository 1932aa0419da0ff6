# sealgate: two commands matter.
#   make run   ARGS="app.apk ..."   verify APKs (the bundled sample when ARGS is empty)
#   make test                        every test, ruff and mypy
# Both build a virtual environment in .venv from the lock file first; only python3 (>= 3.11) is needed.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run test lint typecheck bench clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m compileall -q src >/dev/null
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sealgate apk verify $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy src

test: lint typecheck
	$(BIN)/pytest -n auto -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_verify.py $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
