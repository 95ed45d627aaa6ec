# Flowline: every target runs inside .venv (made by `make install` with uv).
SHELL := /bin/bash
PY := .venv/bin/python
# uv from PATH, or the one pip installs (`python3 -m uv`) on a machine that has none.
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

.PHONY: install run test test-faults bench chaos lint format migrate clean

.venv/.installed: pyproject.toml uv.lock
	@# uv from PATH, else pip installs it: into the environment, else for the user, else (a
	@# Debian-style "externally managed" Python) for the user anyway.
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet uv 2>/dev/null \
		|| python3 -m pip install --quiet --user uv 2>/dev/null \
		|| python3 -m pip install --quiet --user --break-system-packages uv
	$(UV) sync --frozen --compile-bytecode
	@touch $@

install: .venv/.installed

run: install  ## API + worker + a catcher for emails and webhooks (CATCHER=0: none); fails if they do not start
	$(PY) -m dev.run

test: install  ## the whole suite against real PostgreSQL, Redis and SMTP
	$(PY) -m pytest

test-faults: install  ## only the fault-injection tests (kill -9, outages)
	$(PY) -m pytest -m faults

bench: install  ## throughput and latency figures (see README, Performance)
	$(PY) -m bench $(ARGS)

chaos: install  ## soak under faults: nothing lost, nothing twice (e.g. ARGS="--minutes 10 --rate 150")
	$(PY) -m chaos $(ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

migrate: install  ## bring the database in DATABASE_URL to the current schema
	$(PY) -m workflow_core.persistence.migrate

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
