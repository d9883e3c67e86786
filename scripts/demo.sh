#!/usr/bin/env bash
# Set up, then ingest a generated 20k-object model into ./data and print what the engine did.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "server"
.venv/bin/objstore demo --data ./data "$@"
