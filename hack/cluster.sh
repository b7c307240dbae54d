#!/usr/bin/env bash
# The local single-node cluster: `hack/cluster.sh up` (idempotent), `down`, `status`. See hack/cluster.py.
# `up` first installs what is missing (hack/setup.sh: apt, .venv, the Kubernetes build), so it works on a fresh
# Debian 12 machine; it needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" != up ] || hack/setup.sh >&2
exec "${SPECDEPLOY_VENV:-.venv}/bin/python" hack/cluster.py "$@"
