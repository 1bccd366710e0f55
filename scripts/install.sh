#!/usr/bin/env bash
# Create .venv with the exact pins of requirements.txt and every workspace member in editable mode.
# Idempotent: a second run only checks that everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
[ -x .venv/bin/python ] || uv venv --quiet --python "${PYTHON:-python3.11}" .venv
export VIRTUAL_ENV="$PWD/.venv"
uv pip install --quiet -r requirements.txt
members=(-e libs/common -e libs/dicom -e libs/testkit)
for svc in services/*/; do members+=(-e "$svc"); done
uv pip install --quiet --no-deps --reinstall "${members[@]}"
