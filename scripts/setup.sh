#!/usr/bin/env bash
# Create a venv (if missing) and install objstore with the given extras, e.g. "dev,specklepy".
# Usage: setup.sh [EXTRAS] [VENV_DIR] [EXTRA_REQUIREMENT...]  (defaults: server, .venv);
# the venv is made with $PYTHON (default: python3). --no-compile: modules are compiled when
# first imported, not all of them at install (10-20 s less per venv; CI makes four)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-server}"
venv="${2:-.venv}"
shift $(( $# < 2 ? $# : 2 ))
"${PYTHON:-python3}" -m venv "$venv"
log="$venv/install.log"
if ! { "$venv/bin/python" -m pip install -q --upgrade pip &&
       "$venv/bin/python" -m pip install -q --no-compile -e ".[${extras}]" "$@"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup failed (log above)" >&2
    exit 1
fi
