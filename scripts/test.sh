#!/usr/bin/env bash
# Set up and run the checks: ruff, mypy, then the whole test suite. With no arguments, the
# suite again, each time in a venv of its own: on the oldest release of every dependency
# pyproject.toml allows (scripts/oldest-requirements.txt: specklepy 2.x, Speckle's v2 SDK, and
# the httpx 0.25 it holds to, among them), and on Python 3.12 and 3.13 where this machine has
# them (pyenv's or on PATH), there without the tests marked slow (processes, LMDB, limits:
# what the interpreter does not change), to keep CI well under 15 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "dev,specklepy"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# the whole suite runs on every core (pytest-xdist); with arguments for pytest, in one process
cores=""
[ $# -eq 0 ] && cores="-n auto --dist worksteal"
.venv/bin/python -m pytest $cores tests "$@"
if [ $# -eq 0 ]; then
    bash scripts/setup.sh "dev,specklepy" .venv-oldest \
        -r scripts/oldest-requirements.txt
    .venv-oldest/bin/python -m pytest $cores -q -p no:cacheprovider tests
    for v in 3.12 3.13; do
        py=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v" 2>/dev/null |
             tail -1) || true
        [ -n "$py" ] || py=$(command -v "python$v") || true
        if [ -n "$py" ] && "$py" -c pass 2>/dev/null; then
            PYTHON="$py" bash scripts/setup.sh "dev,specklepy" ".venv-py$v"
            ".venv-py$v/bin/python" -m pytest $cores -q -p no:cacheprovider -m "not slow" tests
        else
            echo "test.sh: no python$v here; the suite ran on $(python3 --version) only" >&2
        fi
    done
fi
