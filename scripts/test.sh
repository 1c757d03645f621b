#!/usr/bin/env bash
# The test command: lint, format check and types on the code, then the whole test suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/unit -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
$py -m ruff check src tests benchmarks examples hubconf.py
$py -m ruff format --check src tests benchmarks examples hubconf.py
$py -m mypy
$py -m pytest "$@"
