#!/usr/bin/env bash
# Set up and run the checks: ruff, mypy, then the whole test suite. With no arguments, also:
# the client, CLI, harness and specklepy tests against specklepy 2.x (Speckle's v2 SDK, which
# pins httpx below 0.26) at its oldest supported release, and the whole suite on Python 3.12
# and 3.13 where this machine has them (pyenv's or on PATH), each in a venv of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "dev,specklepy"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest tests "$@"
if [ $# -eq 0 ]; then
    bash scripts/setup.sh dev .venv-specklepy2 "specklepy==2.19.6"
    .venv-specklepy2/bin/python -m pytest -q -p no:cacheprovider \
        tests/client tests/integrations tests/server/test_specklepy_interop.py tests/test_cli.py \
        tests/bench
    for v in 3.12 3.13; do
        py=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v" 2>/dev/null |
             tail -1) || true
        [ -n "$py" ] || py=$(command -v "python$v") || true
        if [ -n "$py" ] && "$py" -c pass 2>/dev/null; then
            PYTHON="$py" bash scripts/setup.sh "dev,specklepy" ".venv-py$v"
            ".venv-py$v/bin/python" -m pytest -q -p no:cacheprovider tests
        else
            echo "test.sh: no python$v here; the suite ran on $(python3 --version) only" >&2
        fi
    done
fi
