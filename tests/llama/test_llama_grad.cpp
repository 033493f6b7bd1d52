/// @file test_llama_grad.cpp
/// @brief The Llama model's backward: every parameter gradient of the whole model (embedding,
///        every layer's projections and norms, final norm, tied or untied head, through the token
///        cross-entropy with a masked position) against central differences of the same module code
///        on reference_backend<double>; the CPU backend's loss and gradients against the float
///        reference backend.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "llama/llama_test_util.hpp"
#include "qlip/cpu.hpp"
#include "qlip/model/llama_checkpoint.hpp"
#include "qlip/nn/llama.hpp"

namespace qlip {
namespace {

/// GQA (4 query heads over 2), q width 16 ≠ hidden 8, tied head.
constexpr LlamaConfig kTinyTied{.vocab_size = 11, .hidden = 8, .layers = 2, .heads = 4, .kv_heads = 2, .head_dim = 4,
                                .intermediate = 12, .tied = true};
/// Multi-head attention, untied head.
constexpr LlamaConfig kTinyUntied{.vocab_size = 9, .hidden = 6, .layers = 2, .heads = 3, .kv_heads = 3,
                                  .head_dim = 2, .intermediate = 10, .tied = false};

LlamaRuntime tiny_runtime() {
  LlamaRuntime rt;
  rt.rms_eps = 1e-5f;
  rt.rope_theta = 500000.0f;
  rt.scaling = {.factor = 8.0f, .low_freq_factor = 1.0f, .high_freq_factor = 4.0f, .original_max_position = 4,
                .enabled = true};
  rt.max_positions = 16;
  return rt;
}

constexpr std::int64_t kBatch = 2, kTokens = 5;

/// Ids and next-token targets of two sequences, one target masked (negative).
struct Batch {
  std::vector<std::int32_t> ids, targets;
};
Batch tiny_batch(int vocab) {
  Batch b;
  for (std::int64_t i = 0; i < kBatch * kTokens; ++i) {
    b.ids.push_back(static_cast<std::int32_t>((7 * i + 3) % vocab));
    b.targets.push_back(static_cast<std::int32_t>((5 * i + 1) % vocab));
  }
  b.targets[3] = -1;
  return b;
}
HostView<const std::int32_t, 1> view_of(const std::vector<std::int32_t>& v) {
  return HostView<const std::int32_t, 1>(v.data(), {static_cast<std::int64_t>(v.size())});
}

/// Binds a double model's parameters to two flat vectors (values random, gradients zero).
struct DoubleStore {
  std::vector<double> values, grads;
  template <class Model>
  void bind(Model& m, std::uint64_t seed) {
    std::int64_t total = 0;
    m.visit_parameters([&](const std::string&, auto& p) { total += p.numel(); });
    values.assign(static_cast<std::size_t>(total), 0.0);
    grads.assign(static_cast<std::size_t>(total), 0.0);
    std::int64_t off = 0;
    Philox rng(seed);
    m.visit_parameters([&](const std::string& name, auto& p) {
      using V = std::remove_cvref_t<decltype(p.value)>;
      p.value = V(values.data() + off, p.shape);
      p.grad = V(grads.data() + off, p.shape);
      const bool gain = name.ends_with("norm.weight") || name.find("layernorm") != std::string::npos;
      for (std::int64_t i = 0; i < p.numel(); ++i) {
        const double z = rng.normal(static_cast<std::uint64_t>(off + i));
        values[static_cast<std::size_t>(off + i)] = gain ? 1.0 + 0.1 * z : 0.5 * z;
      }
      off += p.numel();
    });
  }
};

template <LlamaConfig C>
void expect_model_gradients_match_finite_differences() {
  using Model = nn::LlamaModel<C, reference_backend<double>>;
  auto model = std::make_unique<Model>(tiny_runtime());
  DoubleStore store;
  store.bind(*model, 77);
  const Batch batch = tiny_batch(C.vocab_size);
  std::vector<double> saved(static_cast<std::size_t>(Model::activation_elements(kBatch, kTokens)));
  std::vector<double> work(static_cast<std::size_t>(Model::workspace_elements(kBatch, kTokens)));
  Arena arena;
  auto loss = [&] {
    return model->forward_train(arena, view_of(batch.ids), view_of(batch.targets), saved.data(),
                                static_cast<std::int64_t>(saved.size()), kBatch, kTokens)
        .loss;
  };
  const double l0 = loss();
  EXPECT_TRUE(std::isfinite(l0));
  model->backward(arena, view_of(batch.ids), view_of(batch.targets), 1.0, saved.data(),
                  static_cast<std::int64_t>(saved.size()), work.data(), static_cast<std::int64_t>(work.size()), kBatch,
                  kTokens);
  std::vector<test::GradInput> inputs;
  std::int64_t off = 0;
  model->visit_parameters([&](const std::string& name, auto& p) {
    const auto n = static_cast<std::size_t>(p.numel());
    inputs.push_back({name, std::span<double>(store.values.data() + off, n),
                      std::span<const double>(store.grads.data() + off, n)});
    off += p.numel();
  });
  EXPECT_TRUE(test::check_gradients(loss, inputs));
}

TEST(LlamaGrad, TiedGqaModelMatchesFiniteDifferences) { expect_model_gradients_match_finite_differences<kTinyTied>(); }
TEST(LlamaGrad, UntiedMhaModelMatchesFiniteDifferences) {
  expect_model_gradients_match_finite_differences<kTinyUntied>();
}

/// The loss and every gradient of the CPU backend against the float reference backend, same weights.
template <LlamaConfig C>
void expect_cpu_matches_reference() {
  auto cpu = std::make_unique<nn::LlamaModel<C, cpu_backend>>(tiny_runtime());
  auto ref = std::make_unique<nn::LlamaModel<C, reference_backend<float>>>(tiny_runtime());
  train::ParameterStore cpu_store, ref_store;
  bind_llama(*cpu, cpu_store, train::Gradients::allocate);
  bind_llama(*ref, ref_store, train::Gradients::allocate);
  test::randomise_llama_store(cpu_store, 5, 0.5f);
  std::copy(cpu_store.values().data(), cpu_store.values().data() + cpu_store.buffer_size(), ref_store.values().data());
  const Batch batch = tiny_batch(C.vocab_size);
  auto run = [&](auto& model) {
    using Model = std::remove_cvref_t<decltype(model)>;
    std::vector<float> saved(static_cast<std::size_t>(Model::activation_elements(kBatch, kTokens)));
    std::vector<float> work(static_cast<std::size_t>(Model::workspace_elements(kBatch, kTokens)));
    Arena arena(std::size_t{8} << 20);
    const CrossEntropyResult r =
        model.forward_train(arena, view_of(batch.ids), view_of(batch.targets), saved.data(),
                            static_cast<std::int64_t>(saved.size()), kBatch, kTokens);
    model.backward(arena, view_of(batch.ids), view_of(batch.targets), 1.0, saved.data(),
                   static_cast<std::int64_t>(saved.size()), work.data(), static_cast<std::int64_t>(work.size()), kBatch,
                   kTokens);
    return r;
  };
  const CrossEntropyResult rc = run(*cpu), rr = run(*ref);
  EXPECT_EQ(rc.count, kBatch * kTokens - 1);
  EXPECT_EQ(rr.count, rc.count);
  EXPECT_NEAR(rc.loss, rr.loss, test::kF32Op.atol + test::kF32Op.rtol * std::fabs(rr.loss));
  for (int i = 0; i < cpu_store.size(); ++i) {
    SCOPED_TRACE(cpu_store.info(i).name);
    EXPECT_TRUE(test::all_close(HostView<const float, 1>(cpu_store.flat_grad_view(i)),
                                HostView<const float, 1>(ref_store.flat_grad_view(i)), test::kF32Reduction));
  }
}

TEST(LlamaGrad, CpuMatchesReferenceTied) { expect_cpu_matches_reference<kTinyTied>(); }
TEST(LlamaGrad, CpuMatchesReferenceUntied) { expect_cpu_matches_reference<kTinyUntied>(); }

TEST(LlamaGrad, EveryMaskedTargetGivesZeroLossAndZeroGradients) {
  auto cpu = std::make_unique<nn::LlamaModel<kTinyTied, cpu_backend>>(tiny_runtime());
  train::ParameterStore store;
  bind_llama(*cpu, store, train::Gradients::allocate);
  test::randomise_llama_store(store, 9);
  Batch batch = tiny_batch(kTinyTied.vocab_size);
  std::fill(batch.targets.begin(), batch.targets.end(), -1);
  using Model = nn::LlamaModel<kTinyTied, cpu_backend>;
  std::vector<float> saved(static_cast<std::size_t>(Model::activation_elements(kBatch, kTokens)));
  std::vector<float> work(static_cast<std::size_t>(Model::workspace_elements(kBatch, kTokens)));
  Arena arena(std::size_t{8} << 20);
  const CrossEntropyResult r = cpu->forward_train(arena, view_of(batch.ids), view_of(batch.targets), saved.data(),
                                                  static_cast<std::int64_t>(saved.size()), kBatch, kTokens);
  EXPECT_EQ(r.count, 0);
  EXPECT_EQ(r.loss, 0.0);
  cpu->backward(arena, view_of(batch.ids), view_of(batch.targets), 1.0, saved.data(),
                static_cast<std::int64_t>(saved.size()), work.data(), static_cast<std::int64_t>(work.size()), kBatch,
                kTokens);
  float worst = 0.0f;
  for (std::int64_t i = 0; i < store.buffer_size(); ++i) worst = std::max(worst, std::fabs(store.grads()(i)));
  EXPECT_EQ(worst, 0.0f);
}

}  // namespace
}  // namespace qlip
