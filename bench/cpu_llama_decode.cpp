/// @file cpu_llama_decode.cpp
/// @brief Llama decoding on the CPU: one new token per sequence per step through the KV cache, for
///        the ~100M config (llama_configs::kLlama100M), with fp32 or bf16 decoding weights, at
///        batch 1 and 8, beside this machine's measured read bandwidth (the bound of a step that
///        reads every weight once).
///
/// Counters: tokens/s = batch · steps / s; weight_MB = bytes of weights one step reads (4 per
/// parameter in fp32, 2 in bf16: the tied head is the embedding, read once); bound_steps/s = the
/// read bandwidth measured by BM_ReadBandwidth in the same process ÷ weight_MB (400 or 200 MB, far
/// beyond the caches, so each step streams them from memory). Weights are a cheap deterministic
/// pattern (speed does not depend on the values). The cache is refilled with a 32-token prompt
/// every 64 steps (outside the timing), so attention reads 32–96 keys per step.
#include <benchmark/benchmark.h>
#include <omp.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "qlip/cpu.hpp"
#include "qlip/model/llama_checkpoint.hpp"
#include "qlip/model/llama_configs.hpp"

namespace {

using qlip::llama_configs::kLlama100M;
using Model = qlip::nn::LlamaModel<kLlama100M, qlip::cpu_backend>;

constexpr std::int64_t kPrompt = 32, kSteps = 64;

/// Sums n floats from p into independent lanes (so the adds never wait on each other and memory is
/// the limit): eight 256-bit accumulators with AVX2 (the compiler's 128-bit tuning on some CPUs
/// made the plain loop slower than the decoding kernels it is the bound of), plain lanes otherwise.
float sum_stream(const float* p, std::int64_t n) {
#if defined(__AVX2__)
  __m256 acc[8];
  for (auto& a : acc) a = _mm256_setzero_ps();
  for (std::int64_t i = 0; i + 64 <= n; i += 64)
    for (int u = 0; u < 8; ++u) acc[u] = _mm256_add_ps(acc[u], _mm256_loadu_ps(p + i + 8 * u));
  float lanes[8], total = 0.0f;
  for (auto& a : acc) {
    _mm256_storeu_ps(lanes, a);
    for (float l : lanes) total += l;
  }
  return total;
#else
  float acc[32] = {};
  for (std::int64_t i = 0; i + 32 <= n; i += 32) {
#pragma omp simd
    for (int j = 0; j < 32; ++j) acc[j] += p[i + j];
  }
  float total = 0.0f;
  for (float a : acc) total += a;
  return total;
#endif
}

/// GB/s of summing a 1 GiB buffer with every thread (the bound's denominator), best of 5, measured
/// once. Each thread sums its contiguous share (sum_stream).
double measured_read_gbps() {
  static const double gbps = [] {
    const std::int64_t n = std::int64_t{1} << 28;  // 1 GiB of floats
    std::vector<float> buf(static_cast<std::size_t>(n), 1.0f);
    double best = 0.0;
    for (int rep = 0; rep < 5; ++rep) {
      const double t0 = omp_get_wtime();
      float total = 0.0f;
#pragma omp parallel reduction(+ : total)
      {
        const std::int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        const std::int64_t b = n * t / nt, e = n * (t + 1) / nt;
        total += sum_stream(buf.data() + b, e - b);
      }
      const double dt = omp_get_wtime() - t0;
      benchmark::DoNotOptimize(total);
      best = std::max(best, static_cast<double>(n) * 4.0 / dt / 1e9);
    }
    return best;
  }();
  return gbps;
}

void BM_ReadBandwidth(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(measured_read_gbps());
  state.counters["GB/s"] = measured_read_gbps();
}

struct Decoder {
  qlip::train::ParameterStore store;
  std::unique_ptr<Model> model;
  Decoder() {
    qlip::LlamaRuntime rt = qlip::llama_configs::llama32_runtime();
    rt.max_positions = kPrompt + kSteps;
    model = std::make_unique<Model>(rt);
    qlip::bind_llama(*model, store, qlip::train::Gradients::none);
    qlip::HostView<float, 1> v = store.values();
    for (std::int64_t i = 0; i < v.size(0); ++i)
      v(i) = 0.02f * static_cast<float>((i * 2654435761u) % 2001 - 1000) / 1000.0f;
  }
};

/// state.range(0) = batch, state.range(1) = 1 for bf16 decoding weights.
void BM_LlamaDecode100M(benchmark::State& state) {
  static Decoder d;
  const std::int64_t batch = state.range(0);
  const bool bf16 = state.range(1) != 0;
  d.model->set_decode_weights(bf16 ? qlip::nn::DecodeWeights::bf16 : qlip::nn::DecodeWeights::f32);
  qlip::nn::KvCache<kLlama100M> cache(batch, kPrompt + kSteps);
  qlip::Arena arena(Model::decode_workspace_bytes(batch, kPrompt));
  qlip::Tensor<float, 2> logits({batch, kLlama100M.vocab_size});
  std::vector<std::int32_t> prompt(static_cast<std::size_t>(batch * kPrompt));
  for (std::size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<std::int32_t>((i * 7919) % 32000);
  std::vector<std::int32_t> next(static_cast<std::size_t>(batch), 13);
  auto refill = [&] {
    cache.clear();
    d.model->decode(arena, qlip::HostView<const std::int32_t, 1>(prompt.data(), {batch * kPrompt}), cache, batch,
                    kPrompt, logits.view());
  };
  refill();
  std::int64_t steps = 0;
  for (auto _ : state) {
    if (cache.length() == kPrompt + kSteps) {
      state.PauseTiming();
      refill();
      state.ResumeTiming();
    }
    d.model->decode(arena, qlip::HostView<const std::int32_t, 1>(next.data(), {batch}), cache, batch, 1,
                    logits.view());
    benchmark::DoNotOptimize(logits.data());
    ++steps;
  }
  const double weight_bytes = static_cast<double>(d.store.parameter_count()) * (bf16 ? 2.0 : 4.0);
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(steps * batch), benchmark::Counter::kIsRate);
  state.counters["steps/s"] = benchmark::Counter(static_cast<double>(steps), benchmark::Counter::kIsRate);
  state.counters["weight_MB"] = weight_bytes / 1e6;
  // Filled in by tools/compare_torch_llama.py from steps/s and GB/s; printed here for a quick look.
  state.counters["bound_steps/s"] = measured_read_gbps() * 1e9 / weight_bytes;
}

BENCHMARK(BM_ReadBandwidth)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LlamaDecode100M)
    ->ArgNames({"batch", "bf16"})
    ->ArgsProduct({{1, 8}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);

}  // namespace

BENCHMARK_MAIN();
