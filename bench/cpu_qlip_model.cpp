/// @file cpu_qlip_model.cpp
/// @brief The QLIP-B-16-256 image round trip on the CPU backend: encode_image (vision tower + BSQ
///        quantizer), decode (indices → pixels) and the two together, at batch 1 and 8.
///
/// Weights: a checkpoint folder when QLIP_BENCH_CKPT is set (e.g. one made by
/// `python3 tools/qlip_reference.py make-checkpoint --config qlip-b-16-256 --out /tmp/qlip-b16`),
/// otherwise deterministic random weights (Philox, seeded by the tensor name) through
/// nn::WeightSource — timing does not depend on the values. Pixels are N(0, 1).
///
/// Threads: QLIP_BENCH_THREADS (default 2). Wall-clock time (UseRealTime). Counters:
///   img/s  images per second,  GFLOP  achieved GFLOP/s (multiply-add = 2 FLOP, GEMMs and the
///   attention's two matrix products; element-wise work not counted).
///
/// Per-op breakdown: QLIP_BENCH_PROFILE=N (N ≥ 1 runs per batch) prints, after the benchmarks, the
/// wall time of each op label (QLIP_PROFILE_SCOPE in include/qlip/nn/ and include/qlip/cpu/
/// encoder_layer.hpp) over N round trips at batch 1 and 8. The profiler is compiled into this benchmark only; while it is off (during the
/// benchmarks) a scope costs one branch.
///
///   ./build/perf/bench/bench_cpu_qlip_model --benchmark_repetitions=5
///   QLIP_BENCH_PROFILE=3 ./build/perf/bench/bench_cpu_qlip_model --benchmark_filter=none
#define QLIP_PROFILE_OPS 1

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "qlip/core/philox.hpp"
#include "qlip/core/profile.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/model/qlip_model.hpp"

namespace {

using Cfg = qlip::QlipB16_256;
using Model = qlip::QlipModel<Cfg>;
constexpr qlip::QlipConfig kC = Cfg::config;

/// Deterministic random weights: N(0, 1/fan_in) for matrices, 1 + N(0, 0.02²) for norm gains,
/// N(0, 0.02²) for biases and embeddings. Seeded by a hash of the tensor name.
class RandomWeights final : public qlip::nn::WeightSource {
 public:
  bool contains(const std::string&) const override { return true; }
  std::vector<std::string> names() const override { return {}; }  // no stored RoPE buffers
  std::vector<std::int64_t> shape_of(const std::string& name) const override {
    QLIP_THROW("random weights: no stored shape for '", name, "'");
  }
  void read(const std::string& name, std::span<const std::int64_t> shape, float* dst) override {
    std::int64_t numel = 1, fan_in = 1;
    for (std::size_t i = 0; i < shape.size(); ++i) {
      numel *= shape[i];
      if (i > 0) fan_in *= shape[i];
    }
    const bool weight = name.ends_with(".weight");
    const bool norm = name.find("norm") != std::string::npos || name.find("_ln") != std::string::npos;
    float scale = 0.02f, mean = 0.0f;
    if (weight && shape.size() >= 2 && name.find("embedding") == std::string::npos) {
      scale = 1.0f / std::sqrt(static_cast<float>(fan_in));
    } else if (weight && shape.size() == 1 && norm) {
      mean = 1.0f;
    }
    std::uint64_t seed = 1469598103934665603ull;  // FNV-1a of the name
    for (char c : name) seed = (seed ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    const qlip::Philox rng(seed);
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < numel; ++i) dst[i] = mean + scale * rng.normal(static_cast<std::uint64_t>(i));
  }
};

qlip::QlipRuntimeConfig random_runtime() {
  qlip::QlipRuntimeConfig rt;
  rt.vision = {1e-6f, qlip::Activation::gelu, true};
  rt.decoder = {1e-6f, qlip::Activation::gelu, true};
  rt.text = {1e-5f, qlip::Activation::gelu, false};
  return rt;
}

int bench_threads() {
  const char* t = std::getenv("QLIP_BENCH_THREADS");
  return t != nullptr ? std::max(1, std::atoi(t)) : 2;
}

/// The model, loaded once per process.
const Model& model() {
  static std::unique_ptr<Model> m = [] {
    qlip::set_num_threads(bench_threads());
    auto p = std::make_unique<Model>();
    const auto t0 = std::chrono::steady_clock::now();
    const char* ckpt = std::getenv("QLIP_BENCH_CKPT");
    if (ckpt != nullptr && *ckpt != '\0') {
      *p = Model::load(ckpt);
    } else {
      RandomWeights src;
      p->load_weights(src, random_runtime());
    }
    std::fprintf(stderr, "weights: %s (%lld parameters, %.1f s to load), threads %d\n",
                 ckpt != nullptr && *ckpt != '\0' ? ckpt : "random (Philox)",
                 static_cast<long long>(p->info().parameters),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), qlip::num_threads());
    return p;
  }();
  return *m;
}

/// FLOPs of one pre-LN layer over T tokens (GEMMs + attention's two matrix products).
double layer_flops(const qlip::StackConfig& s, double t) {
  const double d = s.hidden, i = s.intermediate;
  const double mlp = (s.mlp == qlip::MlpKind::swiglu ? 3.0 : 2.0) * d * i;
  return 2.0 * t * (4.0 * d * d + mlp) + 4.0 * t * t * d;
}

double encode_flops() {
  const auto& v = kC.vision;
  const double n = v.patches(), d = v.stack.hidden, l = kC.quantizer.bits;
  return 2.0 * n * d * v.patch_dim() + v.stack.layers * layer_flops(v.stack, n + 1) +
         2.0 * d * kC.projection_dim + 2.0 * n * (d * d + d * l);
}

double decode_flops() {
  const auto& v = kC.decoder;
  const double n = v.patches(), d = v.stack.hidden, i = v.stack.intermediate, l = kC.quantizer.bits;
  const double dq = kC.quantizer.hidden_post_q;
  return 2.0 * n * (l * dq + dq * dq) + v.stack.layers * layer_flops(v.stack, n) + 2.0 * n * (d * i + i * v.patch_dim());
}

qlip::Tensor<float, 4> random_pixels(std::int64_t batch) {
  qlip::Tensor<float, 4> px({batch, 3, kC.vision.image_size, kC.vision.image_size});
  const qlip::Philox rng(7);
  for (std::int64_t i = 0; i < px.numel(); ++i) px.data()[i] = rng.normal(static_cast<std::uint64_t>(i));
  return px;
}

void set_counters(benchmark::State& state, std::int64_t batch, double flops_per_image) {
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["img/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP"] =
      benchmark::Counter(flops_per_image * static_cast<double>(batch) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Encode(benchmark::State& state) {
  const std::int64_t batch = state.range(0);
  const Model& m = model();
  const auto px = random_pixels(batch);
  qlip::Arena ws(Model::workspace_bytes(batch));
  { qlip::ArenaScope s(ws); m.encode_image(ws, px.view()); }  // warm-up
  for (auto _ : state) {
    qlip::ArenaScope s(ws);
    auto enc = m.encode_image(ws, px.view());
    benchmark::DoNotOptimize(enc.indices.data());
  }
  set_counters(state, batch, encode_flops());
}

void BM_Decode(benchmark::State& state) {
  const std::int64_t batch = state.range(0);
  const Model& m = model();
  const auto px = random_pixels(batch);
  qlip::Arena ws(Model::workspace_bytes(batch));
  auto enc = m.encode_image(ws, px.view());  // held for the whole benchmark
  { qlip::ArenaScope s(ws); m.decode(ws, enc.indices); }  // warm-up
  for (auto _ : state) {
    qlip::ArenaScope s(ws);
    auto dec = m.decode(ws, enc.indices);
    benchmark::DoNotOptimize(dec.pixels.data());
  }
  set_counters(state, batch, decode_flops());
}

void BM_RoundTrip(benchmark::State& state) {
  const std::int64_t batch = state.range(0);
  const Model& m = model();
  const auto px = random_pixels(batch);
  qlip::Arena ws(Model::workspace_bytes(batch));
  float check = 0.0f;
  {
    qlip::ArenaScope s(ws);
    auto enc = m.encode_image(ws, px.view());
    auto dec = m.decode(ws, enc.indices);
    check = dec.pixels.data()[0];
  }
  if (!std::isfinite(check)) {
    state.SkipWithError("round trip produced a non-finite pixel");
    return;
  }
  for (auto _ : state) {
    qlip::ArenaScope s(ws);
    auto enc = m.encode_image(ws, px.view());
    auto dec = m.decode(ws, enc.indices);
    benchmark::DoNotOptimize(dec.pixels.data());
  }
  set_counters(state, batch, encode_flops() + decode_flops());
}

BENCHMARK(BM_Encode)->ArgName("batch")->Arg(1)->Arg(8)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1.0);
BENCHMARK(BM_Decode)->ArgName("batch")->Arg(1)->Arg(8)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1.0);
BENCHMARK(BM_RoundTrip)->ArgName("batch")->Arg(1)->Arg(8)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1.0);

/// Per-op wall time over `runs` round trips at this batch, printed as a table.
void profile_round_trip(std::int64_t batch, int runs) {
  const Model& m = model();
  const auto px = random_pixels(batch);
  qlip::Arena ws(Model::workspace_bytes(batch));
  { qlip::ArenaScope s(ws); m.decode(ws, m.encode_image(ws, px.view()).indices); }  // warm-up
  qlip::profile::reset();
  qlip::profile::set_enabled(true);
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < runs; ++r) {
    qlip::ArenaScope s(ws);
    auto enc = m.encode_image(ws, px.view());
    m.decode(ws, enc.indices);
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / runs;
  qlip::profile::set_enabled(false);
  const auto entries = qlip::profile::entries();  // in order of first use
  std::printf("\nround trip, batch %lld, %d threads: %.1f ms per run (%.2f img/s, %.1f GFLOP/s), mean of %d runs\n",
              static_cast<long long>(batch), qlip::num_threads(), total * 1e3, batch / total,
              (encode_flops() + decode_flops()) * batch / total * 1e-9, runs);
  std::printf("  %-26s %10s %7s %8s\n", "op (indented: thread 0 in a region)", "ms/run", "%", "calls");
  double covered = 0.0;
  for (const auto& e : entries) {
    const double s = e.seconds / runs;
    if (e.label[0] != ' ') covered += s;  // indented labels are thread 0's parts of a region
    std::printf("  %-26s %10.2f %6.1f%% %8lld\n", e.label, s * 1e3, 100.0 * s / total,
                static_cast<long long>(e.calls / runs));
  }
  std::printf("  %-26s %10.2f %6.1f%%\n", "(not in a scope)", (total - covered) * 1e3, 100.0 * (total - covered) / total);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  model();  // load before any timing
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (const char* p = std::getenv("QLIP_BENCH_PROFILE"); p != nullptr && std::atoi(p) > 0) {
    for (std::int64_t batch : {1, 8}) profile_round_trip(batch, std::atoi(p));
  }
  return 0;
}
