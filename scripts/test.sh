#!/usr/bin/env bash
# The test command: lint, format check and types on the code, then the whole test suite.
# Extra arguments go to one pytest run instead (e.g. `bash scripts/test.sh tests/unit -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
$py -m ruff check src tests benchmarks examples hubconf.py
$py -m ruff format --check src tests benchmarks examples hubconf.py
$py -m mypy
if [ $# -gt 0 ]; then
    exec $py -m pytest "$@"
fi
$py -m pytest --ignore=tests/distributed
# The Ray tests in a pytest process of their own, without the hypothesis plugin (they use no hypothesis):
# runs of them ended, after every test had passed, in CPython 3.11.7's "AST constructor recursion depth
# mismatch" inside that plugin's terminal summary, which turned a green run into a failed one.
$py -m pytest -p no:hypothesispytest tests/distributed
