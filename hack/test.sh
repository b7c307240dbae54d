#!/usr/bin/env bash
# The test command: setup, lint, CRD freshness, then every test (unit, integration against a real local control
# plane, Prometheus and simulator processes, e2e, bench smoke). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
VENV=${SPECDEPLOY_VENV:-.venv}
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/python" hack/gen-crd.py --check
# pytest exits 5 when no test ran; with `set -e` that fails the run, as it must.
exec "$VENV/bin/pytest" -q -p no:cacheprovider "$@"
