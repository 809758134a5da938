#!/usr/bin/env bash
# Rebuild the zips of tests/data/release_formats: one side venv per nnU-Net version (created when missing), one
# build at a time. Usage: tests/release_formats/rebuild.sh [BUILD ...]   (default: every build below)
#   RELEASE_FORMATS_VENVS  where the side venvs live (default /tmp/release_formats_venvs)
#   OUT                    where zips and manifest.json go (default tests/data/release_formats)
set -euo pipefail
cd "$(dirname "$0")/../.."
VENVS=${RELEASE_FORMATS_VENVS:-/tmp/release_formats_venvs}
OUT=${OUT:-tests/data/release_formats}

# venv name -> what pip installs into it (torch pinned to the local CPU build; numpy<2 where the era had numpy 1)
declare -A PIP=(
  [2.1]="nnunetv2==2.1 dynamic-network-architectures==0.2 numpy<2"
  [2.2.1]="nnunetv2==2.2.1 dynamic-network-architectures==0.2 numpy<2"
  [2.4.2]="nnunetv2==2.4.2 numpy<2"
  [2.5.1]="nnunetv2==2.5.1 numpy<2"
  [2.6.0]="nnunetv2==2.6.0"
  [neuropoly-2.6.2]="nnunetv2-neuropoly==2.6.2 numpy<2"
  [2.8.1]="nnunetv2==2.8.1"
)
# build name -> "venv build.py-arguments"
declare -A BUILDS=(
  [2.1]="2.1 --checkpoint best"
  [2.2.1]="2.2.1 --checkpoint final"
  [2.4.2]="2.4.2 --checkpoint final"
  [2.5.1]="2.5.1 --checkpoint best"
  [2.6.0]="2.6.0 --checkpoint final"
  [neuropoly-2.6.2]="neuropoly-2.6.2 --checkpoint final"
  [neuropoly-2.6.2-trainer_class]="neuropoly-2.6.2 --checkpoint final --variant trainer_class"
  [neuropoly-2.6.2-crop_metadata]="neuropoly-2.6.2 --checkpoint best --variant crop_metadata"
  [2.8.1]="2.8.1 --checkpoint final"
)
ORDER=(2.1 2.2.1 2.4.2 2.5.1 2.6.0 neuropoly-2.6.2 neuropoly-2.6.2-trainer_class neuropoly-2.6.2-crop_metadata 2.8.1)
[ $# -gt 0 ] && ORDER=("$@")

for build in "${ORDER[@]}"; do
  read -r venv args <<<"${BUILDS[$build]}"
  py="$VENVS/venv-$venv/bin/python"
  if [ ! -x "$py" ]; then
    python3 -m venv "$VENVS/venv-$venv"
    # shellcheck disable=SC2086  # the PIP entry is a list of requirements
    "$VENVS/venv-$venv/bin/pip" install -q torch==2.13.0 ${PIP[$venv]}
  fi
  echo "== $build: $py tests/release_formats/build.py $args --out $OUT"
  # shellcheck disable=SC2086
  "$py" tests/release_formats/build.py $args --out "$OUT"
done
