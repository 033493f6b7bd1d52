/// @file cuda_kernels.cu
/// @brief CUDA kernel benchmarks (manual timing with CUDA events, CONVENTIONS.md §11): LayerNorm
///        and fused BSQ at ViT-B/16 256px shapes, the fused AdamW step over a flat buffer and the
///        cross-entropy backward at a Llama vocabulary, reported as achieved GB/s; the cuBLASLt GEMM
///        (fp32, TF32, bf16 inputs) at ViT-B and Llama-1B linear shapes and the attention forward
///        (ViT-B/16 at 256 px, bidirectional; a Llama-1B prefill, causal) as TFLOP/s. Without a device every
///        benchmark reports SkipWithError instead of crashing.
#include <benchmark/benchmark.h>

#include <vector>

#include "attention.cuh"
#include "bsq.cuh"
#include "common.cuh"
#include "cross_entropy.cuh"
#include "gemm.cuh"
#include "layer_norm.cuh"
#include "optimizer.cuh"

namespace {

using namespace qlip;

/// Times `launch` with CUDA events; one manual-time iteration per benchmark iteration.
template <class F>
void time_with_events(benchmark::State& state, F&& launch) {
  cudaEvent_t start, stop;
  QLIP_CUDA_CHECK(cudaEventCreate(&start));
  QLIP_CUDA_CHECK(cudaEventCreate(&stop));
  launch();  // warm-up
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  for (auto _ : state) {
    QLIP_CUDA_CHECK(cudaEventRecord(start));
    launch();
    QLIP_CUDA_CHECK(cudaEventRecord(stop));
    QLIP_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    QLIP_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    state.SetIterationTime(ms / 1e3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

void BM_CudaLayerNorm(benchmark::State& state) {
  if (!cuda::device_available()) return state.SkipWithError("no CUDA device");
  const std::int64_t M = state.range(0), D = state.range(1);
  cuda::DeviceBuffer<float> x(M * D), y(M * D), g(D), b(D);
  QLIP_CUDA_CHECK(cudaMemset(x.data(), 0, sizeof(float) * M * D));
  QLIP_CUDA_CHECK(cudaMemset(g.data(), 0, sizeof(float) * D));
  QLIP_CUDA_CHECK(cudaMemset(b.data(), 0, sizeof(float) * D));
  time_with_events(state, [&] {
    ops::layer_norm(cuda_backend{}, x.view<2>({M, D}), g.view<1>({D}), b.view<1>({D}), 1e-6f, y.view<2>({M, D}));
  });
  state.SetBytesProcessed(state.iterations() * M * D * 2 * sizeof(float));
}
BENCHMARK(BM_CudaLayerNorm)->Args({256, 768})->Args({2048, 768})->Args({65536, 768})->UseManualTime();

void BM_CudaBsqEncode(benchmark::State& state) {
  if (!cuda::device_available()) return state.SkipWithError("no CUDA device");
  const std::int64_t M = state.range(0), L = 28;
  cuda::DeviceBuffer<float> h(M * L), u(M * L), codes(M * L);
  cuda::DeviceBuffer<std::uint8_t> bits(M * L);
  cuda::DeviceBuffer<std::uint32_t> index(M);
  QLIP_CUDA_CHECK(cudaMemset(h.data(), 0, sizeof(float) * M * L));
  time_with_events(state, [&] {
    ops::bsq_encode(cuda_backend{}, h.view<2>({M, L}), u.view<2>({M, L}), bits.view<2>({M, L}),
                    codes.view<2>({M, L}), index.view<1>({M}), 0.1889822365f);
  });
  state.SetBytesProcessed(state.iterations() * M * (L * (4 + 4 + 1 + 4) + 4));
}
BENCHMARK(BM_CudaBsqEncode)->Arg(2048)->Arg(65536)->Arg(1 << 20)->UseManualTime();

/// One AdamW step over n parameters in segments of 4M (a large model's tensors): reads p, g, m, v
/// and writes p, m, v.
void BM_CudaAdamW(benchmark::State& state) {
  if (!cuda::device_available()) return state.SkipWithError("no CUDA device");
  const std::int64_t n = state.range(0), seg = std::int64_t{1} << 22;
  cuda::DeviceBuffer<float> p(n), g(n), m(n), v(n);
  for (auto* b : {&p, &g, &m, &v}) QLIP_CUDA_CHECK(cudaMemset(b->data(), 0, sizeof(float) * n));
  std::vector<OptimizerSegment> segments;
  for (std::int64_t o = 0; o < n; o += seg)
    segments.push_back({.offset = o, .numel = std::min(seg, n - o), .lr = 1e-4, .weight_decay = 0.05});
  const cuda::OptimizerWorkspace ws = cuda::OptimizerWorkspace::for_segments(segments);
  AdamHyperParams hp;
  time_with_events(state, [&] {
    ops::adamw_step(cuda_backend{}, p.view<1>({n}), g.view<1>({n}), m.view<1>({n}), v.view<1>({n}), segments, hp, ws);
  });
  state.SetBytesProcessed(state.iterations() * n * 7 * static_cast<std::int64_t>(sizeof(float)));
}
BENCHMARK(BM_CudaAdamW)->Arg(100'000'000)->UseManualTime();

/// dlogits of the token cross-entropy for N rows over a vocabulary of V: reads the logits twice
/// (logsumexp, then softmax), writes dlogits.
void BM_CudaCrossEntropyBackward(benchmark::State& state) {
  if (!cuda::device_available()) return state.SkipWithError("no CUDA device");
  const std::int64_t rows = state.range(0), vocab = state.range(1);
  cuda::DeviceBuffer<float> z(rows * vocab), dz(rows * vocab);
  QLIP_CUDA_CHECK(cudaMemset(z.data(), 0, sizeof(float) * rows * vocab));
  std::vector<std::int32_t> targets(static_cast<std::size_t>(rows), 1);
  cuda::DeviceBuffer<std::int32_t> t(rows);
  cuda::copy_to_device(t.data(), targets.data(), rows);
  const HostView<const std::int32_t, 1> t_host(targets.data(), {rows});
  time_with_events(state, [&] {
    ops::cross_entropy_backward(cuda_backend{}, z.view<2>({rows, vocab}), t_host, t.view<1>({rows}), 1.0,
                                dz.view<2>({rows, vocab}));
  });
  state.SetBytesProcessed(state.iterations() * rows * vocab * 3 * static_cast<std::int64_t>(sizeof(float)));
}
BENCHMARK(BM_CudaCrossEntropyBackward)->Args({2048, 32000})->Args({4096, 128256})->UseManualTime();

/// y = x·wᵀ through cuBLASLt for x [M, K], w [N, K]; range(3): 0 fp32, 1 TF32, 2 bf16 inputs.
void BM_CudaLinear(benchmark::State& state) {
  if (!cuda::device_available()) return state.SkipWithError("no CUDA device");
  const std::int64_t m = state.range(0), k = state.range(1), n = state.range(2), mode = state.range(3);
  const cuda::BlasLt lt;
  cuda::DeviceBuffer<float> y(m * n);
  if (mode == 2) {
    cuda::DeviceBuffer<bf16> x(m * k), w(n * k);
    QLIP_CUDA_CHECK(cudaMemset(x.data(), 0, sizeof(bf16) * m * k));
    QLIP_CUDA_CHECK(cudaMemset(w.data(), 0, sizeof(bf16) * n * k));
    const DeviceView<const bf16, 2> wt = DeviceView<const bf16, 2>(w.view<2>({n, k})).transpose(0, 1);
    time_with_events(state, [&] { ops::gemm(cuda_backend{}, lt, x.view<2>({m, k}), wt, y.view<2>({m, n})); });
  } else {
    cuda::DeviceBuffer<float> x(m * k), w(n * k);
    QLIP_CUDA_CHECK(cudaMemset(x.data(), 0, sizeof(float) * m * k));
    QLIP_CUDA_CHECK(cudaMemset(w.data(), 0, sizeof(float) * n * k));
    const cuda::FloatMath math = mode == 1 ? cuda::FloatMath::tf32 : cuda::FloatMath::fp32;
    time_with_events(state, [&] {
      ops::linear(cuda_backend{}, lt, x.view<2>({m, k}), w.view<2>({n, k}), {}, y.view<2>({m, n}), math);
    });
  }
  state.counters["TFLOP/s"] = benchmark::Counter(2.0 * m * k * n * state.iterations() / 1e12, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_CudaLinear)
    ->ArgNames({"M", "K", "N", "fp32_tf32_bf16"})
    ->ArgsProduct({{16384}, {768}, {3072}, {0, 1, 2}})
    ->ArgsProduct({{16384}, {3072}, {768}, {0, 1, 2}})
    ->ArgsProduct({{8192}, {2048}, {8192}, {0, 1, 2}})
    ->UseManualTime();

/// The attention forward for q [B, T, Hq, 64], k/v [B, T, Hkv, 64]; range(4) = 1 for causal.
/// FLOPs: 4·Dh per visible (query, key) pair and head (q·k and p·v).
void BM_CudaAttention(benchmark::State& state) {
  if (!cuda::device_available()) return state.SkipWithError("no CUDA device");
  const std::int64_t b = state.range(0), t = state.range(1), hq = state.range(2), hkv = state.range(3), dh = 64;
  const bool causal = state.range(4) != 0;
  cuda::DeviceBuffer<float> q(b * t * hq * dh), kv(b * t * hkv * dh), out(b * t * hq * dh);
  QLIP_CUDA_CHECK(cudaMemset(q.data(), 0, sizeof(float) * q.size()));
  QLIP_CUDA_CHECK(cudaMemset(kv.data(), 0, sizeof(float) * kv.size()));
  const DeviceView<const float, 4> kvv = kv.view<4>({b, t, hkv, dh});
  time_with_events(state, [&] {
    ops::attention(cuda_backend{}, q.view<4>({b, t, hq, dh}), kvv, kvv, out.view<4>({b, t, hq, dh}), 0.125f,
                   causal ? AttentionMask::causal : AttentionMask::none);
  });
  const double pairs = causal ? t * (t + 1) / 2.0 : static_cast<double>(t) * t;
  state.counters["TFLOP/s"] =
      benchmark::Counter(4.0 * dh * pairs * hq * b * state.iterations() / 1e12, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_CudaAttention)
    ->ArgNames({"B", "T", "Hq", "Hkv", "causal"})
    ->Args({64, 257, 12, 12, 0})
    ->Args({4, 2048, 32, 8, 1})
    ->UseManualTime();

}  // namespace

BENCHMARK_MAIN();
