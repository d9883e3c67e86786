#!/usr/bin/env bash
# Set up and run the checks: ruff, mypy, then the whole test suite; with no arguments, also
# the client, CLI, harness and specklepy tests against specklepy 2.x (Speckle's v2 SDK, which
# pins httpx below 0.26) at its oldest supported release, in a venv of their own.
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
fi
