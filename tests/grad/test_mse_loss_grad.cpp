/// @file test_mse_loss_grad.cpp
/// @brief MSE loss: the double reference against finite differences, the CPU backend against the
///        float reference (strided views, a size that takes the parallel path, thread-count
///        independence), skipped gradients and the argument checks.
#include <gtest/gtest.h>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "common/loss_test_util.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/cpu/mse_loss.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/reference/mse_loss.hpp"

namespace qlip {
namespace {

using test::fill_normal;
using test::span_of;

TEST(MseLossGrad, ReferenceMatchesFiniteDifferences) {
  struct Shape {
    std::int64_t m, d;
  };
  std::uint64_t seed = 500;
  for (const Shape s : {Shape{1, 1}, Shape{3, 7}, Shape{5, 1}, Shape{1, 9}}) {
    SCOPED_TRACE(::testing::Message() << s.m << "x" << s.d);
    Tensor<double, 2> x_hat({s.m, s.d}), x({s.m, s.d}), dx_hat({s.m, s.d});
    fill_normal(x_hat, ++seed);
    fill_normal(x, ++seed);
    const double dloss = 1.7;
    reference::mse_loss_backward<double>(x_hat.view(), x.view(), dloss, dx_hat.view());
    auto loss = [&] { return dloss * reference::mse_loss<double>(x_hat.view(), x.view()); };
    EXPECT_TRUE(test::check_gradients(loss, {{"x_hat", span_of(x_hat), span_of(dx_hat)}}));
  }
}

TEST(MseLossGrad, CpuMatchesReference) {
  struct Shape {
    std::int64_t m, d;
  };
  std::uint64_t seed = 600;
  for (const Shape s : {Shape{1, 1}, Shape{33, 70}, Shape{3, 40000}}) {  // 3×40000 takes the OpenMP path
    SCOPED_TRACE(::testing::Message() << s.m << "x" << s.d);
    Tensor<double, 2> xhd({s.m, s.d}), xd({s.m, s.d});
    fill_normal(xhd, ++seed);
    fill_normal(xd, ++seed);
    const Tensor<float, 2> x_hat = test::to_float(xhd), x = test::to_float(xd);
    const double dloss = 1000.0;  // α_r of stage 1
    EXPECT_TRUE(test::scalar_close(ops::mse_loss(cpu_backend{}, x_hat.view(), x.view()),
                                   reference::mse_loss(x_hat.view(), x.view()), test::kF32Op));
    Tensor<float, 2> dx_ref({s.m, s.d}), dx({s.m, s.d});
    reference::mse_loss_backward<float>(x_hat.view(), x.view(), dloss, dx_ref.view());
    ops::mse_loss_backward(cpu_backend{}, x_hat.view(), x.view(), dloss, dx.view());
    EXPECT_TRUE(test::all_close(test::as_const_view(dx), test::as_const_view(dx_ref), test::kF32Op));
  }
}

TEST(MseLossGrad, CpuTakesStridedViewsAndSkipsAnEmptyGradient) {
  const std::int64_t m = 6, d = 11;
  Tensor<double, 2> xhd({m, d}), xd({m, d});
  fill_normal(xhd, 7);
  fill_normal(xd, 8);
  const Tensor<float, 2> xh_c = test::to_float(xhd), x_c = test::to_float(xd);
  Tensor<float, 2> xh_store, x_store, dx_store;
  const HostView<float, 2> x_hat = test::transposed_view(xh_store, m, d), x = test::padded_view(x_store, m, d, 5);
  test::copy_into(xh_c, x_hat);
  test::copy_into(x_c, x);
  const HostView<float, 2> dx = test::padded_view(dx_store, m, d, 3);
  for (std::int64_t i = 0; i < dx_store.numel(); ++i) dx_store.data()[i] = -7.0f;
  Tensor<float, 2> dx_ref({m, d});
  reference::mse_loss_backward<float>(xh_c.view(), x_c.view(), 0.5, dx_ref.view());
  ops::mse_loss_backward(cpu_backend{}, x_hat, x, 0.5, dx);
  EXPECT_TRUE(test::all_close(HostView<const float, 2>(dx), test::as_const_view(dx_ref), test::kF32Op));
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = d; j < d + 3; ++j) EXPECT_EQ(dx_store(i, j), -7.0f) << "padding written in row " << i;
  EXPECT_TRUE(test::scalar_close(ops::mse_loss(cpu_backend{}, x_hat, x), reference::mse_loss(xh_c.view(), x_c.view()),
                                 test::kF32Op));
  ops::mse_loss_backward(cpu_backend{}, x_hat, x, 0.5, HostView<float, 2>());  // not wanted: nothing to do
}

TEST(MseLossGrad, CpuSumDoesNotDependOnTheThreadCount) {
  const std::int64_t m = 4, d = 50000;
  Tensor<double, 2> xhd({m, d}), xd({m, d});
  fill_normal(xhd, 21);
  fill_normal(xd, 22);
  const Tensor<float, 2> x_hat = test::to_float(xhd), x = test::to_float(xd);
  const int saved = num_threads();
  set_num_threads(1);
  const double one = ops::mse_loss(cpu_backend{}, x_hat.view(), x.view());
  set_num_threads(3);
  const double three = ops::mse_loss(cpu_backend{}, x_hat.view(), x.view());
  set_num_threads(saved);
  EXPECT_EQ(one, three);
}

TEST(MseLossGrad, ArgumentErrorsNameTheArgument) {
  Tensor<float, 2> x_hat({3, 4}), x({3, 4}), bad_x({4, 3}), dx({3, 4}), bad_dx({3, 5}), empty({0, 4});
  test::expect_error_naming([&] { ops::mse_loss(cpu_backend{}, x_hat.view(), bad_x.view()); }, "mse_loss: target x");
  test::expect_error_naming([&] { ops::mse_loss(cpu_backend{}, empty.view(), empty.view()); },
                            "mse_loss: x_hat is empty");
  test::expect_error_naming([&] { ops::mse_loss_backward(cpu_backend{}, x_hat.view(), x.view(), 1.0, bad_dx.view()); },
                            "mse_loss_backward: dx_hat");
  test::expect_error_naming(
      [&] { reference::mse_loss_backward<float>(x_hat.view(), bad_x.view(), 1.0, dx.view()); },
      "mse_loss_backward: target x");
}

}  // namespace
}  // namespace qlip
