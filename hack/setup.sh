#!/usr/bin/env bash
# Install what the project needs on Debian 12 (idempotent; apt only for what is missing), create .venv with the
# package and its test tools, and build or find the Kubernetes binaries (hack/build-kube.sh). The local cluster
# (hack/cluster.sh) also needs containerd, runc, the CNI plugins, iptables, buildah, mmdebstrap and a C compiler
# (the pause image).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

pkgs=()
command -v python3 >/dev/null || pkgs+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs+=(python3-venv)
command -v curl >/dev/null || pkgs+=(curl)
command -v openssl >/dev/null || pkgs+=(openssl)
command -v prometheus >/dev/null || pkgs+=(prometheus)
command -v kubectl >/dev/null || pkgs+=(kubernetes-client)
command -v containerd >/dev/null || pkgs+=(containerd)
command -v runc >/dev/null || pkgs+=(runc)
[ -x /usr/lib/cni/bridge ] || pkgs+=(containernetworking-plugins)
command -v iptables >/dev/null || pkgs+=(iptables)
command -v conntrack >/dev/null || pkgs+=(conntrack)
command -v buildah >/dev/null || pkgs+=(buildah)
command -v mmdebstrap >/dev/null || pkgs+=(mmdebstrap)
command -v gcc >/dev/null || pkgs+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f /usr/lib/aarch64-linux-gnu/libc.a ] || pkgs+=(libc6-dev)
command -v ip >/dev/null || pkgs+=(iproute2)
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "setup: apt-get install ${pkgs[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  # Debian starts the packaged Prometheus and containerd as services; the project runs its own, in its own
  # directories. Only services this run installed are stopped.
  for svc in prometheus containerd; do
    case " ${pkgs[*]} " in *" $svc "*) as_root systemctl disable --now "$svc" >/dev/null 2>&1 || true ;; esac
  done
fi

VENV=${SPECDEPLOY_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import specdeploy, pytest, ruff' 2>/dev/null || [ pyproject.toml -nt "$VENV/.installed" ]; then
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e '.[test]'
  touch "$VENV/.installed"
fi

hack/build-kube.sh >/dev/null
