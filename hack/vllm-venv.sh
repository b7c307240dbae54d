#!/usr/bin/env bash
# Build (once) the venv in which vLLM 0.33 itself judges the project: its `vllm serve` parser and engine
# configuration take every rendered command, its Prometheus logger lists the metric families the simulator must
# match (hack/vllm_judge.py). CPU-only; about 2.5 GB and a few minutes of pip when cold. Cached under
# $SPECDEPLOY_CACHE, keyed by this script and hack/vllm/requirements.txt; prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
VLLM_VERSION=0.33.0
TORCH_VERSION=2.13.0  # vLLM 0.33 pins 2.14; the CPU wheel at hand is 2.13, and what the judge runs imports with it
CACHE=${SPECDEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/specdeploy}
key=$(cat hack/vllm/requirements.txt hack/vllm-venv.sh | sha256sum | cut -c1-12)
VENV=$CACHE/vllm-$VLLM_VERSION-$key
if [ ! -f "$VENV/.complete" ]; then
  echo "vllm-venv: building $VENV (vllm $VLLM_VERSION, CPU torch)" >&2
  rm -rf "$VENV" && mkdir -p "$CACHE"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --no-deps -r hack/vllm/requirements.txt >&2
  # The CPU build of torch: from pip's configured sources (this machine keeps it in its find-links), else
  # PyTorch's CPU index, else PyPI's default build with its CUDA libraries (a few GB more; it runs on a CPU too).
  "$VENV/bin/pip" install -q --no-deps "torch==$TORCH_VERSION+cpu" >&2 \
    || "$VENV/bin/pip" install -q --no-deps --index-url https://download.pytorch.org/whl/cpu "torch==$TORCH_VERSION+cpu" >&2 \
    || "$VENV/bin/pip" install -q "torch==$TORCH_VERSION" >&2
  "$VENV/bin/pip" install -q --no-deps "vllm==$VLLM_VERSION" >&2
  touch "$VENV/.complete"
fi
echo "$VENV/bin/python"
