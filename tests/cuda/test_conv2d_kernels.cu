/// @file test_conv2d_kernels.cu
/// @brief The CUDA convolution (im2col + cuBLASLt) and 2×2 max pooling (kernels/conv2d.cuh) vs the
///        plain-loop reference: 3×3 same-padding, strided 4×4 and 1×1 kernels with bias, every
///        gradient (dw, db pre-filled: accumulated), odd image sizes for the pooling. GPU tests skip
///        without a device; the argument checks run everywhere.
#include <gtest/gtest.h>

#include <cstdint>

#include "common/compare.hpp"
#include "cuda_test_util.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/reference/conv2d.hpp"

#include "common.cuh"
#include "conv2d.cuh"

namespace qlip {
namespace {

using test::download;
using test::random_tensor;
using test::upload;

struct ConvCase {
  std::int64_t b, ci, h, w, co, k;
  Conv2dGeometry g;
};

class CudaConv2d : public ::testing::TestWithParam<ConvCase> {};

TEST_P(CudaConv2d, ForwardAndBackwardMatchReference) {
  QLIP_REQUIRE_GPU();
  const ConvCase c = GetParam();
  const Extents<4> xs{c.b, c.ci, c.h, c.w}, ws{c.co, c.ci, c.k, c.k};
  const Extents<4> ys{c.b, c.co, detail::conv_output_extent(c.h, c.k, c.g), detail::conv_output_extent(c.w, c.k, c.g)};
  const Tensor<float, 4> x = random_tensor<4>(xs, 1), w = random_tensor<4>(ws, 2, 0.2f), dy = random_tensor<4>(ys, 3);
  Tensor<float, 4> dw = random_tensor<4>(ws, 4);  // pre-filled: accumulated
  Tensor<float, 1> bias({c.co}), db({c.co});
  for (std::int64_t o = 0; o < c.co; ++o) {
    bias(o) = 0.1f * static_cast<float>(o);
    db(o) = -0.5f;
  }
  auto d_x = upload(x), d_w = upload(w), d_dy = upload(dy), d_dw = upload(dw), d_bias = upload(bias), d_db = upload(db);
  cuda::DeviceBuffer<float> d_y(ys[0] * ys[1] * ys[2] * ys[3]), d_dx(x.numel()),
      d_ws(cuda::conv2d_workspace_elements(xs, ws, c.g));
  const cuda::BlasLt lt;
  ops::conv2d(cuda_backend{}, lt, d_x.view<4>(xs), d_w.view<4>(ws), d_bias.view<1>({c.co}), d_y.view<4>(ys), c.g,
              d_ws.view<1>({d_ws.size()}));
  ops::conv2d_backward(cuda_backend{}, lt, d_x.view<4>(xs), d_w.view<4>(ws), d_dy.view<4>(ys), d_dx.view<4>(xs),
                       d_dw.view<4>(ws), d_db.view<1>({c.co}), c.g, d_ws.view<1>({d_ws.size()}));
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  Tensor<float, 4> y(ys), dx(xs);
  reference::conv2d<float>(x.view(), w.view(), bias.view(), y.view(), c.g);
  reference::conv2d_backward<float>(x.view(), w.view(), dy.view(), dx.view(), dw.view(), db.view(), c.g);
  // Sums over Ci·k·k (forward, dx) and B·Ho·Wo (dw, db) in float: kF32Reduction.
  EXPECT_TRUE(test::all_close(download<float, 4>(d_y, ys).view(), y.view(), test::kF32Reduction)) << "y";
  EXPECT_TRUE(test::all_close(download<float, 4>(d_dx, xs).view(), dx.view(), test::kF32Reduction)) << "dx";
  EXPECT_TRUE(test::all_close(download<float, 4>(d_dw, ws).view(), dw.view(), test::kF32Reduction)) << "dw";
  EXPECT_TRUE(test::all_close(download<float, 1>(d_db, {c.co}).view(), db.view(), test::kF32Reduction)) << "db";
}

INSTANTIATE_TEST_SUITE_P(Layers, CudaConv2d,
                         ::testing::Values(ConvCase{2, 3, 17, 15, 8, 3, {.stride = 1, .pad = 1}},  // VGG 3×3
                                           ConvCase{2, 4, 16, 16, 6, 4, {.stride = 2, .pad = 1}},  // downsampling
                                           ConvCase{1, 5, 9, 7, 3, 1, {.stride = 1, .pad = 0}}));  // 1×1 head

TEST(CudaMaxPool, ForwardAndBackwardMatchReferenceOnOddSizes) {
  QLIP_REQUIRE_GPU();
  const Extents<4> xs{2, 3, 9, 8}, ys{2, 3, 4, 4};
  Tensor<float, 4> x = random_tensor<4>(xs, 5);
  x(0, 0, 0, 0) = x(0, 0, 0, 1) = 5.0f;  // a tie: the first maximum takes the gradient
  const Tensor<float, 4> dy = random_tensor<4>(ys, 6);
  auto d_x = upload(x), d_dy = upload(dy);
  cuda::DeviceBuffer<float> d_y(2 * 3 * 4 * 4), d_dx(x.numel());
  ops::max_pool2x2(cuda_backend{}, d_x.view<4>(xs), d_y.view<4>(ys));
  ops::max_pool2x2_backward(cuda_backend{}, d_x.view<4>(xs), d_dy.view<4>(ys), d_dx.view<4>(xs));
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  Tensor<float, 4> y(ys), dx(xs);
  reference::max_pool2x2<float>(x.view(), y.view());
  reference::max_pool2x2_backward<float>(x.view(), dy.view(), dx.view());
  EXPECT_TRUE(test::all_close(download<float, 4>(d_y, ys).view(), y.view(), test::kExact));
  EXPECT_TRUE(test::all_close(download<float, 4>(d_dx, xs).view(), dx.view(), test::kExact));
}

TEST(CudaMaxPoolErrors, BadShapesThrowBeforeAnyLaunch) {
  DeviceView<const float, 4> x(nullptr, {1, 3, 8, 8}, {192, 64, 8, 1}), tiny(nullptr, {1, 3, 1, 8}, {24, 8, 8, 1});
  DeviceView<float, 4> y(nullptr, {1, 4, 8, 8}, {256, 64, 8, 1}), y_tiny(nullptr, {1, 3, 0, 4}, {0, 0, 4, 1});
  EXPECT_THROW(ops::max_pool2x2(cuda_backend{}, x, y), Error);          // the output must be [1, 3, 4, 4]
  EXPECT_THROW(ops::max_pool2x2(cuda_backend{}, tiny, y_tiny), Error);  // smaller than the window
}

}  // namespace
}  // namespace qlip
