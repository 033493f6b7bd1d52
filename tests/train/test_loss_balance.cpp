/// @file test_loss_balance.cpp
/// @brief The automatic loss balance (qlip/train/loss_balance.hpp): the median of the window sets the
///        ratio, errors name the problem, the probed parameter is E_v's last MLP linear, and the two
///        measured gradients are exactly the parts that the training gradient is made of.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/compare.hpp"
#include "common/train_tiny.hpp"
#include "qlip/cpu.hpp"
#include "qlip/model/qlip_trainable.hpp"
#include "qlip/train/clip_grad.hpp"
#include "qlip/train/init.hpp"
#include "qlip/train/loss_balance.hpp"
#include "qlip/train/scratch_model.hpp"

namespace qlip {
namespace {

train::LossGradientSample sample(double align, double recon) { return {0, align, recon}; }

TEST(LossBalance, MedianOfTheWindowSetsTheRatio) {
  train::LossBalance odd(3);
  odd.add(sample(10, 1));     // 10
  odd.add(sample(1000, 1));   // 1000 (an outlier the median ignores)
  EXPECT_FALSE(odd.ready());
  odd.add(sample(30, 0.1));   // 300
  ASSERT_TRUE(odd.ready());
  EXPECT_DOUBLE_EQ(odd.ratio(), 300.0);
  odd.add(sample(1, 1));  // past the window: ignored
  EXPECT_EQ(odd.samples().size(), 3u);
  EXPECT_DOUBLE_EQ(odd.ratio(), 300.0);

  train::LossBalance even(2);
  even.add(sample(100, 1));
  even.add(sample(300, 1));
  EXPECT_DOUBLE_EQ(even.ratio(), 200.0);
}

TEST(LossBalance, ErrorsNameTheProblem) {
  test::expect_error_naming([] { train::LossBalance b(0); }, "at least one step");
  train::LossBalance b(3);
  b.add(sample(1, 1));
  test::expect_error_naming([&] { (void)b.ratio(); }, "1 of 3 measurements taken");
  b.add(sample(1, 0));  // the reconstruction gradient vanished: infinite ratio
  b.add(sample(2, 0));
  test::expect_error_naming([&] { (void)b.ratio(); }, "use --balance fixed");
  test::expect_error_naming([] { (void)train::last_vision_mlp_weight(0, true); }, "no layers");
}

TEST(LossBalance, ProbedParameterIsTheLastVisionMlpLinear) {
  EXPECT_EQ(train::last_vision_mlp_weight(12, true), "vision_model.encoder.layers.11.mlp.w3.weight");
  EXPECT_EQ(train::last_vision_mlp_weight(2, false), "vision_model.encoder.layers.1.mlp.fc2.weight");
  QlipTrainable<TrainTinyQlip, cpu_backend> model(train::scratch_runtime(), train::scratch_bsq());
  train::ParameterStore store;
  train::bind_to_store(model, store);
  const int i = store.index_of(train::last_vision_mlp_weight(TrainTinyQlip::config.vision.stack.layers, true));
  const std::int64_t d = TrainTinyQlip::config.vision.stack.hidden, inter = TrainTinyQlip::config.vision.stack.intermediate;
  EXPECT_EQ(store.info(i).shape, (std::vector<std::int64_t>{d, inter}));  // the down-projection
}

// The gradient of a step with weights (a, r) and no quantisation terms, at the probe, is
// a·g_align + r·g_recon: what is measured is what the weights act on.
TEST(LossBalance, MeasuredGradientsAreThePartsOfTheTrainingGradient) {
  QlipTrainable<TrainTinyQlip, cpu_backend> model(train::scratch_runtime(), train::scratch_bsq());
  train::ParameterStore store;
  train::bind_to_store(model, store);
  train::initialize_parameters(store, 5);
  constexpr std::int64_t kB = 4, kT = TrainTinyQlip::config.text.context_length;
  constexpr int kS = TrainTinyQlip::config.vision.image_size;
  Tensor<float, 4> px({kB, 3, kS, kS});
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  for (std::int64_t i = 0; i < px.numel(); ++i) px.data()[i] = normal(rng);
  Tensor<std::int32_t, 2> ids({kB, kT});
  for (std::int64_t i = 0; i < ids.numel(); ++i) ids.data()[i] = static_cast<std::int32_t>(1 + (i * 37) % 500);
  const HostView<const std::int32_t, 1> flat(ids.data(), {ids.numel()});
  model.prepare(kB, kT);

  const int probe = store.index_of(train::last_vision_mlp_weight(2, true));
  const auto probe_grad = [&] {
    const HostView<const float, 1> g = store.flat_grad_view(probe);
    return std::vector<float>(g.data(), g.data() + g.numel());
  };
  const auto backward = [&](double a, double r) {
    (void)model.forward_backward(px.view(), ids.view(), flat, Stage1Weights{a, r, 0.0, 0.0});
  };
  const train::LossGradientSample m = train::measure_loss_gradients(store, probe, 7, backward);
  EXPECT_EQ(m.step, 7);
  EXPECT_EQ(train::grad_norm(store), 0.0) << "the gradients are left zeroed";

  backward(1.0, 0.0);
  const std::vector<float> ga = probe_grad();
  store.zero_grad();
  backward(0.0, 1.0);
  const std::vector<float> gr = probe_grad();
  store.zero_grad();
  const auto norm = [](const std::vector<float>& v) {
    double s = 0.0;
    for (float x : v) s += static_cast<double>(x) * static_cast<double>(x);
    return std::sqrt(s);
  };
  EXPECT_DOUBLE_EQ(m.align_norm, norm(ga));
  EXPECT_DOUBLE_EQ(m.recon_norm, norm(gr));
  ASSERT_GT(m.align_norm, 0.0);
  ASSERT_GT(m.recon_norm, 0.0);

  constexpr double kA = 2.0, kR = 300.0;
  backward(kA, kR);
  const std::vector<float> g = probe_grad();
  std::vector<float> want(g.size());
  for (std::size_t i = 0; i < g.size(); ++i) want[i] = static_cast<float>(kA * ga[i] + kR * gr[i]);
  const std::int64_t n = static_cast<std::int64_t>(g.size());
  // Scale-aware: the atol is relative to the largest weighted part (one fp32 rounding of each sum).
  const double scale = std::max(kA * m.align_norm, kR * m.recon_norm) / std::sqrt(static_cast<double>(n));
  EXPECT_TRUE(test::all_close(HostView<const float, 1>(g.data(), {n}), HostView<const float, 1>(want.data(), {n}),
                              {test::kF32Op.atol * scale, test::kF32Op.rtol}));
}

}  // namespace
}  // namespace qlip
