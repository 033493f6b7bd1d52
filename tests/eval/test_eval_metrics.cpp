/// @file test_eval_metrics.cpp
/// @brief The evaluation metrics on data with known answers: a linear probe on separable and on
///        overlapping Gaussian classes, zero-shot with planted class directions, code usage counts.
#include <gtest/gtest.h>

#include <cmath>

#include "common/compare.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/eval/code_usage.hpp"
#include "qlip/eval/linear_probe.hpp"
#include "qlip/eval/zero_shot.hpp"

namespace qlip {
namespace {

/// n points per class around class centres c·spacing on axis (c mod F), unit noise.
void blobs(std::int64_t n_per, int classes, int f, double spacing, std::uint64_t seed, Tensor<float, 2>& x,
           std::vector<int>& y) {
  x = Tensor<float, 2>({n_per * classes, f});
  y.clear();
  Philox rng(seed);
  for (int c = 0; c < classes; ++c)
    for (std::int64_t i = 0; i < n_per; ++i) {
      const std::int64_t row = c * n_per + i;
      for (int j = 0; j < f; ++j)
        x(row, j) = rng.normal(static_cast<std::uint64_t>(row * f + j)) + (j == c % f ? static_cast<float>(spacing) : 0.f);
      y.push_back(c);
    }
}

TEST(LinearProbe, SeparableClassesAreLearnedAndOverlapIsNot) {
  Tensor<float, 2> xtr, xte;
  std::vector<int> ytr, yte;
  blobs(200, 4, 6, 8.0, 1, xtr, ytr);
  blobs(100, 4, 6, 8.0, 2, xte, yte);
  const eval::LinearProbeResult r = eval::linear_probe(xtr.view(), ytr, xte.view(), yte, 4);
  EXPECT_GE(r.test_top1, 0.99);
  // Every class centred at 0: nothing to learn, chance level (0.25).
  blobs(200, 4, 6, 0.0, 3, xtr, ytr);
  blobs(100, 4, 6, 0.0, 4, xte, yte);
  const eval::LinearProbeResult chance = eval::linear_probe(xtr.view(), ytr, xte.view(), yte, 4);
  EXPECT_LT(chance.test_top1, 0.4);
  test::expect_error_naming([&] { (void)eval::linear_probe(xtr.view(), {0, 1}, xte.view(), yte, 4); },
                            "training features but 2 labels");
}

TEST(ZeroShot, PlantedDirectionsAreFound) {
  // 3 classes × 2 templates; template embeddings are noisy copies of the class axis.
  Tensor<float, 2> text({6, 3});
  for (int c = 0; c < 3; ++c)
    for (int t = 0; t < 2; ++t)
      for (int j = 0; j < 3; ++j) text(c * 2 + t, j) = (j == c ? 2.0f : 0.0f) + (t == 0 ? 0.3f : -0.2f) * (j == (c + 1) % 3);
  const Tensor<float, 2> cls = eval::class_embeddings(text.view(), 3);
  for (int c = 0; c < 3; ++c) {
    double n = 0;
    for (int j = 0; j < 3; ++j) n += cls(c, j) * cls(c, j);
    EXPECT_NEAR(n, 1.0, 1e-6);
  }
  Tensor<float, 2> images({3, 3});
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) images(i, j) = j == (2 - i) ? 5.0f : 0.1f;
  const std::vector<int> pred = eval::zero_shot_predict(images.view(), cls.view());
  EXPECT_EQ(pred, (std::vector<int>{2, 1, 0}));
  EXPECT_DOUBLE_EQ(eval::top1(pred, {2, 1, 1}), 2.0 / 3.0);
}

TEST(CodeUsage, CountsDistinctCodesBitsAndGroupEntropy) {
  // 4 tokens, 4 bits: codes 0b0000, 0b1111, 0b0000, 0b1010.
  const std::uint8_t raw[4][4] = {{0, 0, 0, 0}, {1, 1, 1, 1}, {0, 0, 0, 0}, {1, 0, 1, 0}};
  Tensor<std::uint8_t, 2> bits({4, 4});
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) bits(i, j) = raw[i][j];
  const eval::CodeUsage u = eval::code_usage(bits.view(), 2);
  EXPECT_EQ(u.distinct_codes, 3);
  EXPECT_EQ(u.ones_fraction, (std::vector<double>{0.5, 0.25, 0.5, 0.25}));
  // group 0 (bits 0–1): 00, 11, 00, 10 → p = {½, ¼, ¼}; group 1 (bits 2–3): 00, 11, 00, 10 → the same.
  const double h = -(0.5 * std::log(0.5) + 2 * 0.25 * std::log(0.25));
  EXPECT_NEAR(u.group_entropy[0], h, 1e-12);
  EXPECT_NEAR(u.group_entropy[1], h, 1e-12);
  EXPECT_NEAR(u.mean_group_entropy_ratio, h / (2 * std::log(2.0)), 1e-12);
  test::expect_error_naming([&] { (void)eval::code_usage(bits.view(), 3); }, "must be in [1, 16] and divide");
}

}  // namespace
}  // namespace qlip
