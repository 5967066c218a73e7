#!/usr/bin/env bash
# The README's test command: installs what is missing, lints, then runs every test (about 20-25 minutes on 2 idle cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
echo "== ruff check"
.venv/bin/ruff check .
echo "== pytest"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
# pytest exits 5 when it collected nothing: that is a broken test run, not a pass.
if [ "$status" = 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
exit "$status"
