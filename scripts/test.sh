#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), lint, then run the test suite.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -k gram -x
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"

echo "==> ruff check ."
"$ROOT/.venv/bin/ruff" check .

echo "==> python -m pytest -q $*"
status=0
"$ROOT/.venv/bin/python" -m pytest -q "$@" || status=$?
# pytest exits 5 when it collected no tests. That is not a pass: a suite that
# silently ran nothing (bad path, broken collection config) must fail loudly.
if [ "$status" -eq 5 ]; then
    echo "test.sh: FAILED: pytest collected no tests (exit 5)." \
         "Arguments: ${*:-none, so testpaths from pyproject.toml}." >&2
fi
exit "$status"
