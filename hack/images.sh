#!/usr/bin/env bash
# Build, offline from any registry, the images the local cluster runs, and print their archives (one per line,
# "<reference> <docker-archive path>"):
#   - localhost/specdeploy:<content hash>: the project's own Dockerfile, built by Debian's buildah on a Debian
#     bookworm root filesystem made by mmdebstrap from Debian's packages (BASE build arg); the operator and the
#     simulator pods run from it;
#   - localhost/pause:3.2: the pod sandbox, Kubernetes' own build/pause/linux/pause.c compiled statically;
#   - the base itself (no USER, so it runs as root, like vllm/vllm-openai): tests run it under vLLM's pod spec.
# Everything is cached under $SPECDEPLOY_CACHE (default ~/.cache/specdeploy): the base root filesystem once, the
# project image per content hash of what the Dockerfile copies. Needs root (buildah, mmdebstrap).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${SPECDEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/specdeploy}
IMAGES=$CACHE/images
BASE_RECIPE=1  # bump when the base root filesystem's package list changes
BASE_TAR=$IMAGES/base-bookworm-r$BASE_RECIPE.tar
BASE_REF=localhost/specdeploy-base:bookworm-r$BASE_RECIPE
PAUSE_REF=localhost/pause:3.2
MIRROR=${SPECDEPLOY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# buildah keeps its own storage in the cache, never the system's /var/lib/containers.
BUILDAH=(buildah --root "$CACHE/buildah/root" --runroot "$CACHE/buildah/run" --storage-driver overlay)

log() { echo "images: $*" >&2; }
mkdir -p "$IMAGES"
exec 9>"$IMAGES/.lock"; flock 9

have_image() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }
save() {  # reference, archive: a docker-archive tarball containerd imports (ctr images import)
  [ -f "$2" ] || { rm -f "$2.partial"; "${BUILDAH[@]}" push -q "$1" "docker-archive:$2.partial:$1" >&2 && mv "$2.partial" "$2"; }
}

if [ ! -f "$BASE_TAR" ]; then
  log "making the Debian bookworm root filesystem (mmdebstrap, about a minute)"
  mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates --aptopt='Acquire::Retries "3"' \
    bookworm "$IMAGES/.partial-base.tar" "$MIRROR" >&2  # the format follows the name's .tar
  mv "$IMAGES/.partial-base.tar" "$BASE_TAR"
fi
if ! have_image "$BASE_REF"; then
  c=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" add "$c" "$BASE_TAR" / >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
  "${BUILDAH[@]}" commit -q --rm "$c" "$BASE_REF" >/dev/null
fi
save "$BASE_REF" "$IMAGES/base-bookworm-r$BASE_RECIPE.image.tar"
echo "$BASE_REF $IMAGES/base-bookworm-r$BASE_RECIPE.image.tar"

pause_tar=$IMAGES/pause-3.2.tar
if [ ! -f "$pause_tar" ]; then
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  src=$(hack/build-kube.sh)/src.tar.gz
  tar -xzf "$src" -C "$work" --strip-components=4 kubernetes-1.20.2/build/pause/linux/pause.c
  gcc -Os -Wall -Werror -static -DVERSION=v3.2-specdeploy -o "$work/pause" "$work/pause.c"
  c=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" copy "$c" "$work/pause" /pause >/dev/null
  "${BUILDAH[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$c"
  "${BUILDAH[@]}" commit -q --rm "$c" "$PAUSE_REF" >/dev/null
  save "$PAUSE_REF" "$pause_tar"
fi
echo "$PAUSE_REF $pause_tar"

# The project image is named by the content it is built from, so a changed source makes a new tag (and a rollout).
hash=$( (sha256sum Dockerfile pyproject.toml README.md; find operator -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
  -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-12)
ref=localhost/specdeploy:$hash
tar_=$IMAGES/specdeploy-$hash.tar
if [ ! -f "$tar_" ]; then
  log "building $ref from Dockerfile (buildah; the dependency layer is cached)"
  # The build trusts what this machine trusts (a TLS-inspecting proxy's CA, for instance) to reach PyPI.
  "${BUILDAH[@]}" bud -q --layers --network host --isolation chroot \
    -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    --build-arg BASE="$BASE_REF" -t "$ref" . >&2
  save "$ref" "$tar_"
  # Older project archives are superseded; keep the cache from growing by one image per source change.
  find "$IMAGES" -name 'specdeploy-*.tar' ! -name "specdeploy-$hash.tar" -delete
fi
echo "$ref $tar_"
