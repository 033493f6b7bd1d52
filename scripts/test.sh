#!/usr/bin/env bash
# Sets up a fresh machine, builds everything (tests under ASan + UBSan, every CUDA target compiled
# when nvcc exists) and runs the whole test suite. GPU tests skip themselves without a device.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
jobs=$(nproc)
# ccache: paths relative to the checkout, so a fresh clone elsewhere reuses earlier compilations.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
cmake --preset test
cmake --build --preset test -j "$jobs"
# The installed package must work for a downstream project (find_package(qlip)).
./scripts/check_downstream.sh build/test
ctest --preset test -j "$jobs"
