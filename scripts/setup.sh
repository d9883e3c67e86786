#!/usr/bin/env bash
# Create a venv (unless one works there) and install objstore with the given extras, e.g.
# "dev,specklepy".
# Usage: setup.sh [EXTRAS] [VENV_DIR] [REQUIREMENT ARG...]  (defaults: server, .venv);
# the venv is made with $PYTHON (default: python3). The install goes through uv (put in the
# venv from PyPI): ~5 s for the dev venv where pip took ~30, and CI makes four. pip does it
# when uv cannot be had or fails (.venv/install.log says which ran). Neither compiles every
# module at install: they are compiled when first imported.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-server}"
venv="${2:-.venv}"
shift $(( $# < 2 ? $# : 2 ))
py="$venv/bin/python"
# an existing venv is kept (making it again re-installs pip: ~7 s per serve.sh start)
"$py" -c pass 2>/dev/null || "${PYTHON:-python3}" -m venv "$venv"
log="$venv/install.log"
: >"$log"
if { [ -x "$venv/bin/uv" ] || "$py" -m pip install -q uv >>"$log" 2>&1; } &&
    UV_SYSTEM_CERTS=1 "$venv/bin/uv" pip install -q --python "$py" -e ".[${extras}]" "$@" \
        >>"$log" 2>&1; then
    exit 0
fi
echo "setup.sh: uv could not install; pip does" >>"$log"
if ! "$py" -m pip install -q --no-compile -e ".[${extras}]" "$@" >>"$log" 2>&1; then
    cat "$log" >&2
    echo "setup failed (log above)" >&2
    exit 1
fi
