/// @file test_math_grad.cpp
/// @brief The fp32 activation derivatives of core/math.hpp (used by the CUDA backwards) vs the
///        reference's double derivatives: within kF32Op over the curved middle and the saturated
///        tails, and finite at extreme inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "common/compare.hpp"
#include "qlip/core/math.hpp"
#include "qlip/reference/activation.hpp"

namespace qlip {
namespace {

template <class F32, class F64>
void expect_grad_matches(F32 f32, F64 f64, const char* name) {
  SCOPED_TRACE(name);
  constexpr std::int64_t kN = 24001;  // x in [−12, 12] step 1e−3
  Tensor<float, 1> got({kN}), ref({kN});
  for (std::int64_t i = 0; i < kN; ++i) {
    const float x = -12.0f + 1e-3f * static_cast<float>(i);
    got.data()[i] = f32(x);
    ref.data()[i] = static_cast<float>(f64(static_cast<double>(x)));
  }
  EXPECT_TRUE(test::all_close(got.view(), ref.view(), test::kF32Op));
  for (float x : {-1e4f, -100.0f, -88.0f, 88.0f, 100.0f, 1e4f}) EXPECT_TRUE(std::isfinite(f32(x))) << "x = " << x;
}

TEST(MathGrad, ActivationDerivativesMatchReference) {
  expect_grad_matches(math::gelu_grad, detail::gelu_grad_f64, "gelu");
  expect_grad_matches(math::quick_gelu_grad, detail::quick_gelu_grad_f64, "quick_gelu");
  expect_grad_matches(math::silu_grad, detail::silu_grad_f64, "silu");
  expect_grad_matches(math::tanh_grad, detail::tanh_grad_f64, "tanh");
}

}  // namespace
}  // namespace qlip
