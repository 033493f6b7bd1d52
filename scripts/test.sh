#!/usr/bin/env bash
# Sets up a fresh machine, builds everything (tests under ASan + UBSan, every CUDA target compiled
# when nvcc exists), runs the whole test suite (GPU tests skip themselves without a device), then a
# 30-second smoke run of each fuzz target.
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
# Fuzz smoke: every libFuzzer target of tests/fuzz for 30 s on top of its committed corpus and
# regressions (clang, ASan + UBSan; build/fuzz). Any crash, sanitizer report, hang over 5 s or
# input needing over 2 GB fails the run. scripts/fuzz.sh runs them for longer on demand.
QLIP_FUZZ_JOBS="$jobs" QLIP_FUZZ_WORK="$(mktemp -d)" ./scripts/fuzz.sh 30
