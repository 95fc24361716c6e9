#!/usr/bin/env bash
# `make run`: creates the sample lake if absent, then serves it on http://localhost:5001
# (DAPI_PORT, DAPI_DATA_DIR, DAPI_STATE_DIR and every other DAPI_* setting are honoured).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DAPI_DATA_DIR:-./data}
if [ ! -d "$data/nekt_raw" ]; then
    echo "make run: writing the sample lake into $data (takes a few seconds)"
    build/dapi sample-data "$data"
fi
export DAPI_PORT=${DAPI_PORT:-5001}
exec build/dapi serve --data-dir "$data"
