/// @file test_kernels.cu
/// @brief CUDA kernels vs the plain-loop reference (the same oracle the CPU backend is tested
///        against). Skips cleanly (GTEST_SKIP) on machines without a CUDA device.
#include <gtest/gtest.h>

#include <vector>

#include "common/compare.hpp"
#include "cuda_test_util.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/reference/activation.hpp"
#include "qlip/reference/bsq.hpp"
#include "qlip/reference/l2_norm.hpp"
#include "qlip/reference/layer_norm.hpp"

#include "bsq.cuh"
#include "common.cuh"
#include "elementwise.cuh"
#include "layer_norm.cuh"

namespace qlip {
namespace {

using test::download;
using test::random_matrix;
using test::upload;

class CudaKernels : public ::testing::TestWithParam<std::int64_t> {};

TEST_P(CudaKernels, ActivationsMatchReference) {
  QLIP_REQUIRE_GPU();
  const std::int64_t rows = GetParam(), cols = 77;
  auto x = random_matrix(rows, cols, 1, 3.0f);
  auto dx = upload(x);
  cuda::DeviceBuffer<float> dy(x.numel());
  ops::activation<Activation::gelu>(cuda_backend{}, dx.view<2>({rows, cols}), dy.view<2>({rows, cols}));
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  Tensor<float, 2> ref({rows, cols});
  reference::gelu(x.view(), ref.view());
  // erff on the device differs from glibc's erff by ≤ 2 ulp: kF32Op (1e-5) covers it.
  EXPECT_TRUE(test::all_close(download<float, 2>(dy, {rows, cols}).view(), ref.view(), test::kF32Op));
}

TEST_P(CudaKernels, LayerNormMatchesReference) {
  QLIP_REQUIRE_GPU();
  const std::int64_t rows = GetParam(), D = 768;
  auto x = random_matrix(rows, D, 2, 2.0f);
  auto g = random_matrix(1, D, 3), b = random_matrix(1, D, 4);
  auto dx = upload(x), dg = upload(g), db = upload(b);
  cuda::DeviceBuffer<float> dy(x.numel());
  ops::layer_norm(cuda_backend{}, dx.view<2>({rows, D}), dg.view<1>({D}), db.view<1>({D}), 1e-6f,
                  dy.view<2>({rows, D}));
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  Tensor<float, 2> ref({rows, D});
  reference::layer_norm(x.view(), g.view().select(0, 0), b.view().select(0, 0), 1e-6f, ref.view());
  EXPECT_TRUE(test::all_close(download<float, 2>(dy, {rows, D}).view(), ref.view(), test::kF32Op));
}

TEST_P(CudaKernels, BsqEncodeMatchesReference) {
  QLIP_REQUIRE_GPU();
  const std::int64_t rows = GetParam(), L = 28;
  auto h = random_matrix(rows, L, 5);
  auto dh = upload(h);
  cuda::DeviceBuffer<float> du(rows * L), dcodes(rows * L);
  cuda::DeviceBuffer<std::uint8_t> dbits(rows * L);
  cuda::DeviceBuffer<std::uint32_t> dindex(rows);
  const float scale = 1.0f / std::sqrt(28.0f);
  ops::bsq_encode(cuda_backend{}, dh.view<2>({rows, L}), du.view<2>({rows, L}), dbits.view<2>({rows, L}),
                  dcodes.view<2>({rows, L}), dindex.view<1>({rows}), scale);
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  Tensor<float, 2> u({rows, L}), codes({rows, L});
  Tensor<std::uint8_t, 2> bits({rows, L});
  Tensor<std::uint32_t, 1> index({rows});
  reference::l2_normalize_rows(h.view(), u.view(), 1e-12f);
  reference::bsq_quantize(u.view(), bits.view(), codes.view(), scale);
  reference::bits_to_index(bits.view(), index.view());
  EXPECT_TRUE(test::all_close(download<float, 2>(du, {rows, L}).view(), u.view(), test::kF32Op));
  EXPECT_TRUE(test::all_close(download<std::uint8_t, 2>(dbits, {rows, L}).view(), bits.view(), test::kExact));
  EXPECT_TRUE(test::all_close(download<float, 2>(dcodes, {rows, L}).view(), codes.view(), test::kExact));
  EXPECT_TRUE(test::all_close(download<std::uint32_t, 1>(dindex, {rows}).view(), index.view(), test::kExact));
}

INSTANTIATE_TEST_SUITE_P(OddRowCounts, CudaKernels, ::testing::Values(1, 7, 65, 989));

TEST(CudaErrors, ShapeMismatchThrowsBeforeLaunch) {
  // Host-side argument checks run without a device.
  DeviceView<const float, 2> x(nullptr, {2, 3}, {3, 1});
  DeviceView<float, 2> y(nullptr, {3, 2}, {2, 1});
  EXPECT_THROW(ops::activation<Activation::gelu>(cuda_backend{}, x, y), Error);
}

}  // namespace
}  // namespace qlip
