#!/usr/bin/env bash
# Make a Debian base image without a registry: debootstrap a minimal bookworm with Python 3.11
# (python3-venv: the service Dockerfiles install into a virtual environment) and the CA store,
# then `docker import` it. For hosts that cannot pull `python:3.11-slim-bookworm`; the result is
# passed to scripts/check_images.sh as --base. The root file system is cached as a tarball.
#
#   scripts/bootstrap_base_image.sh [TAG] [TARBALL]
#   defaults: cinebridge-base:bookworm  /tmp/cinebridge-base-bookworm.tar
set -euo pipefail

tag=${1:-cinebridge-base:bookworm}
tarball=${2:-/tmp/cinebridge-base-bookworm.tar}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [[ ! -s $tarball ]]; then
    root=$(mktemp -d /tmp/cinebridge-rootfs.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$root" "$mirror"
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/tmp/*
    tar --numeric-owner -C "$root" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
fi
docker import "$tarball" "$tag" >/dev/null
echo "$tag"
