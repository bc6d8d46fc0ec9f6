# PartLedger. Two commands on a fresh machine: `make run` and `make test`; each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# Python keeps its compiled modules (in __pycache__, git-ignored), also where the environment says not to write them
# (PYTHONDONTWRITEBYTECODE): without them every process the tests start compiles the project again, and each test
# worker rewrites every test module's assertions again (collection took 9.7 s of CPU per worker, 4.3 s with them).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run stop test contracts gas deps system-deps clean

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

## The whole test suite (CI runs exactly this): on TEST_WORKERS pytest-xdist workers, each with its own Anvil,
## PostgreSQL cluster, ports and temporary files. PARTLEDGER_TEST_SEED=N replays a run (printed at its start).
## One worker more than cores: much of the suite waits on nodes, processes and browsers (on 2 cores, the whole suite
## took 663 s with 2 workers, 619 s with 3, 670 s with 4).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 2) + 1 )))
PYTEST_ARGS ?=
test: deps system-deps
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder --durations=15 $(PYTEST_ARGS)

# Debian packages the tests use: Chromium (pages in a headless browser), a CJK font (Chinese on label sheets and
# pages), wrk (the verify benchmark's load), and PostgreSQL's server binaries when the machine has none. Installed when
# missing and running as root; otherwise one line says what to install.
SYSTEM_PACKAGES := chromium fonts-wqy-microhei wrk
PG_SERVER_PACKAGE := postgresql-15
system-deps:
	@missing=""; for package in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "ok installed" || missing="$$missing $$package"; \
	done; \
	ls /usr/lib/postgresql/*/bin/initdb /usr/local/bin/initdb /usr/bin/initdb 2>/dev/null | grep -q initdb || missing="$$missing $(PG_SERVER_PACKAGE)"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "make: installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null || exit 1; \
	  else \
	    echo "make: the tests need the Debian packages$$missing: run apt-get install -y$$missing as root"; exit 1; \
	  fi; \
	fi

## Recompile contracts/src into the committed contracts/artifacts.
contracts: node_modules/.installed
	node contracts/compile.cjs contracts/artifacts

## Gas per operation on Anvil; the last line is one JSON object.
gas: deps
	$(PY) -m benchmarks.gas

## Every benchmark against its floor (write path end to end, raw node, indexer, verify, 10^6-part scaling, console pages, gas):
## tables, then one JSON line; results also in benchmarks/results/. Needs wrk (`make system-deps` installs it) for verify.
.PHONY: bench bench-quick
bench: deps
	$(PY) -m benchmarks.bench

## The same with small sizes and short durations (about two minutes).
bench-quick: deps
	$(PY) -m benchmarks.bench --quick

clean:
	rm -rf $(VENV) node_modules .pytest_cache .hypothesis test-artifacts

## A bounded soak (10 minutes by default): mixed load with node and PostgreSQL restarts; the last line is one JSON object.
.PHONY: soak
soak: deps
	$(PY) -m benchmarks.soak
