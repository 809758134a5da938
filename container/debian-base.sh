#!/usr/bin/env bash
# A Debian base image made from the Debian archive alone (no container registry): debootstrap's minimal bookworm with
# Python 3, imported into podman (or docker) as IMAGE. For machines that reach a Debian mirror but no registry (CI here);
# everyone else builds the Containerfile on its default public base image.
#
#   container/debian-base.sh [IMAGE] [MIRROR]      (as root; needs debootstrap and podman or docker)
#   podman build --build-arg BASE=IMAGE -t rootlets_task .
set -euo pipefail
image="${1:-localhost/rootlets-base:bookworm}"
mirror="${2:-http://deb.debian.org/debian}"
engine="${CONTAINER_ENGINE:-$(command -v podman || command -v docker)}"
[ -n "$engine" ] || { echo "debian-base.sh: neither podman nor docker is installed" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debian-base.sh: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | "$engine" import --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "$image"
