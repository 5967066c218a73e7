#!/usr/bin/env bash
# The README's test command: installs what is missing, lints, then runs the unit tier (no model, under a minute) and the
# integration tier (about 20-25 minutes on 2 idle cores). Both tiers run even when the first fails; arguments go to both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
echo "== ruff check"
.venv/bin/ruff check .

# pytest exits 5 when it collected nothing: that is a broken test run, not a pass.
run_tier() {
    echo "== pytest $1"
    set +e
    .venv/bin/python -m pytest "$1" "${@:2}"
    local status=$?
    set -e
    if [ "$status" = 5 ]; then echo "pytest collected no tests in $1" >&2; return 1; fi
    return "$status"
}

# The exit status is the first failing tier's.
status=0
run_tier tests/unit "$@" || status=$?
run_tier tests/integration "$@" || { tier=$?; [ "$status" != 0 ] || status=$tier; }
exit "$status"
