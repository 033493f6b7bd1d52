/// @file cpu_llama_decode.cpp
/// @brief Llama decoding on the CPU: one new token per sequence per step through the KV cache, for
///        the ~100M config (llama_configs::kLlama100M), with fp32 or bf16 decoding weights, at
///        batch 1 and 8, beside this machine's measured read bandwidth (the bound of a step that
///        reads every weight once).
///
/// Counters: tokens/s = batch · steps / s; weight_MB = bytes of weights one step reads (4 per
/// parameter in fp32, 2 in bf16: the tied head is the embedding, read once); GB/s (and its min and
/// max) = the read bandwidth measured between segments of 16 steps; of_bound = the median over
/// segments of steps/s ÷ (GB/s around the segment ÷ weight_MB): 400 or 200 MB, far beyond the
/// caches, so each step streams them from memory. Weights are a cheap deterministic
/// pattern (speed does not depend on the values). The cache is refilled with a 32-token prompt
/// every 64 steps (outside the timing), so attention reads 32–96 keys per step.
#include <benchmark/benchmark.h>
#include <omp.h>
#if defined(__AVX2__) || defined(__AVX512F__)
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
/// the limit): sixteen 512-bit accumulators with AVX-512, eight 256-bit ones with AVX2 (the
/// compiler's 128-bit tuning on some CPUs made the plain loop slower than the decoding kernels it
/// is the bound of), plain lanes otherwise. With prefetch (x86 SIMD only), each line is also
/// prefetched 8 KiB ahead, as the decoding kernels do: the best of both is the bound.
float sum_stream(const float* p, std::int64_t n, [[maybe_unused]] bool prefetch) {
#if defined(__AVX512F__)
  __m512 acc[16];
  for (auto& a : acc) a = _mm512_setzero_ps();
  for (std::int64_t i = 0; i + 256 <= n; i += 256)
    for (int u = 0; u < 16; ++u) {
      if (prefetch) _mm_prefetch(reinterpret_cast<const char*>(p + i + 16 * u) + 8192, _MM_HINT_T0);
      acc[u] = _mm512_add_ps(acc[u], _mm512_loadu_ps(p + i + 16 * u));
    }
  float total = 0.0f;
  for (auto& a : acc) total += _mm512_reduce_add_ps(a);
  return total;
#elif defined(__AVX2__)
  __m256 acc[8];
  for (auto& a : acc) a = _mm256_setzero_ps();
  for (std::int64_t i = 0; i + 64 <= n; i += 64)
    for (int u = 0; u < 8; ++u) {
      if (prefetch && u % 2 == 0) _mm_prefetch(reinterpret_cast<const char*>(p + i + 8 * u) + 8192, _MM_HINT_T0);
      acc[u] = _mm256_add_ps(acc[u], _mm256_loadu_ps(p + i + 8 * u));
    }
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

/// GB/s of summing a 1 GiB buffer with every thread now, the best of `passes` (alternately
/// without and with prefetch). Each thread sums its contiguous share (sum_stream). The buffer is
/// allocated and touched once per process.
double read_gbps_now(int passes = 6) {
  const std::int64_t n = std::int64_t{1} << 28;  // 1 GiB of floats
  static std::vector<float> buf(static_cast<std::size_t>(n), 1.0f);
  double best = 0.0;
  for (int rep = 0; rep < passes; ++rep) {
    const bool prefetch = rep % 2 == 1;
    const double t0 = omp_get_wtime();
    float total = 0.0f;
#pragma omp parallel reduction(+ : total)
    {
      const std::int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
      const std::int64_t b = n * t / nt, e = n * (t + 1) / nt;
      total += sum_stream(buf.data() + b, e - b, prefetch);
    }
    const double dt = omp_get_wtime() - t0;
    benchmark::DoNotOptimize(total);
    best = std::max(best, static_cast<double>(n) * 4.0 / dt / 1e9);
  }
  return best;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t h = v.size() / 2;
  return v.size() % 2 == 1 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

/// The read bandwidth of the process's first measurement (BM_ReadBandwidth).
double measured_read_gbps() {
  static const double gbps = read_gbps_now();
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
  const double weight_bytes = static_cast<double>(d.store.parameter_count()) * (bf16 ? 2.0 : 4.0);
  // This machine's bandwidth flips between levels tens of percent apart within seconds (a shared
  // VM), so the bound is measured around every segment of kSegment steps (outside the timing):
  // each segment's fraction of the bound uses the better of the readings before and after it,
  // and the case reports the median fraction.
  constexpr std::int64_t kSegment = 16;
  std::vector<double> fractions, readings{read_gbps_now(2)};
  std::int64_t steps = 0;
  double segment_start = omp_get_wtime();
  for (auto _ : state) {
    d.model->decode(arena, qlip::HostView<const std::int32_t, 1>(next.data(), {batch}), cache, batch, 1,
                    logits.view());
    benchmark::DoNotOptimize(logits.data());
    if (++steps % kSegment == 0 || cache.length() == kPrompt + kSteps) {
      state.PauseTiming();
      const double seconds = omp_get_wtime() - segment_start;
      const std::int64_t done = (steps - 1) % kSegment + 1;
      readings.push_back(read_gbps_now(2));
      const double gbps = std::max(readings.end()[-2], readings.back());
      fractions.push_back(static_cast<double>(done) / seconds / (gbps * 1e9 / weight_bytes));
      if (cache.length() == kPrompt + kSteps) refill();
      segment_start = omp_get_wtime();
      state.ResumeTiming();
    }
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(steps * batch), benchmark::Counter::kIsRate);
  state.counters["steps/s"] = benchmark::Counter(static_cast<double>(steps), benchmark::Counter::kIsRate);
  state.counters["weight_MB"] = weight_bytes / 1e6;
  state.counters["GB/s"] = median(readings);
  state.counters["GB/s_min"] = *std::min_element(readings.begin(), readings.end());
  state.counters["GB/s_max"] = *std::max_element(readings.begin(), readings.end());
  if (!fractions.empty()) state.counters["of_bound"] = median(fractions);
}

BENCHMARK(BM_ReadBandwidth)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LlamaDecode100M)
    ->ArgNames({"batch", "bf16"})
    ->ArgsProduct({{1, 8}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);

}  // namespace

BENCHMARK_MAIN();
