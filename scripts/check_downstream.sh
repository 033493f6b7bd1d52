#!/usr/bin/env bash
# Installs qlip from an existing build folder into a scratch prefix and builds a tiny downstream
# project against it with find_package(qlip CONFIG REQUIRED); then the same via add_subdirectory.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
root=$PWD
args=("$root/tests/data/qlip/qlip-test-tiny" /usr/lib/python3/dist-packages/skimage/data/chelsea.png)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cmake --install "$build" --prefix "$scratch/prefix" >/dev/null
cmake -S tests/downstream -B "$scratch/find" -DCMAKE_PREFIX_PATH="$scratch/prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$scratch/find" -j "$(nproc)" >/dev/null
(cd "$scratch" && "$scratch/find/qlip_downstream" "${args[@]}")
cmake -S tests/downstream -B "$scratch/subdir" -DQLIP_DOWNSTREAM_USE_SUBDIRECTORY=ON \
      -DQLIP_SOURCE_DIR="$PWD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$scratch/subdir" -j "$(nproc)" >/dev/null
(cd "$scratch" && "$scratch/subdir/qlip_downstream" "${args[@]}")
