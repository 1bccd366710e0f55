# Thin wrappers: everything runs inside .venv, created by scripts/install.sh from requirements.txt.
PY := .venv/bin/python
PYTEST_ARGS ?=
## `--separate`: one pytest process per area instead of one for all (scripts/run_tests.py).
TEST_MODE ?=

.PHONY: install run test lint types imports area chaos fuzz docs pins bench clean

install:
	bash scripts/install.sh

## Run the whole system on an embedded default (local NATS + PostgreSQL, test pattern, local SCP).
run: install
	$(PY) -m cinebridge_common.devrun

## Lint, types, import boundaries, unit and integration tests.
test: install lint types imports docs
	$(PY) scripts/run_tests.py $(TEST_MODE) -- $(PYTEST_ARGS)

lint: node_modules/.bin/eslint
	.venv/bin/ruff check libs services tests bench scripts
	.venv/bin/ruff format --check libs services tests bench scripts
	node_modules/.bin/eslint services/gateway/src/cinebridge_gateway/static

## ESLint for the web UI, pinned exactly in package.json (no lockfile is kept).
node_modules/.bin/eslint: package.json
	npm install --no-package-lock --no-audit --no-fund
	touch $@

types:
	.venv/bin/mypy -p cinebridge_common -p cinebridge_dicom -p cinebridge_testkit $(foreach s,$(notdir $(wildcard services/*)),-p cinebridge_$(s))

imports:
	.venv/bin/lint-imports

docs:
	$(PY) -m cinebridge_common.messages.catalogue --check docs/messages.md
	$(PY) scripts/env_example.py --check .env.example

## One area's tests only, e.g. `make area AREA=sender` (areas: common, dicom, scp, worklist,
## converter, sender, capture, gateway, cli, system, fuzz).
area: install
	$(PY) scripts/run_tests.py --only $(AREA) -- $(PYTEST_ARGS)

## The chaos test alone (it also runs in `make test`): every process of the embedded run killed once.
chaos: install
	$(PY) -m pytest -m chaos tests/integration/system $(PYTEST_ARGS)

## Every fuzz target for 60 s (tests/fuzz); `scripts/fuzz.py --seed` rewrites the seed corpus.
fuzz: install
	$(PY) scripts/fuzz.py --seconds 60 -- $(PYTEST_ARGS)

pins:
	python3 scripts/pin.py

bench: install
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf .run
