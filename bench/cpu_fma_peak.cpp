/// @file cpu_fma_peak.cpp
/// @brief Measured fp32 FMA peak of this machine: 16 independent accumulator registers (zmm or
///        ymm) so FMA latency is hidden, per thread; 1 and 2 OpenMP threads. The denominator for
///        "% of peak" in docs/PERFORMANCE.md.
///
/// Counter GFLOP (printed as GFLOP=x/s) = threads · iterations · registers · lanes · 2 over wall time.
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>

#include <cstdint>

namespace {

constexpr int kAccumulators = 16;
constexpr std::int64_t kInner = 1 << 20;

#if defined(__AVX512F__)
/// One thread's FMA loop on zmm registers; returns a value that depends on every accumulator.
__attribute__((noinline)) float fma_loop_512(float seed) {
  __m512 acc[kAccumulators];
  for (int r = 0; r < kAccumulators; ++r) acc[r] = _mm512_set1_ps(seed + static_cast<float>(r));
  const __m512 mul = _mm512_set1_ps(0.999999f), add = _mm512_set1_ps(1e-7f);
  for (std::int64_t i = 0; i < kInner; ++i) {
#pragma GCC unroll 16
    for (int r = 0; r < kAccumulators; ++r) acc[r] = _mm512_fmadd_ps(acc[r], mul, add);
  }
  __m512 sum = acc[0];
  for (int r = 1; r < kAccumulators; ++r) sum = _mm512_add_ps(sum, acc[r]);
  return _mm512_reduce_add_ps(sum);
}
#endif

#if defined(__AVX2__) && defined(__FMA__)
__attribute__((noinline)) float fma_loop_256(float seed) {
  __m256 acc[kAccumulators];
  for (int r = 0; r < kAccumulators; ++r) acc[r] = _mm256_set1_ps(seed + static_cast<float>(r));
  const __m256 mul = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-7f);
  for (std::int64_t i = 0; i < kInner; ++i) {
#pragma GCC unroll 16
    for (int r = 0; r < kAccumulators; ++r) acc[r] = _mm256_fmadd_ps(acc[r], mul, add);
  }
  __m256 sum = acc[0];
  for (int r = 1; r < kAccumulators; ++r) sum = _mm256_add_ps(sum, acc[r]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  float s = 0;
  for (float l : lanes) s += l;
  return s;
}
#endif

template <int Lanes, float (*Loop)(float)>
void BM_FmaPeak(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  float sink = 0;
  for (auto _ : state) {
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    sink += Loop(static_cast<float>(omp_get_thread_num()));
    benchmark::DoNotOptimize(sink);
  }
  state.counters["GFLOP"] = benchmark::Counter(
      static_cast<double>(threads) * kInner * kAccumulators * Lanes * 2.0 * 1e-9,
      benchmark::Counter::kIsIterationInvariantRate);
}

#if defined(__AVX512F__)
// Wall time for 1 and 2 threads, plus 1 thread on process CPU time (robust to other load).
BENCHMARK(BM_FmaPeak<16, fma_loop_512>)->Name("BM_FmaPeak_avx512")->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK(BM_FmaPeak<16, fma_loop_512>)->Name("BM_FmaPeak_avx512")->ArgName("threads")->Arg(1)->MeasureProcessCPUTime();
#endif
#if defined(__AVX2__) && defined(__FMA__)
BENCHMARK(BM_FmaPeak<8, fma_loop_256>)->Name("BM_FmaPeak_avx2")->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK(BM_FmaPeak<8, fma_loop_256>)->Name("BM_FmaPeak_avx2")->ArgName("threads")->Arg(1)->MeasureProcessCPUTime();
#endif

}  // namespace

BENCHMARK_MAIN();
