/// @file test_rowwise_kernels.cu
/// @brief Row-wise L2 normalisation, softmax, the MSE loss (each with its backward) and the
///        element-wise accumulations of the CUDA backend vs the plain-loop reference on the same
///        inputs, odd row counts and widths, in place where the reference allows it. GPU tests
///        skip without a device; the argument checks run everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "common/compare.hpp"
#include "cuda_test_util.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/reference/add.hpp"
#include "qlip/reference/l2_norm.hpp"
#include "qlip/reference/mse_loss.hpp"
#include "qlip/reference/softmax.hpp"

#include "add.cuh"
#include "common.cuh"
#include "l2_norm.cuh"
#include "mse_loss.cuh"
#include "softmax.cuh"

namespace qlip {
namespace {

using test::download;
using test::random_matrix;
using test::upload;

class CudaRowwise : public ::testing::TestWithParam<std::pair<std::int64_t, std::int64_t>> {};

TEST_P(CudaRowwise, L2NormalizeForwardAndBackwardMatchReference) {
  QLIP_REQUIRE_GPU();
  const auto [m, d] = GetParam();
  Tensor<float, 2> x = random_matrix(m, d, 1);
  for (std::int64_t c = 0; c < d; ++c) x(0, c) = 0.0f;  // a zero row: the eps clamp
  const Tensor<float, 2> dy = random_matrix(m, d, 2);
  auto dx_dev = upload(x), ddy = upload(dy);
  cuda::DeviceBuffer<float> dy_out(m * d), dgrad(m * d);
  ops::l2_normalize_rows(cuda_backend{}, dx_dev.view<2>({m, d}), dy_out.view<2>({m, d}));
  ops::l2_normalize_rows_backward(cuda_backend{}, dx_dev.view<2>({m, d}), ddy.view<2>({m, d}), dgrad.view<2>({m, d}));
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  Tensor<float, 2> y({m, d}), g({m, d});
  reference::l2_normalize_rows(x.view(), y.view());
  reference::l2_normalize_rows_backward<float>(x.view(), dy.view(), g.view());
  // Double sums on both sides, one rounding: kF32Op.
  EXPECT_TRUE(test::all_close(download<float, 2>(dy_out, {m, d}).view(), y.view(), test::kF32Op));
  EXPECT_TRUE(test::all_close(download<float, 2>(dgrad, {m, d}).view(), g.view(), test::kF32Op));
}

TEST_P(CudaRowwise, SoftmaxForwardAndBackwardMatchReference) {
  QLIP_REQUIRE_GPU();
  const auto [m, d] = GetParam();
  const Tensor<float, 2> x = random_matrix(m, d, 3, 4.0f), dy = random_matrix(m, d, 4);
  auto dxv = upload(x), ddy = upload(dy);
  cuda::DeviceBuffer<float> dgrad(m * d);
  ops::softmax_rows(cuda_backend{}, dxv.view<2>({m, d}), dxv.view<2>({m, d}));  // in place
  ops::softmax_rows_backward(cuda_backend{}, dxv.view<2>({m, d}), ddy.view<2>({m, d}), dgrad.view<2>({m, d}));
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  Tensor<float, 2> y({m, d}), g({m, d});
  reference::softmax_rows(x.view(), y.view());
  reference::softmax_rows_backward<float>(y.view(), dy.view(), g.view());
  EXPECT_TRUE(test::all_close(download<float, 2>(dxv, {m, d}).view(), y.view(), test::kF32Op));
  EXPECT_TRUE(test::all_close(download<float, 2>(dgrad, {m, d}).view(), g.view(), test::kF32Op));
}

TEST_P(CudaRowwise, MseLossAndBackwardMatchReference) {
  QLIP_REQUIRE_GPU();
  const auto [m, d] = GetParam();
  const Tensor<float, 2> x_hat = random_matrix(m, d, 5), x = random_matrix(m, d, 6);
  auto dxh = upload(x_hat), dx = upload(x);
  cuda::DeviceBuffer<double> rows(m);
  cuda::DeviceBuffer<float> dgrad(m * d);
  const double got = ops::mse_loss(cuda_backend{}, dxh.view<2>({m, d}), dx.view<2>({m, d}), rows.view<1>({m}));
  ops::mse_loss_backward(cuda_backend{}, dxh.view<2>({m, d}), dx.view<2>({m, d}), 0.3, dgrad.view<2>({m, d}));
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  const double want = reference::mse_loss(x_hat.view(), x.view());
  EXPECT_NEAR(got, want, 1e-12 * want);  // both in double, rows summed in another grouping
  Tensor<float, 2> g({m, d});
  reference::mse_loss_backward<float>(x_hat.view(), x.view(), 0.3, g.view());
  EXPECT_TRUE(test::all_close(download<float, 2>(dgrad, {m, d}).view(), g.view(), test::kF32Op));
}

TEST_P(CudaRowwise, AddAndAxpyMatchReference) {
  QLIP_REQUIRE_GPU();
  const auto [m, d] = GetParam();
  const Tensor<float, 2> x = random_matrix(m, d, 7);
  Tensor<float, 2> y = random_matrix(m, d, 8), y2 = random_matrix(m, d, 8);
  auto dxv = upload(x), dyv = upload(y), dy2 = upload(y2);
  ops::add_inplace(cuda_backend{}, dxv.view<2>({m, d}), dyv.view<2>({m, d}));
  ops::axpy(cuda_backend{}, -0.37, dxv.view<2>({m, d}), dy2.view<2>({m, d}));
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  reference::add_inplace<float>(x.view(), y.view());
  reference::axpy<float>(-0.37, x.view(), y2.view());
  EXPECT_TRUE(test::all_close(download<float, 2>(dyv, {m, d}).view(), y.view(), test::kExact));
  // The double product and sum may be fused into one FMA on either side: one double rounding apart,
  // almost always the same float; kF32Op rather than exact.
  EXPECT_TRUE(test::all_close(download<float, 2>(dy2, {m, d}).view(), y2.view(), test::kF32Op));
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaRowwise,
                         ::testing::Values(std::pair<std::int64_t, std::int64_t>{1, 1},
                                           std::pair<std::int64_t, std::int64_t>{7, 77},
                                           std::pair<std::int64_t, std::int64_t>{989, 768},
                                           std::pair<std::int64_t, std::int64_t>{65, 28}));

TEST(CudaRowwiseErrors, BadShapesThrowBeforeAnyLaunch) {
  DeviceView<const float, 2> a(nullptr, {3, 4}, {4, 1});
  DeviceView<float, 2> b(nullptr, {4, 3}, {3, 1});
  DeviceView<double, 1> rows(nullptr, {3}, {1});
  EXPECT_THROW(ops::l2_normalize_rows(cuda_backend{}, a, b), Error);
  EXPECT_THROW(ops::softmax_rows(cuda_backend{}, a, b), Error);
  EXPECT_THROW(ops::add_inplace(cuda_backend{}, a, b), Error);
  EXPECT_THROW(ops::mse_loss(cuda_backend{}, a, DeviceView<const float, 2>(b), rows), Error);
}

}  // namespace
}  // namespace qlip
