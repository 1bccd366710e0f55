# Thin wrappers: everything runs inside .venv, created by scripts/install.sh from requirements.txt.
PY := .venv/bin/python
PYTEST_ARGS ?=
# A private temp folder per run: concurrent pytest runs sharing /tmp/pytest-of-<user> delete
# each other's older folders (and with them a running PostgreSQL's data directory).
BASETEMP := $(shell mktemp -d -u /tmp/cinebridge-pytest-XXXXXX)
PYTEST := $(PY) -m pytest --basetemp=$(BASETEMP)

.PHONY: install run test lint types imports unit integration docs pins bench clean

install:
	bash scripts/install.sh

## Run the whole system on an embedded default (local NATS + PostgreSQL, test pattern, local SCP).
run: install
	$(PY) -m cinebridge_common.devrun

## Lint, types, import boundaries, unit and integration tests.
test: install lint types imports docs
	$(PY) scripts/run_tests.py -- $(PYTEST_ARGS)

lint:
	.venv/bin/ruff check libs services tests bench scripts
	.venv/bin/ruff format --check libs services tests bench scripts

types:
	.venv/bin/mypy -p cinebridge_common $(foreach s,$(notdir $(wildcard services/*)),-p cinebridge_$(s))

imports:
	.venv/bin/lint-imports

docs:
	$(PY) -m cinebridge_common.messages.catalogue --check docs/messages.md
	$(PY) scripts/env_example.py --check .env.example

unit: install
	$(PYTEST) $(PYTEST_ARGS) libs services

integration: install
	$(PYTEST) $(PYTEST_ARGS) tests

pins:
	python3 scripts/pin.py

bench: install
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf .run
