#!/usr/bin/env bash
# vLLM 0.33 itself judges what the project renders and simulates (hack/vllm_check.py; the vLLM venv is built on
# first use by hack/vllm-venv.sh). Arguments: resource files or directories, or --fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SPECDEPLOY_VENV:-.venv}
[ -x "$VENV/bin/python" ] || hack/setup.sh
exec "$VENV/bin/python" hack/vllm_check.py "$@"
