# sealgate: two commands matter.
#   make run   ARGS="app.apk ..."   verify APKs (the bundled sample when ARGS is empty)
#   make test                        every test, ruff and mypy
# Both build a virtual environment in .venv from the lock file first; only python3 (>= 3.11) is needed.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
# fdroidserver, in a virtual environment of its own: the peer the repository tests compare against.
PEERS   ?= .venv-fdroidserver
PEERS_STAMP = $(PEERS)/.installed

.PHONY: run test lint typecheck bench clean peers

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m compileall -q src >/dev/null
	touch $(STAMP)

$(PEERS_STAMP): peers/fdroidserver.lock
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet --no-deps --require-hashes -r peers/fdroidserver.lock
	$(PEERS)/bin/python -m compileall -q $(PEERS)/lib >/dev/null
	touch $(PEERS_STAMP)

peers: $(PEERS_STAMP)

run: $(STAMP)
	$(BIN)/sealgate apk verify $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy src

test: lint typecheck peers
	$(BIN)/pytest -n auto -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_verify.py $(ARGS)

clean:
	rm -rf $(VENV) $(PEERS) .mypy_cache .pytest_cache .ruff_cache
