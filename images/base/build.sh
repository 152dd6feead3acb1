#!/usr/bin/env bash
# Build the offline base image zoobench/base:bookworm-<hash12> without any registry:
# debootstrap a minimal Debian bookworm rootfs and `docker import` it.
# <hash12> is the sha256 of this recipe file, so an unchanged recipe is never rebuilt.
# Prints the tag on stdout (progress goes to stderr).
#
# Env: MIRROR (default http://deb.debian.org/debian), ZOOBENCH_BASE_FORCE=1 to rebuild anyway.
set -euo pipefail

SUITE=bookworm
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
# Runtime needs of the CPU runner images: a Python with venv (the wheels bring everything
# else), TLS roots, the OpenMP runtime and C++ runtime that manylinux wheels expect.
PACKAGES=python3,python3-venv,ca-certificates,libgomp1,libstdc++6,zlib1g

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
hash="$(cat "$here/build.sh" | sha256sum | cut -c1-12)"
tag="zoobench/base:${SUITE}-${hash}"

log() { echo "base: $*" >&2; }

if [ -z "${ZOOBENCH_BASE_FORCE:-}" ] && docker image inspect "$tag" >/dev/null 2>&1; then
  log "$tag exists; nothing to do"
  echo "$tag"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  log "debootstrap needs root; run as root (or build the base elsewhere and docker load it)"
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

work="$(mktemp -d /tmp/zoobench-base.XXXXXX)"
cleanup() { rm -rf --one-file-system "$work"; }
trap cleanup EXIT
rootfs="$work/rootfs"

log "debootstrap $SUITE (minbase) from $MIRROR into $rootfs"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2
  log "debootstrap failed (full log above, tail only)"
  exit 1
}

# Slim down: apt lists and caches, docs, man pages; keep the installed package list for audit.
chroot "$rootfs" dpkg-query -W -f '${Package}=${Version}\n' | sort >"$work/packages.txt"
mkdir -p "$rootfs/usr/share/zoobench"
cp "$work/packages.txt" "$rootfs/usr/share/zoobench/base-packages.txt"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
       "$rootfs"/var/log/*.log "$rootfs"/tmp/*
: >"$rootfs/etc/machine-id"

log "importing as $tag"
tar --numeric-owner -C "$rootfs" -c . | docker import \
  -c 'ENV LANG=C.UTF-8' \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'CMD ["/bin/bash"]' \
  -c "LABEL org.opencontainers.image.title=zoobench-base org.opencontainers.image.base.name=debian:${SUITE}-minbase org.zoobench.recipe.sha256=${hash}" \
  -m "zoobench offline base: debootstrap $SUITE minbase + $PACKAGES" \
  - "$tag" >/dev/null
echo "$tag"
