#!/usr/bin/env bash
# The GPU check: one prepared script for a lent GPU machine, in two steps.
#
#   bench/gpu_check.sh build   here, without a GPU: builds build/gpu (Release, sm_90) with the CUDA
#                              tests and kernel benchmarks; carry build/gpu to the GPU machine
#   bench/gpu_check.sh run     on the GPU machine: the device, every CUDA test (log + gtest XML),
#                              the kernel benchmarks (JSON), PyTorch on the same shapes
#                              (tools/bench_torch_cuda.py, JSON) and the side-by-side table
#                              (tools/gpu_check_summary.py), all under $OUT (default out/gpu_check)
#
# `run` rebuilds build/gpu there when the carried binaries do not start (other system libraries).
# Each part's exit status is recorded in $OUT/status.txt and the script goes on, so one failing
# part does not cost the others their device time.
set -uo pipefail
cd "$(dirname "$0")/.."
build_dir=build/gpu
mode=${1:-run}

build() {
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DQLIP_ENABLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DQLIP_BUILD_TESTS=ON -DQLIP_BUILD_BENCH=ON -DQLIP_BUILD_EXAMPLES=OFF "$@" &&
    cmake --build "$build_dir" -j "$(nproc)" --target test_cuda bench_cuda_kernels || return $?
  # Google Benchmark is a shared library on Debian; the GPU machine's image has none.
  mkdir -p "$build_dir/lib"
  ldd "$build_dir/bench/bench_cuda_kernels" | awk '/libbenchmark/ {print $3}' | xargs -r -I{} cp -L {} "$build_dir/lib/"
}

case "$mode" in
  build)
    build
    exit $?
    ;;
  run) ;;
  *)
    echo "usage: bench/gpu_check.sh build|run" >&2
    exit 2
    ;;
esac

export LD_LIBRARY_PATH="$PWD/$build_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
out=${OUT:-out/gpu_check}
mkdir -p "$out"
status="$out/status.txt"
: >"$status"
step() {  # step NAME COMMAND...: runs it, logs to $out/NAME.log, records its exit status
  local name=$1
  shift
  local t0=$SECONDS
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - t0))" | tee -a "$status"
  return $rc
}

step device nvidia-smi -q
if ! "$build_dir/tests/test_cuda" --gtest_list_tests >/dev/null 2>&1; then
  step rebuild build -G Ninja
fi
step test_cuda "$build_dir/tests/test_cuda" --gtest_output="xml:$out/test_cuda.xml"
step bench_cuda_kernels "$build_dir/bench/bench_cuda_kernels" --benchmark_format=json \
  --benchmark_out="$out/bench_cuda_kernels.json" --benchmark_out_format=json --benchmark_min_time=0.2
step bench_torch_cuda python3 tools/bench_torch_cuda.py --out "$out/bench_torch_cuda.json"
step summary python3 tools/gpu_check_summary.py "$out/bench_cuda_kernels.json" "$out/bench_torch_cuda.json"
cat "$out/summary.log" 2>/dev/null
grep -E "tests ran|PASSED|FAILED|SKIPPED \]" "$out/test_cuda.log" | head -20
