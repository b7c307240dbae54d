#!/usr/bin/env bash
# The demo command: installs what is missing (hack/setup.sh), then runs hack/demo.py (Ctrl-C to stop).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
exec "${SPECDEPLOY_VENV:-.venv}/bin/python" hack/demo.py "$@"
