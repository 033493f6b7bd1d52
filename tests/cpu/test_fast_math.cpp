/// @file test_fast_math.cpp
/// @brief The branch-free exp_fast / silu_fast of cpu/activation.hpp (used by the fused SwiGLU in
///        nn/encoder_layer.hpp) against double-precision formulas over a wide input range.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/compare.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/core/math.hpp"
#include "qlip/cpu/activation.hpp"

namespace {

using qlip::detail::cpu::exp_fast;
using qlip::detail::cpu::silu_fast;

/// Every float in [lo, hi] at a step of `step` plus the ends.
std::vector<float> grid(float lo, float hi, float step) {
  std::vector<float> v;
  for (double x = lo; x <= hi; x += step) v.push_back(static_cast<float>(x));
  v.push_back(hi);
  return v;
}

TEST(FastMath, ExpWithinTwoUlpOverTheUnclampedRange) {
  double worst = 0.0;
  for (float x : grid(-87.0f, 88.0f, 1.0f / 1024.0f)) {
    const double want = std::exp(static_cast<double>(x));
    const double rel = std::fabs(static_cast<double>(exp_fast(x)) - want) / want;
    worst = std::max(worst, rel);
  }
  EXPECT_LT(worst, 2.5e-7) << "worst relative error of exp_fast";  // 2 ulp at 2^-23 each ≈ 2.4e-7
}

TEST(FastMath, ExpSaturatesInsteadOfOverflowing) {
  for (float x : {-1e30f, -200.0f, -88.0f, 89.0f, 100.0f, 1e30f}) {
    const float e = exp_fast(x);
    EXPECT_TRUE(std::isfinite(e) && e > 0.0f) << "exp_fast(" << x << ") = " << e;
  }
  EXPECT_EQ(exp_fast(0.0f), 1.0f);
}

TEST(FastMath, SiluMatchesTheReferenceWithinTheElementwiseTolerance) {
  // Dense over [-100, 100] (beyond where e^-x saturates on either side) and a fine grid near 0.
  std::vector<float> xs = grid(-100.0f, 100.0f, 1.0f / 256.0f);
  for (float x : grid(-1e-3f, 1e-3f, 1e-6f)) xs.push_back(x);
  for (float x : {0.0f, -0.0f, 1e-30f, -1e-30f, std::numeric_limits<float>::denorm_min(), 3e38f, -3e38f}) xs.push_back(x);
  const auto n = static_cast<std::int64_t>(xs.size());
  qlip::Tensor<float, 1> got({n}), lib({n}), want({n});
  double worst_rel = 0.0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float x = xs[static_cast<std::size_t>(i)];
    const double xd = x;
    got(i) = silu_fast(x);
    lib(i) = qlip::math::silu(x);
    want(i) = static_cast<float>(xd / (1.0 + std::exp(-xd)));
    if (std::fabs(want(i)) > 1e-30f)
      worst_rel = std::max(worst_rel, std::fabs(static_cast<double>(got(i)) - want(i)) / std::fabs(want(i)));
  }
  EXPECT_TRUE(qlip::test::all_close(got.view(), want.view(), qlip::test::kF32Op));
  EXPECT_TRUE(qlip::test::all_close(got.view(), lib.view(), qlip::test::kF32Op));
  EXPECT_LT(worst_rel, 1e-6) << "silu_fast should be within a few ulp where the result is not tiny";
}

}  // namespace
