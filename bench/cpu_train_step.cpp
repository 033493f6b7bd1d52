/// @file cpu_train_step.cpp
/// @brief One stage-1 training step on the CPU backend, the measurement docs/PERFORMANCE.md sets
///        beside the PyTorch trainer (tools/bench_torch_train.py, same shapes, same threads):
///   - BM_DemoStep: the main job's config (qlip-demo-fashion) at batch 64, a whole step: forward,
///     backward, clipping and LAMB over the flat parameter buffer (what qlip-train does per step,
///     without data loading);
///   - BM_B16ForwardBackward: QLIP-B-16-256 at batch 8, forward + backward of every loss (the
///     gradients of all 4 towers), no optimiser;
///   - BM_DemoStage2Step/gan:0|1: the main job's stage 2 at batch 64 (E_v forward only, quantizer +
///     decoder on MSE + BSQ, AdamW) without and with the GAN loss (kDemoDiscriminator: the
///     generator's L_G, then one discriminator step, R1 on every 16th), the counterpart of
///     tools/qlip_stage2_reference.py bench.
///
/// Weights: from-scratch initialisation (train/init.hpp); pixels N(0, 1); token ids drawn uniformly
/// from kCaptionIds, the ids of the demo's captions, with an end-of-text token at a random position.
/// Timing does not depend on the values, but the optimiser's does on how many embedding rows ever
/// see a gradient (cpu/optimizer.hpp, idle blocks): uniform ids over 49,408 rows would not be the
/// demo's step.
/// Threads: QLIP_BENCH_THREADS (default 2). Wall-clock time (UseRealTime). Counters: img/s, and
/// peak_rss_MB (the process's peak resident set after the benchmark: run one benchmark per process,
/// --benchmark_filter, for a per-config figure).
///
///   ./build/perf/bench/bench_cpu_train_step --benchmark_filter=Demo --benchmark_repetitions=5
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "configs/demo_qlip_config.hpp"
#include "configs/small_qlip_configs.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/cpu.hpp"
#include "qlip/model/qlip_trainable.hpp"
#include "qlip/nn/lpips.hpp"
#include "qlip/train/adversary.hpp"
#include "qlip/train/init.hpp"
#include "qlip/train/optimizer.hpp"
#include "qlip/train/recipe.hpp"
#include "qlip/train/scratch_model.hpp"
#include "qlip/train/trainer.hpp"

namespace {

/// Every token id of the 16 caption templates × 10 Fashion-MNIST class names (data/captions.hpp), as
/// `qlip tokenize` gives them, and 0 (the padding). tools/bench_torch_train.py draws from the same list.
constexpr std::array<std::int32_t, 45> kCaptionIds = {0, 268, 269, 270, 320, 339, 518, 528, 529, 537, 539, 637, 705, 886, 943, 1042, 1125, 1253, 1449, 1579, 1674, 2442, 2523, 2595, 2660, 2728, 2867, 3144, 3365, 4852, 5879, 7356, 8087, 9977, 12703, 14384, 14777, 19727, 24781, 28891, 31139, 42185, 44020, 49406, 49407};

int bench_threads() {
  const char* t = std::getenv("QLIP_BENCH_THREADS");
  return t != nullptr ? std::max(1, std::atoi(t)) : 2;
}

double peak_rss_mb() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // kB on Linux
}

/// A model of config Tag bound to a flat store, with one random batch.
template <class Tag>
struct StepFixture {
  using Model = qlip::QlipTrainable<Tag, qlip::cpu_backend>;
  static constexpr qlip::QlipConfig kC = Tag::config;
  std::unique_ptr<Model> model;
  qlip::train::ParameterStore store;
  qlip::Tensor<float, 4> pixels;
  qlip::Tensor<std::int32_t, 2> ids;

  explicit StepFixture(std::int64_t batch) {
    qlip::set_num_threads(bench_threads());
    model = std::make_unique<Model>(qlip::train::scratch_runtime(), qlip::train::scratch_bsq(),
                                    qlip::cpu_backend{bench_threads()});
    qlip::train::bind_to_store(*model, store);
    qlip::train::initialize_parameters(store, 1);
    const std::int64_t ctx = kC.text.context_length;
    model->prepare(batch, ctx);
    pixels = qlip::Tensor<float, 4>({batch, 3, kC.vision.image_size, kC.vision.image_size});
    const qlip::Philox rng(7);
    for (std::int64_t i = 0; i < pixels.numel(); ++i) pixels.data()[i] = rng.normal(static_cast<std::uint64_t>(i));
    ids = qlip::Tensor<std::int32_t, 2>({batch, ctx});
    const int eos = qlip::train::scratch_runtime().eos_token_id;
    for (std::int64_t b = 0; b < batch; ++b) {
      const auto end = 2 + static_cast<std::int64_t>(rng.uniform(static_cast<std::uint64_t>(b), 1) * static_cast<float>(ctx - 3));
      for (std::int64_t t = 0; t < ctx; ++t) {
        const auto pick = static_cast<std::size_t>(rng.uniform(static_cast<std::uint64_t>(b * ctx + t), 2) *
                                                   static_cast<float>(kCaptionIds.size()));
        const std::int32_t r = kCaptionIds[std::min(pick, kCaptionIds.size() - 1)];
        ids(b, t) = t < end ? r : (t == end ? eos : 0);
      }
    }
  }
  qlip::Stage1Losses forward_backward() {
    store.zero_grad();
    const qlip::HostView<const std::int32_t, 1> flat(ids.data(), {ids.numel()});
    return model->forward_backward(pixels.view(), ids.view(), flat, qlip::Stage1Weights{});
  }
};

void set_counters(benchmark::State& state, std::int64_t batch) {
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["img/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_rss_MB"] = peak_rss_mb();
}

void BM_DemoStep(benchmark::State& state) {
  const std::int64_t batch = state.range(0);
  StepFixture<qlip::QlipDemoFashion> f(batch);
  qlip::train::StageRecipe recipe = qlip::train::qlip_stage1_recipe();
  recipe.options.schedule = {100, 1000000, 0.0};
  qlip::train::Optimizer opt(f.store, recipe.groups, recipe.options);
  qlip::train::Trainer trainer(f.store, opt, {recipe.max_grad_norm, 5}, [] {});
  (void)trainer.apply(f.forward_backward().total);  // warm-up
  for (auto _ : state) {
    const qlip::train::StepOutcome out = trainer.apply(f.forward_backward().total);
    benchmark::DoNotOptimize(out.grad_norm);
  }
  set_counters(state, batch);
}

void BM_B16ForwardBackward(benchmark::State& state) {
  const std::int64_t batch = state.range(0);
  StepFixture<qlip::QlipB16_256> f(batch);
  (void)f.forward_backward();  // warm-up
  for (auto _ : state) {
    const qlip::Stage1Losses l = f.forward_backward();
    benchmark::DoNotOptimize(l.total);
  }
  set_counters(state, batch);
}

void BM_DemoStage2Step(benchmark::State& state) {
  const std::int64_t batch = state.range(0);
  const bool with_gan = state.range(1) != 0;
  StepFixture<qlip::QlipDemoFashion> f(batch);
  qlip::train::StageRecipe recipe = qlip::train::qlip_stage2_recipe();
  recipe.options.schedule = {100, 1000000, 0.0};
  qlip::train::Optimizer opt(f.store, recipe.groups, recipe.options);
  qlip::train::Trainer trainer(f.store, opt, {recipe.max_grad_norm, 5}, [] {});
  qlip::train::AdversaryOptions ao;
  ao.warmup = 100;
  ao.steps = 1000000;
  qlip::train::Adversary<qlip::kDemoDiscriminator> adversary(ao, qlip::cpu_backend{bench_threads()});
  adversary.prepare(batch);
  qlip::train::initialize_discriminator(adversary.store, 2);
  using NoPerceptual = qlip::nn::Lpips<64, qlip::cpu_backend>;
  const auto step = [&] {
    f.store.zero_grad();
    const qlip::Stage1Losses l = f.model->forward_backward_stage2(
        f.pixels.view(), qlip::Stage2Weights{.perceptual = 0.0}, static_cast<NoPerceptual*>(nullptr),
        with_gan ? &adversary : nullptr);
    const qlip::train::StepOutcome out = trainer.apply(l.total);
    if (with_gan) benchmark::DoNotOptimize(adversary.step(f.pixels.view(), f.model->reconstruction()).loss);
    return out.grad_norm;
  };
  (void)step();  // warm-up (also the first R1 step); R1 then falls on every 16th iteration
  for (auto _ : state) benchmark::DoNotOptimize(step());
  set_counters(state, batch);
}

BENCHMARK(BM_DemoStep)->ArgName("batch")->Arg(64)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_DemoStage2Step)->ArgNames({"batch", "gan"})->Args({64, 0})->Args({64, 1})->UseRealTime()
    ->Unit(benchmark::kMillisecond)->MinTime(3.0);
BENCHMARK(BM_B16ForwardBackward)->ArgName("batch")->Arg(8)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(5.0);

}  // namespace

BENCHMARK_MAIN();
