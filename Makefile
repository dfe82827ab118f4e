# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
EXTRAS ?= web,worker,s3,postgres,embedded,dev

.PHONY: run test lint venv migrate bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

## Start the whole service with embedded defaults (SQLite, ./var/objects, Redis, web, worker).
run: $(STAMP)
	$(VENV)/bin/stylequeue dev

## Run the whole test suite (starts what it needs: Redis, moto's S3 server, Chromium). The
## PostgreSQL cases use STYLEQUEUE_TEST_POSTGRES_URL, else postgres@127.0.0.1:5432 if it
## answers (the run's last line says when none did; =off for SQLite only).
test: $(STAMP)
	@$(PY) -m tests.ensure_chromium || true
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m tests.typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m tests.typecheck

migrate: $(STAMP)
	$(VENV)/bin/stylequeue migrate

bench: $(STAMP)
	$(PY) bench/engine.py --size 256 --iterations 20

clean:
	rm -rf $(VENV) var test-artifacts
