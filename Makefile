# PartLedger. Two commands on a fresh machine: `make run` and `make test`; each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: run stop test contracts gas deps clean

deps: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: Python 3.11 is required (install python3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "make: Node.js 20 with npm is required"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## Bring up the stack on the embedded defaults (Anvil devnet, demo consortium) and print what runs where.
run: deps
	$(BIN)/partledger up

## Stop what `make run` started.
stop: deps
	$(BIN)/partledger down

## The whole test suite (CI runs exactly this).
test: deps
	$(PY) -m pytest

## Recompile contracts/src into the committed contracts/artifacts.
contracts: node_modules/.installed
	node contracts/compile.cjs contracts/artifacts

## Gas per operation on Anvil; the last line is one JSON object.
gas: deps
	$(PY) -m benchmarks.gas

clean:
	rm -rf $(VENV) node_modules .pytest_cache .hypothesis
