#!/usr/bin/env bash
# Main job: set up .venv, make sure project "demo" exists, print a fresh token and curl lines,
# then serve the Speckle object routes on the LMDB store in ./data (OBJSTORE_DATA overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh server
DATA="${OBJSTORE_DATA:-./data}"
PORT="${OBJSTORE_PORT:-8000}"
OBJ=.venv/bin/objstore
$OBJ project list --data "$DATA" 2>/dev/null | grep -q '^demo	' || $OBJ project create demo --owner demo --data "$DATA"
TOKEN=$($OBJ token create --user demo --name readme --replace --data "$DATA" 2>/dev/null)
URL="http://127.0.0.1:${PORT}"
cat <<MSG

objstore is starting on ${URL} with data in ${DATA}
token for project "demo": ${TOKEN}
try:
  echo '[{"id":"hello","speckle_type":"Base"}]' | curl -H "Authorization: Bearer ${TOKEN}" -F 'batch=@-;type=application/json' ${URL}/objects/demo
  curl -H "Authorization: Bearer ${TOKEN}" ${URL}/objects/demo/hello/single

MSG
exec $OBJ serve --data "$DATA" --port "$PORT" "$@"
