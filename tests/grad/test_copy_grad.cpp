/// @file test_copy_grad.cpp
/// @brief copy / fill / gather_rows and its adjoint: finite differences on the double reference,
///        the CPU backend against the reference on strided views, and the index errors.
#include <gtest/gtest.h>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "qlip/cpu/copy.hpp"
#include "qlip/reference/copy.hpp"

namespace qlip {
namespace {

TEST(CopyGrad, GatherRowsBackwardMatchesFiniteDifferences) {
  Tensor<double, 2> x({5, 3}), y({4, 3}), dy({4, 3}), dx({5, 3});
  Tensor<std::int64_t, 1> rows({4});
  const std::int64_t r[4] = {4, 0, 4, 2};  // a repeated row: its gradients add up
  for (int i = 0; i < 4; ++i) rows(i) = r[i];
  test::fill_normal(x, 1);
  test::fill_normal(dy, 2);
  reference::gather_rows_backward<double>(rows.view(), dy.view(), dx.view());
  auto loss = [&] {
    reference::gather_rows<double>(x.view(), rows.view(), y.view());
    return test::weighted_sum(dy, y);
  };
  EXPECT_TRUE(test::check_gradients(loss, {{"x", test::span_of(x), test::span_of(dx)}}));
}

TEST(CopyGrad, CpuCopyFillAndGatherMatchReferenceOnStridedViews) {
  Tensor<double, 2> xd({6, 4});
  test::fill_normal(xd, 3);
  const Tensor<float, 2> x = test::to_float(xd);
  // Transposed source into a padded destination (rows of a wider buffer).
  Tensor<float, 2> wide_ref({4, 9}), wide_cpu({4, 9});
  reference::fill<float, 2>(wide_ref.view(), -1.0f);
  ops::fill(cpu_backend{}, wide_cpu.view(), -1.0f);
  reference::copy<float, 2>(x.view().transpose(0, 1), wide_ref.view().slice(1, 2, 8));
  ops::copy(cpu_backend{}, x.view().transpose(0, 1), wide_cpu.view().slice(1, 2, 8));
  EXPECT_TRUE(test::all_close(test::as_const_view(wide_cpu), test::as_const_view(wide_ref), test::kExact));
  EXPECT_EQ(wide_cpu(0, 0), -1.0f);
  EXPECT_EQ(wide_cpu(1, 3), x(1, 1));

  Tensor<std::int64_t, 1> rows({3});
  rows(0) = 5;
  rows(1) = 1;
  rows(2) = 5;
  Tensor<float, 2> y({3, 4}), dx({6, 4});
  ops::gather_rows(cpu_backend{}, x.view(), rows.view(), y.view());
  for (int j = 0; j < 4; ++j) EXPECT_EQ(y(0, j), x(5, j));
  ops::fill(cpu_backend{}, dx.view(), 0.0f);
  ops::gather_rows_backward(cpu_backend{}, rows.view(), y.view(), dx.view());
  for (int j = 0; j < 4; ++j) {
    EXPECT_EQ(dx(5, j), 2.0f * x(5, j));
    EXPECT_EQ(dx(0, j), 0.0f);
  }
}

TEST(CopyGrad, BadRowIndexAndShapesAreNamed) {
  Tensor<float, 2> x({3, 2}), y({2, 2}), bad({2, 3});
  Tensor<std::int64_t, 1> rows({2});
  rows(0) = 1;
  rows(1) = 3;
  test::expect_error_naming([&] { ops::gather_rows(cpu_backend{}, x.view(), rows.view(), y.view()); },
                            "row index 3 at position 1 is outside [0, 3)");
  test::expect_error_naming([&] { ops::copy(cpu_backend{}, x.view(), bad.view()); }, "copy: y");
}

}  // namespace
}  // namespace qlip
