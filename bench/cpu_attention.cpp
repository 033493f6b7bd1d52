/// @file cpu_attention.cpp
/// @brief attention() at the ViT-B/16 256-px shape (12 heads × 257 tokens × 64, bidirectional) and
///        the text tower's (8 heads × 77 tokens × 64, causal), q/k/v as views into a fused qkv
///        buffer [B, T, 3, H, Dh] as the model produces them.
///
/// Counter GFLOP (printed GFLOP=x/s): the two GEMMs' useful work, 2·2·B·H·Dh·(visible (query, key)
/// pairs); the softmax is not counted.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>

#include "qlip/core/allocator.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/cpu/attention.hpp"
#include "qlip/cpu/threading.hpp"

namespace {

void BM_Attention(benchmark::State& state) {
  const std::int64_t batch = state.range(0), heads = state.range(1), t = state.range(2), dh = state.range(3);
  const auto mask = state.range(4) ? qlip::AttentionMask::causal : qlip::AttentionMask::none;
  const int threads = static_cast<int>(state.range(5));
  qlip::set_num_threads(threads);
  qlip::Tensor<float, 5> qkv({batch, t, 3, heads, dh});
  qlip::Tensor<float, 4> out({batch, t, heads, dh});
  qlip::Philox rng(1);
  for (std::int64_t i = 0; i < qkv.numel(); ++i) qkv.data()[i] = rng.normal(static_cast<std::uint64_t>(i));
  qlip::HostView<const float, 5> fused = qkv.view();
  qlip::Arena ws(qlip::ops::attention_workspace_bytes(batch, t, t, heads, threads));
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  auto run = [&] {
    qlip::ops::attention(qlip::cpu_backend{}, ws, fused.select(2, 0), fused.select(2, 1), fused.select(2, 2),
                         out.view(), scale, mask);
  };
  run();  // warm-up
  for (auto _ : state) {
    run();
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const double pairs = mask == qlip::AttentionMask::causal ? static_cast<double>(t) * (t + 1) / 2.0
                                                           : static_cast<double>(t) * t;
  state.counters["GFLOP"] = benchmark::Counter(4.0 * batch * heads * dh * pairs * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK(BM_Attention)
    ->ArgNames({"B", "H", "T", "Dh", "causal", "threads"})
    ->Args({1, 12, 257, 64, 0, 2})
    ->Args({8, 12, 257, 64, 0, 2})
    ->Args({8, 8, 77, 64, 1, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
// 1 thread on process CPU time: robust to the shared machine's other load (see cpu_gemm.cpp).
BENCHMARK(BM_Attention)
    ->ArgNames({"B", "H", "T", "Dh", "causal", "threads"})
    ->Args({1, 12, 257, 64, 0, 1})
    ->Args({8, 12, 257, 64, 0, 1})
    ->Args({8, 8, 77, 64, 1, 1})
    ->MeasureProcessCPUTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
