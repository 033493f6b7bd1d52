/// @file cpu_bsq.cpp
/// @brief qlip::ops::bsq_quantize: u [M, 28] → bits [M, 28] uint8 + codes
///        [M, 28] f32, for M = 2048 (batch 8 × 256 tokens), 16384 and 131072 rows.
///        Counter GB (printed GB=x/s) counts u read (4 B) + bits (1 B) + codes (4 B) written per element.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>

#include "qlip/core/allocator.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/cpu/threading.hpp"

#if __has_include("qlip/cpu/bsq.hpp")
#include "qlip/cpu/bsq.hpp"
#define QLIP_BENCH_HAVE_BSQ 1
#endif

namespace {

void BM_BsqQuantize(benchmark::State& state) {
#ifdef QLIP_BENCH_HAVE_BSQ
  const std::int64_t m = state.range(0), l = state.range(1);
  qlip::set_num_threads(static_cast<int>(state.range(2)));
  qlip::Tensor<float, 2> u({m, l}), codes({m, l});
  qlip::Tensor<std::uint8_t, 2> bits({m, l});
  qlip::Philox rng(1);
  for (std::int64_t i = 0; i < u.numel(); ++i) u.data()[i] = rng.normal(static_cast<std::uint64_t>(i));
  const float scale = 1.0f / std::sqrt(static_cast<float>(l));
  qlip::ops::bsq_quantize(qlip::cpu_backend{}, u.view(), bits.view(), codes.view(), scale);
  for (auto _ : state) {
    qlip::ops::bsq_quantize(qlip::cpu_backend{}, u.view(), bits.view(), codes.view(), scale);
    benchmark::DoNotOptimize(codes.data());
    benchmark::DoNotOptimize(bits.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB"] = benchmark::Counter(static_cast<double>(m * l) * 9.0 * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
#else
  state.SkipWithError("include/qlip/cpu/bsq.hpp is not there yet");
  for (auto _ : state) {
  }
#endif
}

BENCHMARK(BM_BsqQuantize)
    ->ArgNames({"M", "L", "threads"})
    ->Args({2048, 28, 2})
    ->Args({16384, 28, 2})
    ->Args({131072, 28, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
// 1 thread on process CPU time: robust to the shared machine's other load (see cpu_gemm.cpp).
BENCHMARK(BM_BsqQuantize)
    ->ArgNames({"M", "L", "threads"})
    ->Args({2048, 28, 1})
    ->Args({16384, 28, 1})
    ->Args({131072, 28, 1})
    ->MeasureProcessCPUTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
