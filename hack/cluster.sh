#!/usr/bin/env bash
# The local single-node cluster: `hack/cluster.sh up` (idempotent), `down`, `status`. See hack/cluster.py.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SPECDEPLOY_VENV:-.venv}
[ -x "$VENV/bin/python" ] || hack/setup.sh >&2
exec "$VENV/bin/python" hack/cluster.py "$@"
