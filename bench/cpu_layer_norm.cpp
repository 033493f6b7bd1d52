/// @file cpu_layer_norm.cpp
/// @brief qlip::ops::layer_norm at the ViT-B width: [M, 768] rows, M = 2048
///        (batch 8 × 256 tokens) and 257 (one image). Counter GB (printed GB=x/s) counts x read + y written once.
#include <benchmark/benchmark.h>

#include <cstdint>

#include "qlip/core/allocator.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/cpu/threading.hpp"

#if __has_include("qlip/cpu/layer_norm.hpp")
#include "qlip/cpu/layer_norm.hpp"
#define QLIP_BENCH_HAVE_LAYER_NORM 1
#endif

namespace {

void BM_LayerNorm(benchmark::State& state) {
#ifdef QLIP_BENCH_HAVE_LAYER_NORM
  const std::int64_t m = state.range(0), d = state.range(1);
  qlip::set_num_threads(static_cast<int>(state.range(2)));
  qlip::Tensor<float, 2> x({m, d}), y({m, d});
  qlip::Tensor<float, 1> gamma({d}), beta({d});
  qlip::Philox rng(1);
  for (std::int64_t i = 0; i < x.numel(); ++i) x.data()[i] = rng.normal(static_cast<std::uint64_t>(i)) * 3.0f + 1.0f;
  for (std::int64_t i = 0; i < d; ++i) {
    gamma.data()[i] = 1.0f + 0.01f * static_cast<float>(i % 7);
    beta.data()[i] = 0.01f * static_cast<float>(i % 5);
  }
  qlip::ops::layer_norm(qlip::cpu_backend{}, x.view(), gamma.view(), beta.view(), 1e-5f, y.view());
  for (auto _ : state) {
    qlip::ops::layer_norm(qlip::cpu_backend{}, x.view(), gamma.view(), beta.view(), 1e-5f, y.view());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB"] = benchmark::Counter(2.0 * static_cast<double>(m * d) * sizeof(float) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
#else
  state.SkipWithError("include/qlip/cpu/layer_norm.hpp is not there yet");
  for (auto _ : state) {
  }
#endif
}

BENCHMARK(BM_LayerNorm)
    ->ArgNames({"M", "D", "threads"})
    ->Args({2048, 768, 2})
    ->Args({257, 768, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
// 1 thread on process CPU time: robust to the shared machine's other load (see cpu_gemm.cpp).
BENCHMARK(BM_LayerNorm)
    ->ArgNames({"M", "D", "threads"})
    ->Args({2048, 768, 1})
    ->Args({257, 768, 1})
    ->MeasureProcessCPUTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
