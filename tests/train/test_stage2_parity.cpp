/// @file test_stage2_parity.cpp
/// @brief Stage-2 training with the GAN loss against the independent PyTorch trainer
///        (tools/qlip_stage2_reference.py): the train-tiny checkpoint, the same 20 batches, E_v
///        frozen, the quantizer MLPs and the decoder on MSE + BSQ + α_g·L_G with AdamW and clipping at
///        1, the StyleGAN2 discriminator with its own AdamW and R1 on discriminator steps 0 and 16.
///        Every loss term and gradient norm of both sides at every step, and every trained
///        parameter tensor of both after the 20 steps, must agree within 1e-4 relative (the
///        acceptance tolerance; "relative" for a tensor is max|Δ| / max|p|, as in
///        test_train_parity.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "common/train_tiny.hpp"
#include "qlip/cpu.hpp"
#include "qlip/io/json.hpp"
#include "qlip/io/safetensors.hpp"
#include "qlip/model/checkpoint.hpp"
#include "qlip/model/qlip_trainable.hpp"
#include "qlip/nn/lpips.hpp"
#include "qlip/train/adversary.hpp"
#include "qlip/train/checkpoint_writer.hpp"
#include "qlip/train/clip_grad.hpp"
#include "qlip/train/optimizer.hpp"
#include "qlip/train/recipe.hpp"
#include "qlip/train/scratch_model.hpp"

namespace qlip {
namespace {

constexpr double kParity = 1e-4;  // the acceptance tolerance, relative
// tools/qlip_stage2_reference.py DEFAULTS: 16×16, channel_base 128, channel_max 8 (8 channels everywhere).
constexpr nn::DiscriminatorConfig kFixtureDiscriminator{16, 3, 128, 8, 4};

std::string data(const std::string& p) { return std::string(QLIP_TEST_DATA_DIR) + "/train/" + p; }

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream f(path);
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return parse_json(text, path);
}

double max_relative_difference(const HostView<const float, 1>& got, const std::vector<float>& want) {
  double max_diff = 0, max_abs = 0;
  for (std::int64_t i = 0; i < got.numel(); ++i) {
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(got(i)) - want[static_cast<std::size_t>(i)]));
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(want[static_cast<std::size_t>(i)])));
  }
  return max_diff / std::max(max_abs, 1e-30);
}

TEST(TrainParity, Stage2WithDiscriminatorAndR1MatchesPyTorchFor20Steps) {
  const nlohmann::json fixture = read_json_file(data("stage2/stage2_steps.json"));
  const nlohmann::json& hp = fixture.at("hyperparameters");
  ASSERT_EQ(hp.at("disc_resolution").get<std::int64_t>(), kFixtureDiscriminator.resolution);
  ASSERT_EQ(hp.at("disc_channel_base").get<std::int64_t>(), kFixtureDiscriminator.channel_base);
  ASSERT_EQ(hp.at("disc_channel_max").get<std::int64_t>(), kFixtureDiscriminator.channel_max);
  const Checkpoint ck = open_checkpoint(data("train-tiny"));

  const BsqLossConfig bsq = test::bsq_config_from(hp);
  QlipTrainable<TrainTinyQlip, cpu_backend> model(ck.runtime, bsq);
  train::ParameterStore store;
  train::bind_to_store(model, store);
  (void)train::load_checkpoint(data("train-tiny"), store, TrainTinyQlip::config, TrainTinyQlip::name);

  // The stage-2 recipe with the fixture's rates and schedule (what qlip-train --stage 2 builds).
  train::StageRecipe recipe = train::qlip_stage2_recipe();
  recipe.groups[train::kDecoderGroup].peak_lr = hp.at("lr_decoder").get<double>();
  recipe.groups[train::kBaseGroup].peak_lr = hp.at("lr_base").get<double>();
  const std::int64_t steps = hp.at("steps").get<std::int64_t>(), warmup = hp.at("warmup_steps").get<std::int64_t>();
  recipe.options.schedule = {warmup, steps, 0.0};
  train::Optimizer opt(store, recipe.groups, recipe.options);

  train::AdversaryOptions ao;
  ao.weight = hp.at("alpha_g").get<double>();
  ao.r1_gamma = hp.at("r1_gamma").get<double>();
  ao.r1_every = hp.at("r1_every").get<std::int64_t>();
  ao.lr = hp.at("lr_disc").get<double>();
  ao.weight_decay = hp.at("weight_decay").get<double>();
  ao.warmup = warmup;
  ao.steps = steps;
  train::Adversary<kFixtureDiscriminator> adversary(ao);
  train::load_discriminator_weights(data("stage2/disc_init.safetensors"), adversary.store);

  const SafetensorsFile batches = SafetensorsFile::open(data("batches.safetensors"));
  const Tensor<float, 5> pixels = batches.to_float<5>("pixel_values");
  const std::int64_t b = pixels.size(1);
  model.prepare(b, TrainTinyQlip::config.text.context_length);
  adversary.prepare(b);
  const Stage2Weights w{hp.at("alpha_r").get<double>(), 0.0, hp.at("alpha_q").get<double>(),
                        hp.at("alpha_z").get<double>()};

  double worst_step = 0;
  std::string worst_step_what;
  const auto expect_close = [&](double got, const nlohmann::json& rec, const char* key) {
    const double want = rec.at(key).get<double>();
    const double r = std::fabs(got - want) / std::max(std::fabs(want), 1e-12);
    if (r > worst_step) {
      worst_step = r;
      worst_step_what = key;
    }
    EXPECT_LE(r, kParity) << key << ": " << got << " vs " << want;
  };
  const auto& records = fixture.at("steps");
  ASSERT_EQ(static_cast<std::int64_t>(records.size()), steps);
  int r1_steps = 0;
  for (std::int64_t t = 0; t < steps; ++t) {
    SCOPED_TRACE(::testing::Message() << "stage-2 step " << t);
    const auto& want = records[static_cast<std::size_t>(t)];
    const HostView<const float, 4> px = pixels.view().select(0, t);
    store.zero_grad();
    const Stage1Losses got =
        model.forward_backward_stage2(px, w, static_cast<nn::Lpips<>*>(nullptr), &adversary);
    expect_close(got.total, want, "total");
    expect_close(got.mse, want, "mse");
    expect_close(got.entropy_penalty, want, "entropy_penalty");
    expect_close(got.adversarial, want, "adversarial");
    const double norm = train::grad_norm(store);
    expect_close(norm, want, "grad_norm");
    opt.step(train::clip_coefficient(norm, hp.at("grad_clip").get<double>()));

    const train::DiscriminatorStep d = adversary.step(px, model.reconstruction());
    EXPECT_TRUE(d.applied);
    expect_close(d.loss, want, "d_loss");
    // The logits, each relative to the largest |logit| of the step (real and reconstructed together,
    // the discriminator's output scale): the early reconstructions are near-constant images whose
    // logits are a few thousandths, sums of terms a hundred times larger, so their own magnitude
    // would measure float cancellation, not the trainer.
    const std::vector<float> want_real = want.at("real_logits").get<std::vector<float>>();
    const std::vector<float> want_fake = want.at("fake_logits").get<std::vector<float>>();
    ASSERT_EQ(static_cast<std::int64_t>(want_real.size()), b);
    ASSERT_EQ(static_cast<std::int64_t>(want_fake.size()), b);
    double scale = 0.0, diff = 0.0;
    for (std::int64_t i = 0; i < b; ++i) {
      const auto k = static_cast<std::size_t>(i);
      scale = std::max({scale, std::fabs(static_cast<double>(want_real[k])), std::fabs(static_cast<double>(want_fake[k]))});
      diff = std::max({diff, std::fabs(adversary.real_logits()(i) - static_cast<double>(want_real[k])),
                       std::fabs(adversary.fake_logits()(i) - static_cast<double>(want_fake[k]))});
    }
    const double r_logits = diff / std::max(scale, 1e-30);
    if (r_logits > worst_step) {
      worst_step = r_logits;
      worst_step_what = "logits";
    }
    EXPECT_LE(r_logits, kParity) << "discriminator logits: max |Δ| " << diff << ", max |logit| " << scale;
    EXPECT_EQ(want.contains("r1"), !std::isnan(d.r1));
    if (want.contains("r1")) {
      expect_close(d.r1, want, "r1");
      ++r1_steps;
    }
    if (::testing::Test::HasFailure()) return;  // later steps only repeat the first difference
  }
  EXPECT_EQ(r1_steps, 2);  // discriminator steps 0 and 16

  const SafetensorsFile final_params = SafetensorsFile::open(data("stage2/stage2_final.safetensors"));
  double worst_param = 0;
  std::string worst_param_what;
  int compared = 0;
  const auto compare = [&](const train::ParameterStore& s, const std::string& prefix) {
    for (const train::ParameterInfo& info : s.infos()) {
      if (!final_params.contains(prefix + info.name)) continue;
      const std::vector<float> want = final_params.to_float_vector(prefix + info.name);
      ASSERT_EQ(static_cast<std::int64_t>(want.size()), info.numel) << info.name;
      const double r = max_relative_difference(HostView<const float, 1>(s.values().data() + info.offset, {info.numel}), want);
      EXPECT_LE(r, kParity) << prefix + info.name;
      ++compared;
      if (r > worst_param) {
        worst_param = r;
        worst_param_what = prefix + info.name;
      }
    }
  };
  compare(store, "");
  compare(adversary.store, "discriminator.");
  EXPECT_EQ(static_cast<std::size_t>(compared), final_params.tensors().size());
  std::printf("stage 2: %lld steps, largest relative difference of a loss / logit / gradient norm %.3g (%s); largest "
              "max|Δ|/max|p| of %d trained tensors %.3g (%s)\n",
              static_cast<long long>(steps), worst_step, worst_step_what.c_str(), compared, worst_param,
              worst_param_what.c_str());
}

}  // namespace
}  // namespace qlip
