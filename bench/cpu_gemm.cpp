/// @file cpu_gemm.cpp
/// @brief The packed SGEMM at the ViT-B/16 256-px linear shapes, in the three forms training uses,
///        on 1 and 2 threads:
///   BM_LinearNT  y = x·wᵀ + b     (forward; w[N,K] packed per call)
///   BM_LinearPackedNT  the same with w packed once (PackedWeight, inference)
///   BM_LinearNN  dx = dy·w        (backward, input gradient: ops::gemm(dy, w))
///   BM_LinearTN  dw += dyᵀ·x      (backward, weight gradient: ops::gemm(dyᵀ, x))
///
/// Args: {M, K, N, threads}, the shape of the forward linear x[M,K]·w[N,K]ᵀ; every form does
/// 2·M·N·K FLOP. M = 256 is one image's patch tokens, 2048 = batch 8 × 256; (K, N) cover the
/// qkv/out projections (768→768), the SwiGLU/decoder widths (768↔2048) and the MLP (768↔3072).
/// Counter GFLOP (printed GFLOP=x/s) over wall time for 2 threads and over process CPU time for 1
/// thread (robust to other processes on a shared machine; on an idle one the two agree).
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

enum class Form { nt, packed_nt, nn, tn };

template <Form F>
void BM_Linear(benchmark::State& state) {
  const std::int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  qlip::set_num_threads(static_cast<int>(state.range(3)));
  qlip::Tensor<float, 2> x({m, k}), w({n, k}), y({m, n}), dx({m, k}), dw({n, k});
  qlip::Tensor<float, 1> bias({n});
  fill(x.data(), x.numel(), 1, 1.0f);
  fill(w.data(), w.numel(), 2, 1.0f / std::sqrt(static_cast<float>(k)));
  fill(y.data(), y.numel(), 4, 1.0f);  // plays dy in the backward forms
  fill(bias.data(), bias.numel(), 3, 0.1f);
  const qlip::PackedWeight packed(w.view());
  const qlip::cpu_backend cpu;
  auto once = [&] {
    if constexpr (F == Form::nt) qlip::ops::linear(cpu, x.view(), w.view(), bias.view(), y.view());
    if constexpr (F == Form::packed_nt) qlip::ops::linear(cpu, x.view(), packed, bias.view(), y.view());
    if constexpr (F == Form::nn) qlip::ops::gemm(cpu, y.view(), w.view(), dx.view());
    if constexpr (F == Form::tn) qlip::ops::gemm(cpu, y.view().transpose(0, 1), x.view(), dw.view(), 1.0f, 1.0f);
  };
  once();  // warm-up: scratch allocated, pages touched
  for (auto _ : state) {
    once();
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

#define QLIP_BENCH_FORM(NAME, FORM)                                                                              \
  BENCHMARK(BM_Linear<FORM>)->Name(NAME)->Apply(vit_shapes<1>)->ArgNames({"M", "K", "N", "threads"})              \
      ->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);                                                   \
  BENCHMARK(BM_Linear<FORM>)->Name(NAME)->Apply(vit_shapes<2>)->ArgNames({"M", "K", "N", "threads"})              \
      ->UseRealTime()->Unit(benchmark::kMillisecond);

QLIP_BENCH_FORM("BM_LinearNT", Form::nt)
QLIP_BENCH_FORM("BM_LinearPackedNT", Form::packed_nt)
QLIP_BENCH_FORM("BM_LinearNN", Form::nn)
QLIP_BENCH_FORM("BM_LinearTN", Form::tn)

}  // namespace

BENCHMARK_MAIN();
