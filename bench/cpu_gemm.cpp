/// @file cpu_gemm.cpp
/// @brief linear() (Eigen SGEMM underneath) at the ViT-B/16 256-px shapes, 1 and 2 threads.
///
/// Args: {M, K, N, threads}. M = 256 is one image's patch tokens, 2048 = batch 8 × 256; (K, N) are
/// the qkv/out projections (768→768), a SwiGLU/decoder head (768↔2048) and the MLP (768↔3072).
/// Counter GFLOP (printed GFLOP=x/s) = 2·M·N·K per call over wall time for 2 threads (the main
/// thread's CPU time would overstate the rate) and over process CPU time for 1 thread (see below).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>

#include "qlip/core/allocator.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/cpu/gemm.hpp"
#include "qlip/cpu/threading.hpp"

namespace {

void fill(float* p, std::int64_t n, std::uint64_t seed, float scale) {
  qlip::Philox rng(seed);
  for (std::int64_t i = 0; i < n; ++i) p[i] = rng.normal(static_cast<std::uint64_t>(i)) * scale;
}

void BM_Linear(benchmark::State& state) {
  const std::int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  qlip::set_num_threads(threads);
  qlip::Tensor<float, 2> x({m, k}), w({n, k}), y({m, n});
  qlip::Tensor<float, 1> bias({n});
  fill(x.data(), x.numel(), 1, 1.0f);
  fill(w.data(), w.numel(), 2, 1.0f / std::sqrt(static_cast<float>(k)));
  fill(bias.data(), bias.numel(), 3, 0.1f);
  qlip::ops::linear(qlip::cpu_backend{}, x.view(), w.view(), bias.view(), y.view());  // warm-up
  for (auto _ : state) {
    qlip::ops::linear(qlip::cpu_backend{}, x.view(), w.view(), bias.view(), y.view());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP"] =
      benchmark::Counter(2.0 * static_cast<double>(m * n * k) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

template <std::int64_t Threads>
void vit_shapes(benchmark::internal::Benchmark* b) {
  const std::int64_t kn[][2] = {{768, 768}, {768, 2048}, {2048, 768}, {768, 3072}, {3072, 768}};
  for (std::int64_t m : {256, 2048})
    for (const auto& s : kn) b->Args({m, s[0], s[1], Threads});
}

// 2 threads: wall time (what a user waits for). 1 thread: process CPU time, which on the shared,
// oversubscribed build machines still measures the kernel (time slices lost to other processes
// are not counted); on an idle machine the two agree.
BENCHMARK(BM_Linear)->Apply(vit_shapes<2>)->ArgNames({"M", "K", "N", "threads"})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Linear)->Apply(vit_shapes<1>)->ArgNames({"M", "K", "N", "threads"})->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
