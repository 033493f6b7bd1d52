/// @file test_model_grad.cpp
/// @brief The trainable towers and the whole stage-1 objective: backward against finite differences
///        of the same module code on reference_backend<double>, and the CPU backend against the
///        float reference backend.
///
/// The sign in the BSQ bottleneck has no derivative; its straight-through gradient is a definition,
/// not a derivative, so finite differences cannot check it. The whole-model check therefore runs
/// (a) with α_r = 0, where every parameter's gradient is a true derivative (contrastive, entropy and
/// commitment terms are smooth while no sign flips), and (b) with every α, on the parameters downstream
/// of the sign (decoder, quant_embed_post) and the text tower. The straight-through op itself is
/// checked in test_bsq_loss_grad.cpp and the composition against PyTorch autograd in test_train_parity.cpp.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "qlip/cpu/activation.hpp"
#include "qlip/cpu/add.hpp"
#include "qlip/cpu/attention.hpp"
#include "qlip/cpu/bsq_loss.hpp"
#include "qlip/cpu/contrastive_loss.hpp"
#include "qlip/cpu/copy.hpp"
#include "qlip/cpu/embedding.hpp"
#include "qlip/cpu/gemm.hpp"
#include "qlip/cpu/l2_norm.hpp"
#include "qlip/cpu/layer_norm.hpp"
#include "qlip/cpu/mse_loss.hpp"
#include "qlip/cpu/patchify.hpp"
#include "qlip/cpu/rope.hpp"
#include "qlip/model/qlip_trainable.hpp"

namespace qlip {
namespace {

/// A tiny model with every structural feature of the released ones (EVA-02 vision and decoder:
/// SwiGLU, sub-LN, no k bias; plain text tower; biased visual projection).
struct TinyTrainQlip {
  static constexpr const char* name = "tiny-train";
  static constexpr QlipConfig config{
      .vision = {8, 4, 3, {8, 1, 2, 6, MlpKind::swiglu, true, true, false, true}},
      .quantizer = {6, 8},
      .decoder = {8, 4, 3, {8, 1, 2, 6, MlpKind::swiglu, true, true, false, true}},
      .text = {20, 5, {8, 1, 2, 12, MlpKind::plain, false, true, true, true}},
      .projection_dim = 4,
      .vision_projection_bias = true,
      .text_projection_bias = false,
  };
};

QlipRuntimeConfig tiny_runtime() {
  QlipRuntimeConfig rt;
  rt.vision = {1e-6f, Activation::gelu, true};
  rt.decoder = {1e-6f, Activation::gelu, true};
  rt.text = {1e-5f, Activation::gelu, false};
  rt.group_size = 2;
  rt.eos_token_id = 19;
  return rt;
}

BsqLossConfig tiny_bsq(BsqEntropyMode mode) {
  BsqLossConfig b;
  b.inv_temperature = 3.0;  // small T keeps the soft assignments away from saturation at L = 6
  b.group_size = 2;
  b.gamma0 = 1.0;
  b.gamma1 = 1.0;
  b.beta = 0.5;
  b.mode = mode;
  return b;
}

/// Flat storage for every parameter of a model, bound through visit_parameters.
template <class T>
struct Flat {
  std::vector<T> values, grads;
  struct Entry {
    std::string name;
    std::int64_t offset, numel;
  };
  std::vector<Entry> entries;

  template <class Model>
  void bind(Model& m, std::uint64_t seed) {
    std::int64_t total = 0;
    m.visit_parameters([&](const std::string& name, auto& p) {
      entries.push_back({name, total, p.numel()});
      total += p.numel();
    });
    values.assign(static_cast<std::size_t>(total), T(0));
    grads.assign(static_cast<std::size_t>(total), T(0));
    Philox rng(seed);
    std::size_t k = 0;
    m.visit_parameters([&](const std::string& name, auto& p) {
      using V = std::remove_cvref_t<decltype(p.value)>;
      const Entry& e = entries[k++];
      p.value = V(values.data() + e.offset, p.shape);
      p.grad = V(grads.data() + e.offset, p.shape);
      const bool gain = name.ends_with("norm.weight") || name.ends_with("_ln.weight") ||
                        name.ends_with("layer_norm1.weight") || name.ends_with("layer_norm2.weight") ||
                        name.ends_with("layernorm.weight") || name.ends_with("layer_norm.weight");
      for (std::int64_t j = 0; j < e.numel; ++j) {
        const double r = static_cast<double>(rng.normal(static_cast<std::uint64_t>(e.offset + j)));
        values[static_cast<std::size_t>(e.offset + j)] = static_cast<T>(gain ? 1.0 + 0.2 * r : 0.4 * r);
      }
    });
  }
  std::vector<test::GradInput> inputs(const std::function<bool(const std::string&)>& keep) {
    std::vector<test::GradInput> out;
    for (const Entry& e : entries)
      if (keep(e.name))
        out.push_back({e.name, std::span<T>(values.data() + e.offset, static_cast<std::size_t>(e.numel)),
                       std::span<const T>(grads.data() + e.offset, static_cast<std::size_t>(e.numel))});
    return out;
  }
};

struct Batch {
  static constexpr std::int64_t kB = 3, kTokens = 5;
  Tensor<double, 4> pixels{{kB, 3, 8, 8}};
  Tensor<std::int32_t, 2> ids{{kB, kTokens}};
  Batch() {
    test::fill_normal(pixels, 77);
    const std::int32_t rows[kB][kTokens] = {{18, 3, 19, 0, 0}, {5, 19, 19, 2, 1}, {7, 8, 9, 10, 11}};  // last: no EOS
    for (std::int64_t b = 0; b < kB; ++b)
      for (std::int64_t t = 0; t < kTokens; ++t) ids(b, t) = rows[b][t];
  }
  HostView<const std::int32_t, 1> flat() const { return HostView<const std::int32_t, 1>(ids.data(), {kB * kTokens}); }
};

void check_whole_model(BsqEntropyMode mode, const Stage1Weights& w, const std::function<bool(const std::string&)>& keep) {
  using Model = QlipTrainable<TinyTrainQlip, reference_backend<double>>;
  Model model(tiny_runtime(), tiny_bsq(mode));
  Flat<double> params;
  params.bind(model, 5);
  params.values[0] = std::log(1 / 0.07);  // logit_scale
  Batch batch;
  model.prepare(Batch::kB, Batch::kTokens);
  (void)model.forward_backward(batch.pixels.view(), batch.ids.view(), batch.flat(), w);
  auto loss = [&] { return model.forward(batch.pixels.view(), batch.ids.view(), batch.flat(), w).total; };
  const auto inputs = params.inputs(keep);
  ASSERT_FALSE(inputs.empty());
  EXPECT_TRUE(test::check_gradients(loss, inputs));
}

bool downstream_of_sign(const std::string& name) {
  return name.starts_with("vision_decoder.") || name.starts_with("vision_model.quant_embed_post.") ||
         name.starts_with("text_model.") || name.starts_with("text_projection") || name == "logit_scale";
}

TEST(ModelGrad, Stage1WithoutReconstructionMatchesFiniteDifferencesEverywhere) {
  const Stage1Weights w{1.0, 0.0, 1.0, 1.0};
  check_whole_model(BsqEntropyMode::group, w, [](const std::string&) { return true; });
}

TEST(ModelGrad, Stage1AnalyticalEntropyMatchesFiniteDifferences) {
  const Stage1Weights w{1.0, 0.0, 1.0, 1.0};
  check_whole_model(BsqEntropyMode::analytical, w,
                    [](const std::string& n) { return n.starts_with("vision_model.quant_embed.") || n == "logit_scale"; });
}

TEST(ModelGrad, Stage1FullWeightsMatchFiniteDifferencesDownstreamOfTheSign) {
  const Stage1Weights w{1.0, 1e3, 1.0, 1.0};
  check_whole_model(BsqEntropyMode::group, w, downstream_of_sign);
}

TEST(ModelGrad, CpuMatchesReferenceForTheWholeStep) {
  QlipTrainable<TinyTrainQlip, reference_backend<float>> ref_model(tiny_runtime(), tiny_bsq(BsqEntropyMode::group));
  QlipTrainable<TinyTrainQlip, cpu_backend> cpu_model(tiny_runtime(), tiny_bsq(BsqEntropyMode::group));
  Flat<float> ref_params, cpu_params;
  ref_params.bind(ref_model, 9);
  cpu_params.bind(cpu_model, 9);
  Batch batch;
  const Tensor<float, 4> pixels = test::to_float(batch.pixels);
  ref_model.prepare(Batch::kB, Batch::kTokens);
  cpu_model.prepare(Batch::kB, Batch::kTokens);
  const Stage1Weights w{};
  const Stage1Losses lr = ref_model.forward_backward(pixels.view(), batch.ids.view(), batch.flat(), w);
  const Stage1Losses lc = cpu_model.forward_backward(pixels.view(), batch.ids.view(), batch.flat(), w);
  EXPECT_NEAR(lc.total, lr.total, 1e-4 * std::fabs(lr.total));
  EXPECT_NEAR(lc.contrastive, lr.contrastive, 1e-5 * std::fabs(lr.contrastive) + 1e-6);
  EXPECT_NEAR(lc.mse, lr.mse, 1e-5 * lr.mse);
  const auto n = static_cast<std::int64_t>(ref_params.grads.size());
  EXPECT_TRUE(test::all_close(HostView<const float, 1>(cpu_params.grads.data(), {n}),
                              HostView<const float, 1>(ref_params.grads.data(), {n}), test::kF32Reduction));
  EXPECT_TRUE(test::all_close(cpu_model.reconstruction(), ref_model.reconstruction(), test::kF32Reduction));
}

TEST(ModelGrad, ParametersAreListedOnceInStateDictOrder) {
  QlipTrainable<TinyTrainQlip, cpu_backend> model(tiny_runtime(), tiny_bsq(BsqEntropyMode::group));
  std::vector<std::string> names;
  model.visit_parameters([&](const std::string& n, auto&) { names.push_back(n); });
  ASSERT_GE(names.size(), 4u);
  EXPECT_EQ(names.front(), "logit_scale");
  EXPECT_EQ(names[1], "text_model.embeddings.token_embedding.weight");
  EXPECT_EQ(names.back(), "text_projection.weight");  // no bias in this config
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << "a name is listed twice";
  const auto at = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) - names.begin(); };
  EXPECT_LT(at("vision_model.post_layernorm.bias"), at("vision_model.quant_embed.c_fc.weight"));
  EXPECT_LT(at("vision_model.quant_embed_post.c_proj.bias"), at("vision_decoder.position_embeddings"));
  EXPECT_LT(at("vision_decoder.conv_out.bias"), at("visual_projection.weight"));
}

}  // namespace
}  // namespace qlip
