/// @file test_trainer.cpp
/// @brief The step guard: non-finite losses or gradients skip the step without touching parameters,
///        moments or the step count; N in a row stop training with a one-line error; finite steps
///        clip and apply. Also the from-scratch initialisation rules.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "common/compare.hpp"
#include "qlip/train/init.hpp"
#include "qlip/train/trainer.hpp"

namespace qlip {
namespace {

struct Fixture {
  train::ParameterStore store;
  std::unique_ptr<train::Optimizer> opt;
  Fixture() {
    store.add("w", {3}, 0, true);
    store.freeze();
    for (int i = 0; i < 3; ++i) store.view<1>(0)(i) = 1.0f + static_cast<float>(i);
    train::OptimizerOptions o;
    o.kind = train::OptimizerKind::adamw;
    o.schedule = {0, 10, 0.0};
    opt = std::make_unique<train::Optimizer>(store, std::vector<train::ParamGroup>{{"all", 0.1, 0.0}}, o);
  }
  void set_grads(float g) {
    for (int i = 0; i < 3; ++i) store.grad_view<1>(0)(i) = g;
  }
};

TEST(Trainer, NonFiniteStepsAreSkippedThenStopTraining) {
  Fixture f;
  train::Trainer t(f.store, *f.opt, {5.0, 3});
  f.set_grads(0.5f);
  const train::StepOutcome ok = t.apply(1.0);
  EXPECT_TRUE(ok.applied);
  EXPECT_EQ(ok.step, 1);
  const float after_first = f.store.view<1>(0)(0);
  EXPECT_NE(after_first, 1.0f);

  const float nan = std::numeric_limits<float>::quiet_NaN();
  f.set_grads(nan);
  const train::StepOutcome s1 = t.apply(1.0);  // gradient NaN
  EXPECT_FALSE(s1.applied);
  EXPECT_EQ(s1.step, 1);
  EXPECT_EQ(f.store.view<1>(0)(0), after_first);
  f.set_grads(0.5f);
  const train::StepOutcome s2 = t.apply(std::numeric_limits<double>::infinity());  // loss Inf
  EXPECT_FALSE(s2.applied);
  EXPECT_EQ(s2.nonfinite_in_row, 2);
  EXPECT_EQ(f.opt->step_count(), 1);
  test::expect_error_naming([&] { (void)t.apply(std::nan("")); }, "3 steps in a row had a non-finite loss");
  EXPECT_EQ(t.skipped(), 3);
}

TEST(Trainer, AFiniteStepResetsTheCountAndClips) {
  Fixture f;
  train::Trainer t(f.store, *f.opt, {1.0, 2});
  f.set_grads(std::numeric_limits<float>::quiet_NaN());
  EXPECT_FALSE(t.apply(1.0).applied);
  f.set_grads(10.0f);  // norm 10·√3 > 1: clipped
  const train::StepOutcome s = t.apply(1.0);
  EXPECT_TRUE(s.applied);
  EXPECT_NEAR(s.grad_norm, 10.0 * std::sqrt(3.0), 1e-4);
  EXPECT_NEAR(s.clip_coef, 1.0 / (10.0 * std::sqrt(3.0) + 1e-6), 1e-9);
  f.set_grads(std::numeric_limits<float>::quiet_NaN());
  EXPECT_FALSE(t.apply(1.0).applied);  // one in a row again: no stop
}

TEST(Init, RulesFollowTheClipInitialisation) {
  train::ParameterStore s;
  s.add("logit_scale", {1}, 0, false);
  s.add("vision_model.embeddings.class_embedding", {64}, 0, false);
  s.add("vision_model.encoder.layers.0.layer_norm1.weight", {64}, 0, false);
  s.add("vision_model.encoder.layers.0.layer_norm1.bias", {64}, 0, false);
  s.add("vision_model.encoder.layers.0.mlp.w1.weight", {128, 64}, 0, true);
  s.freeze();
  train::initialize_parameters(s, 3);
  EXPECT_FLOAT_EQ(s.view<1>(0)(0), static_cast<float>(std::log(1 / 0.07)));
  for (int i = 0; i < 64; ++i) {
    EXPECT_EQ(s.view<1>(2)(i), 1.0f);
    EXPECT_EQ(s.view<1>(3)(i), 0.0f);
  }
  double sq = 0;
  const HostView<float, 2> w = s.view<2>(4);
  for (int i = 0; i < 128; ++i)
    for (int j = 0; j < 64; ++j) sq += static_cast<double>(w(i, j)) * w(i, j);
  EXPECT_NEAR(std::sqrt(sq / (128 * 64)), 0.02, 0.002);  // N(0, 0.02²) over 8192 draws
  double c = 0;
  for (int i = 0; i < 64; ++i) c += static_cast<double>(s.view<1>(1)(i)) * s.view<1>(1)(i);
  EXPECT_NEAR(std::sqrt(c / 64), 0.125, 0.04);  // N(0, 1/D), D = 64
  train::ParameterStore s2;  // same seed, same values
  s2.add("logit_scale", {1}, 0, false);
  s2.add("vision_model.embeddings.class_embedding", {64}, 0, false);
  s2.freeze();
  train::initialize_parameters(s2, 3);
  EXPECT_EQ(s2.view<1>(1)(5), s.view<1>(1)(5));
}

}  // namespace
}  // namespace qlip
