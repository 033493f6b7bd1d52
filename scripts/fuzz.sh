#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz (built with `cmake --preset fuzz`, clang + ASan + UBSan).
#
#   scripts/fuzz.sh [seconds] [target...]     e.g. scripts/fuzz.sh 3600 safetensors codes
#
# Each target runs for `seconds` (default 600) on a scratch corpus ($QLIP_FUZZ_WORK, default
# /tmp/qlip-fuzz/<target>/corpus, kept between runs) seeded with tests/fuzz/corpus/<target> and
# tests/fuzz/regressions/<target>. Limits: -timeout=5 (a hang is an input slower than 5 s),
# -rss_limit_mb=2048, -malloc_limit_mb=2048. A crash, sanitizer report, hang or out-of-memory is
# copied into tests/fuzz/regressions/<target>/ (commit it once fixed) and makes the script fail.
# UBSan reports of known defects in code owned elsewhere (tests/fuzz/known/) are suppressed unless
# QLIP_FUZZ_STRICT=1. Without targets: every tests/fuzz/fuzz_*.cpp. With QLIP_FUZZ_JOBS=N, N targets run at once
# (scripts/test.sh uses that for its 30-second smoke run). The last line per target is libFuzzer's
# "DONE" summary: executions, coverage, exec/s and peak RSS (ERRORS.md keeps a table of them).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  for f in tests/fuzz/fuzz_*.cpp; do t=$(basename "$f" .cpp); targets+=("${t#fuzz_}"); done
fi
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
cmake --preset fuzz >/dev/null
cmake --build build/fuzz -j "$(nproc)" --target "${targets[@]/#/fuzz_}"

work_root=${QLIP_FUZZ_WORK:-/tmp/qlip-fuzz}
jobs=${QLIP_FUZZ_JOBS:-1}
# Inputs are small by design (the checkpoint header fuzz synthesizes the tensor data); the header
# and tokenizer seeds are ~16 kB / ~6 kB, so those two get more room.
max_len() {
  case "$1" in
    checkpoint_header) echo 32768 ;;
    tokenizer) echo 16384 ;;
    *) echo 8192 ;;
  esac
}

run_one() {
  local t=$1 work="$work_root/$1"
  mkdir -p "$work/corpus"
  rm -rf "$work/artifacts" && mkdir -p "$work/artifacts"  # only this run's findings are copied out
  local log="$work/fuzz.log"
  local rc=0
  local seeds=()
  for d in "tests/fuzz/corpus/$t" "tests/fuzz/regressions/$t"; do [ -d "$d" ] && seeds+=("$d"); done
  # UBSan: stop at the first report; known defects owned elsewhere (tests/fuzz/known/) are
  # suppressed unless QLIP_FUZZ_STRICT=1.
  local ubsan=halt_on_error=1:print_stacktrace=1
  [ "${QLIP_FUZZ_STRICT:-0}" = 1 ] || ubsan+=":suppressions=$PWD/tests/fuzz/known/ubsan.supp"
  UBSAN_OPTIONS=$ubsan ASAN_OPTIONS=detect_leaks=1 \
    "build/fuzz/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 \
    -malloc_limit_mb=2048 -max_len="$(max_len "$t")" -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "$work/corpus" "${seeds[@]}" \
    >"$log" 2>&1 || rc=$?
  local summary
  summary=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  local execs rss
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
  rss=$(grep -E '^stat::peak_rss_mb' "$log" | awk '{print $2}' || true)
  if ((rc != 0)); then
    mkdir -p "tests/fuzz/regressions/$t"
    for a in "$work/artifacts"/*; do
      [ -f "$a" ] && cp "$a" "tests/fuzz/regressions/$t/" && echo "fuzz $t: saved $(basename "$a") to tests/fuzz/regressions/$t/"
    done
    echo "fuzz $t: FAILED (exit $rc); log: $log"
    grep -E 'ERROR|SUMMARY|runtime error|escaped' "$log" | head -5 || true
    return 1
  fi
  echo "fuzz $t: ok, ${seconds} s, ${execs:-?} executions, peak RSS ${rss:-?} MB  ${summary}"
}

failed=0
pids=()
names=()
for t in "${targets[@]}"; do
  run_one "$t" &
  pids+=($!)
  names+=("$t")
  if ((${#pids[@]} >= jobs)); then
    wait "${pids[0]}" || failed=1
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done
exit $failed
