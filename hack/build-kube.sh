#!/usr/bin/env bash
# Build (once) the Kubernetes binaries this project tests against, and print the cache directory holding them:
# kube-apiserver, kube-controller-manager (the control plane), kube-scheduler, kubelet, kube-proxy (the node).
#
# Order of preference:
#   1. $KUBEBUILDER_ASSETS for the control plane, if it holds kube-apiserver and etcd (what envtest users
#      already have; hack/cluster.py uses those binaries first); the node binaries still come from the cache;
#   2. the cache ($SPECDEPLOY_CACHE, default ~/.cache/specdeploy/kube-v1.20.2-rN);
#   3. a build of Debian's `kubernetes` source package (v1.20.2 with vendor/) using Debian's Go 1.19,
#      about 5 minutes per group on 2 cores, stored in the cache. Two fixes make v1.20.2 work with Go >= 1.18:
#      - the vendored github.com/modern-go/reflect2 v1.0.1 crashes (SIGSEGV in mapiterinit as soon as a
#        custom resource is encoded); Debian's v1.0.2, the release that fixed exactly that, replaces it;
#      - go-openapi's type validator compares reflect.Zero(T) with reflect.ValueOf(data) by DeepEqual, which
#        since Go 1.18 holds for "" (so every empty string in a custom resource fails as "null"); the check
#        is reduced to its meaning, data == nil.
# Needs root (or sudo) for apt-get only when something is missing. Prints the directory on stdout, logs on stderr.
set -euo pipefail

KUBE_VERSION=v1.20.2
KUBE_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56
RECIPE=3  # bump when the build changes, so stale binaries are never reused
CACHE=${SPECDEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/specdeploy}/kube-${KUBE_VERSION}-r${RECIPE}
REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2

log() { echo "build-kube: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

WANT=(kube-scheduler kubelet kube-proxy)
if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then
  :
else
  [ -z "${KUBEBUILDER_ASSETS:-}" ] || log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks kube-apiserver or etcd; using the cache"
  WANT+=(kube-apiserver kube-controller-manager)
fi
missing() { local b; for b in "${WANT[@]}"; do [ -x "$CACHE/$b" ] || echo "$b"; done; }
have_all() { [ -z "$(missing)" ] && [ -x "$CACHE/etcd" ]; }
if have_all; then echo "$CACHE"; exit 0; fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"; flock 9          # two concurrent callers build once
if have_all; then echo "$CACHE"; exit 0; fi

need_pkgs=()
[ -x /usr/lib/go-1.19/bin/go ] || need_pkgs+=(golang-1.19-go)
command -v rsync >/dev/null || need_pkgs+=(rsync)
[ -x /usr/bin/etcd ] || need_pkgs+=(etcd-server)
command -v openssl >/dev/null || need_pkgs+=(openssl)
[ -f "$REFLECT2/go_above_118.go" ] || need_pkgs+=(golang-github-modern-go-reflect2-dev)
srcs=/etc/apt/sources.list.d/specdeploy-src.sources
if [ ! -f "$CACHE/src.tar.gz" ]; then
  if [ ! -f "$srcs" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources | as_root tee "$srcs" >/dev/null
  fi
  as_root apt-get update -qq >&2
elif [ ${#need_pkgs[@]} -gt 0 ]; then
  as_root apt-get update -qq >&2
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_pkgs[@]}" >&2
fi
ln -sf /usr/bin/etcd "$CACHE/etcd"

todo=$(missing)
if [ -n "$todo" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  if [ ! -f "$CACHE/src.tar.gz" ]; then
    log "fetching Debian's kubernetes source package"
    (cd "$work" && apt-get source --download-only kubernetes >&2)
    cp "$(ls "$work"/kubernetes_*.orig.tar.gz | head -n1)" "$CACHE/src.tar.gz"
  fi
  log "building $(echo $todo) $KUBE_VERSION (several minutes)"
  mkdir -p "$work/src"
  tar -xzf "$CACHE/src.tar.gz" -C "$work/src" --strip-components=1
  vendored="$work/src/vendor/github.com/modern-go/reflect2"
  rm -f "$vendored"/*.go "$vendored"/*.s
  cp "$REFLECT2"/*.go "$REFLECT2"/*.s "$vendored"/
  rm -f "$vendored"/*_test.go
  for f in vendor/github.com/go-openapi/validate/type.go vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go; do
    sed -i 's/if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {/if data == nil {/' "$work/src/$f"
    grep -q '^	if data == nil {$' "$work/src/$f" || { log "patch of $f failed"; exit 1; }
  done
  (
    cd "$work/src"
    export PATH=/usr/lib/go-1.19/bin:$PATH GOCACHE="$work/gocache"
    make WHAT="$(for b in $todo; do printf 'cmd/%s ' "$b"; done)" \
      KUBE_GIT_VERSION=$KUBE_VERSION KUBE_GIT_TREE_STATE=clean KUBE_GIT_COMMIT=$KUBE_COMMIT >&2
  )
  out=$(find "$work/src/_output" -type d -path '*/bin/linux/*' | head -n1)
  for b in $todo; do install -m 0755 "$out/$b" "$CACHE/"; done
fi
have_all
echo "$CACHE"
