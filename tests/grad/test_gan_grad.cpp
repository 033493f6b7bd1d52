/// @file test_gan_grad.cpp
/// @brief The discriminator's own ops and the GAN losses: blur2d (both geometries the discriminator
///        uses and odd sizes), the minibatch standard deviation with its forward-mode tangents (what
///        the R1 penalty's parameter gradient needs), axpy, and the non-saturating losses. Each
///        double reference backward (and tangent) against finite differences; each CPU op against
///        the float reference; argument errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "qlip/cpu/add.hpp"
#include "qlip/cpu/gan.hpp"
#include "qlip/nn/gan_loss.hpp"
#include "qlip/reference/add.hpp"
#include "qlip/reference/gan.hpp"

namespace qlip {
namespace {

using test::fill_normal;
using test::span_of;

struct BlurCase {
  std::int64_t b, c, h, w;
  BlurGeometry g;
};
// Before a stride-2 3×3 conv (pad 2), before a 1×1 skip (pad 1, down 2), odd and rectangular sizes.
constexpr BlurCase kBlurCases[] = {{2, 3, 8, 8, {2, 1}}, {2, 2, 8, 8, {1, 2}}, {1, 2, 7, 5, {1, 2}},
                                   {1, 1, 5, 6, {2, 1}}, {3, 1, 4, 4, {0, 1}}};

Extents<4> blur_out(const BlurCase& c) {
  return {c.b, c.c, detail::blur_output_extent(c.h, c.g), detail::blur_output_extent(c.w, c.g)};
}

TEST(GanGrad, ReferenceBlurMatchesFiniteDifferences) {
  std::uint64_t seed = 1;
  for (const BlurCase& c : kBlurCases) {
    SCOPED_TRACE(::testing::Message() << "blur pad " << c.g.pad << " down " << c.g.down << " " << c.h << "x" << c.w);
    Tensor<double, 4> x({c.b, c.c, c.h, c.w}), y(blur_out(c)), dy(blur_out(c)), dx(x.shape());
    fill_normal(x, ++seed);
    fill_normal(dy, ++seed);
    reference::blur2d_backward<double>(dy.view(), dx.view(), c.g);
    auto loss = [&] {
      reference::blur2d<double>(x.view(), y.view(), c.g);
      return test::weighted_sum(dy, y);
    };
    EXPECT_TRUE(test::check_gradients(loss, {{"x", span_of(x), span_of(dx)}}));
  }
}

TEST(GanGrad, BlurOfAConstantImageIsTheConstantInside) {
  // The filter sums to 1: away from the zero padding a constant stays itself (StyleGAN2's setup_filter).
  Tensor<double, 4> x({1, 1, 8, 8}), y({1, 1, 9, 9});
  for (std::int64_t i = 0; i < x.numel(); ++i) x.data()[i] = 3.0;
  reference::blur2d<double>(x.view(), y.view(), {2, 1});
  EXPECT_NEAR(y(0, 0, 4, 4), 3.0, 1e-15);
  EXPECT_NEAR(y(0, 0, 0, 0), 3.0 * 0.25, 1e-15);  // with padding 2 only taps 2, 3 of each axis: (3/8 + 1/8)²
}

TEST(GanGrad, CpuBlurEqualsTheReference) {
  std::uint64_t seed = 20;
  std::vector<BlurCase> cases(std::begin(kBlurCases), std::end(kBlurCases));
  cases.push_back({6, 16, 32, 32, {2, 1}});  // above the parallel threshold
  for (const BlurCase& c : cases) {
    Tensor<double, 4> xd({c.b, c.c, c.h, c.w}), dyd(blur_out(c));
    fill_normal(xd, ++seed);
    fill_normal(dyd, ++seed);
    const Tensor<float, 4> x = test::to_float(xd), dy = test::to_float(dyd);
    Tensor<float, 4> y_ref(blur_out(c)), y(blur_out(c)), dx_ref(x.shape()), dx(x.shape());
    reference::blur2d<float>(x.view(), y_ref.view(), c.g);
    ops::blur2d(cpu_backend{}, x.view(), y.view(), c.g);
    EXPECT_TRUE(test::all_close(y.view(), y_ref.view(), test::kF32Op));
    reference::blur2d_backward<float>(dy.view(), dx_ref.view(), c.g);
    ops::blur2d_backward(cpu_backend{}, dy.view(), dx.view(), c.g);
    EXPECT_TRUE(test::all_close(dx.view(), dx_ref.view(), test::kF32Op));
  }
}

// Channel slices of larger tensors (strided planes), both directions.
TEST(GanGrad, CpuBlurOnStridedViewsEqualsTheReference) {
  Tensor<double, 4> xd({2, 5, 9, 7}), dyd({2, 6, 4, 3});
  fill_normal(xd, 31);
  fill_normal(dyd, 32);
  const Tensor<float, 4> xf = test::to_float(xd), dyf = test::to_float(dyd);
  const BlurGeometry g{1, 2};
  const HostView<const float, 4> x = xf.view().slice(1, 1, 4), dy = dyf.view().slice(1, 2, 5);
  Tensor<float, 4> y_ref({2, 3, 4, 3}), y_big({2, 4, 4, 3}), dx_ref({2, 3, 9, 7}), dx_big({2, 4, 9, 7});
  const HostView<float, 4> y = y_big.view().slice(1, 1, 4), dx = dx_big.view().slice(1, 0, 3);
  reference::blur2d<float>(x, y_ref.view(), g);
  ops::blur2d(cpu_backend{}, x, y, g);
  EXPECT_TRUE(test::all_close(HostView<const float, 4>(y), y_ref.view(), test::kF32Op));
  reference::blur2d_backward<float>(dy, dx_ref.view(), g);
  ops::blur2d_backward(cpu_backend{}, dy, dx, g);
  EXPECT_TRUE(test::all_close(HostView<const float, 4>(dx), dx_ref.view(), test::kF32Op));
}

struct StdCase {
  std::int64_t n, c, h, w, group;
};
// Groups of 4 (two groups), a batch smaller than the group, one group of 2.
constexpr StdCase kStdCases[] = {{8, 3, 2, 2, 4}, {3, 2, 2, 3, 4}, {2, 4, 1, 2, 2}};

TEST(GanGrad, ReferenceMinibatchStdMatchesFiniteDifferences) {
  std::uint64_t seed = 40;
  for (const StdCase& c : kStdCases) {
    SCOPED_TRACE(::testing::Message() << "minibatch std n " << c.n << " group " << c.group);
    Tensor<double, 4> x({c.n, c.c, c.h, c.w}), y({c.n, c.c + 1, c.h, c.w}), dy(y.shape()), dx(x.shape());
    fill_normal(x, ++seed);
    fill_normal(dy, ++seed);
    reference::minibatch_std_backward<double>(x.view(), dy.view(), dx.view(), c.group);
    auto loss = [&] {
      reference::minibatch_std<double>(x.view(), y.view(), c.group);
      return test::weighted_sum(dy, y);
    };
    EXPECT_TRUE(test::check_gradients(loss, {{"x", span_of(x), span_of(dx)}}));
  }
}

/// (f(x + h·ẋ) − f(x − h·ẋ)) / 2h for a function writing a tensor of shape `shape`.
template <class F>
Tensor<double, 4> directional_difference(Tensor<double, 4>& x, const Tensor<double, 4>& xdot, const Extents<4>& shape,
                                         F f) {
  const double h = test::kFiniteDifferenceStep;
  const std::vector<double> saved(x.data(), x.data() + x.numel());
  Tensor<double, 4> up(shape), down(shape), out(shape);
  for (std::int64_t i = 0; i < x.numel(); ++i) x.data()[i] = saved[static_cast<std::size_t>(i)] + h * xdot.data()[i];
  f(up);
  for (std::int64_t i = 0; i < x.numel(); ++i) x.data()[i] = saved[static_cast<std::size_t>(i)] - h * xdot.data()[i];
  f(down);
  std::copy(saved.begin(), saved.end(), x.data());
  for (std::int64_t i = 0; i < out.numel(); ++i) out.data()[i] = (up.data()[i] - down.data()[i]) / (2 * h);
  return out;
}

TEST(GanGrad, MinibatchStdTangentsAreTheDirectionalDerivatives) {
  std::uint64_t seed = 60;
  for (const StdCase& c : kStdCases) {
    SCOPED_TRACE(::testing::Message() << "minibatch std tangent n " << c.n << " group " << c.group);
    Tensor<double, 4> x({c.n, c.c, c.h, c.w}), xdot(x.shape()), dy({c.n, c.c + 1, c.h, c.w}), dydot(dy.shape());
    fill_normal(x, ++seed);
    fill_normal(xdot, ++seed);
    fill_normal(dy, ++seed);
    fill_normal(dydot, ++seed);
    // Forward: ẏ = ∂y/∂x·ẋ.
    Tensor<double, 4> ydot(dy.shape());
    reference::minibatch_std_tangent<double>(x.view(), xdot.view(), ydot.view(), c.group);
    const Tensor<double, 4> ydot_fd = directional_difference(
        x, xdot, dy.shape(), [&](Tensor<double, 4>& y) { reference::minibatch_std<double>(x.view(), y.view(), c.group); });
    EXPECT_TRUE(test::all_close(ydot.view(), ydot_fd.view(), test::kFiniteDifference));
    // Backward: ḋx = ∂/∂ε bwd(x + εẋ, dy) + bwd(x, ḋy) (the backward is linear in dy).
    Tensor<double, 4> dxdot(x.shape()), linear(x.shape());
    reference::minibatch_std_backward_tangent<double>(x.view(), xdot.view(), dy.view(), dydot.view(), dxdot.view(),
                                                      c.group);
    Tensor<double, 4> want = directional_difference(x, xdot, x.shape(), [&](Tensor<double, 4>& dx) {
      reference::minibatch_std_backward<double>(x.view(), dy.view(), dx.view(), c.group);
    });
    reference::minibatch_std_backward<double>(x.view(), dydot.view(), linear.view(), c.group);
    for (std::int64_t i = 0; i < want.numel(); ++i) want.data()[i] += linear.data()[i];
    EXPECT_TRUE(test::all_close(dxdot.view(), want.view(), test::kFiniteDifference));
  }
}

TEST(GanGrad, CpuMinibatchStdOpsEqualTheReference) {
  Tensor<double, 4> xd({8, 5, 4, 4}), xdotd(xd.shape()), dyd({8, 6, 4, 4}), dydotd(dyd.shape());
  fill_normal(xd, 80);
  fill_normal(xdotd, 81);
  fill_normal(dyd, 82);
  fill_normal(dydotd, 83);
  const auto x = test::to_float(xd), xdot = test::to_float(xdotd), dy = test::to_float(dyd),
             dydot = test::to_float(dydotd);
  Tensor<float, 4> a(dy.shape()), b(dy.shape()), ga(x.shape()), gb(x.shape());
  reference::minibatch_std<float>(x.view(), a.view(), 4);
  ops::minibatch_std(cpu_backend{}, x.view(), b.view(), 4);
  EXPECT_TRUE(test::all_close(b.view(), a.view(), test::kExact));
  reference::minibatch_std_backward<float>(x.view(), dy.view(), ga.view(), 4);
  ops::minibatch_std_backward(cpu_backend{}, x.view(), dy.view(), gb.view(), 4);
  EXPECT_TRUE(test::all_close(gb.view(), ga.view(), test::kExact));
  reference::minibatch_std_tangent<float>(x.view(), xdot.view(), a.view(), 4);
  ops::minibatch_std_tangent(cpu_backend{}, x.view(), xdot.view(), b.view(), 4);
  EXPECT_TRUE(test::all_close(b.view(), a.view(), test::kExact));
  reference::minibatch_std_backward_tangent<float>(x.view(), xdot.view(), dy.view(), dydot.view(), ga.view(), 4);
  ops::minibatch_std_backward_tangent(cpu_backend{}, x.view(), xdot.view(), dy.view(), dydot.view(), gb.view(), 4);
  EXPECT_TRUE(test::all_close(gb.view(), ga.view(), test::kExact));
}

TEST(GanGrad, AxpyAddsTheScaledInputRoundedOnce) {
  Tensor<double, 2> xd({3, 70}), yd({3, 70});
  fill_normal(xd, 90);
  fill_normal(yd, 91);
  const auto x = test::to_float(xd);
  Tensor<float, 2> y_ref = test::to_float(yd), y = test::to_float(yd);
  reference::axpy<float>(0.3, x.view(), y_ref.view());
  ops::axpy(cpu_backend{}, 0.3, x.view(), y.view());
  EXPECT_TRUE(test::all_close(y.view(), y_ref.view(), test::kExact));
  for (std::int64_t i = 0; i < x.numel(); ++i)
    EXPECT_EQ(y.data()[i], static_cast<float>(static_cast<double>(static_cast<float>(yd.data()[i])) +
                                              0.3 * static_cast<double>(x.data()[i])));
}

TEST(GanGrad, LossesMatchFiniteDifferencesAndTheirDefinitions) {
  Tensor<double, 1> lr({5}), lf({5}), dr({5}), df({5}), dg({5});
  fill_normal(lr, 100, 3.0);
  fill_normal(lf, 101, 3.0);
  const double ld = nn::discriminator_loss<double>(lr.view(), lf.view(), dr.view(), df.view());
  double want = 0.0;
  for (int i = 0; i < 5; ++i) want += 0.5 * (std::log1p(std::exp(-lr(i))) + std::log1p(std::exp(lf(i)))) / 5.0;
  EXPECT_NEAR(ld, want, 1e-14);
  EXPECT_TRUE(test::check_gradients(
      [&] { return nn::discriminator_loss<double>(lr.view(), lf.view(), HostView<double, 1>(), HostView<double, 1>()); },
      {{"real logits", span_of(lr), span_of(dr)}, {"fake logits", span_of(lf), span_of(df)}}));
  const double lg = nn::generator_loss<double>(lf.view(), dg.view(), 1.0);
  double want_g = 0.0;
  for (int i = 0; i < 5; ++i) want_g += std::log1p(std::exp(-lf(i))) / 5.0;
  EXPECT_NEAR(lg, want_g, 1e-14);
  EXPECT_TRUE(test::check_gradients([&] { return nn::generator_loss<double>(lf.view(), HostView<double, 1>()); },
                                    {{"fake logits", span_of(lf), span_of(dg)}}));
  // Far in the tails softplus stays finite and exact: softplus(800) = 800, softplus(−800) = e^−800.
  EXPECT_EQ(nn::softplus(800.0), 800.0);
  EXPECT_GT(nn::softplus(-800.0), -1.0);
  EXPECT_LT(nn::softplus(-800.0), 1e-300);
}

TEST(GanGrad, ErrorsNameTheProblem) {
  Tensor<float, 4> x({6, 2, 4, 4}), y({6, 3, 4, 4}), yb({6, 2, 4, 4}), small({1, 1, 1, 1}), out({1, 1, 1, 1});
  test::expect_error_naming([&] { reference::minibatch_std<float>(x.view(), y.view(), 4); }, "not a multiple of the group size 4");
  test::expect_error_naming([&] { reference::minibatch_std<float>(x.view(), yb.view(), 3); }, "output has shape");
  test::expect_error_naming([&] { ops::blur2d(cpu_backend{}, small.view(), out.view(), {0, 1}); }, "does not fit");
  test::expect_error_naming([&] { ops::blur2d(cpu_backend{}, x.view(), yb.view(), {2, 1}); }, "expected [6, 2, 5, 5]");
}

}  // namespace
}  // namespace qlip
