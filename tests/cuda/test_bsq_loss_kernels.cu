/// @file test_bsq_loss_kernels.cu
/// @brief The BSQ training kernels of the CUDA backend (kernels/bsq_loss.cuh) vs the plain-loop
///        reference: the straight-through quantiser both ways, loss_q's components and its
///        backward in "group" and "analytical" modes, with and without the straight-through
///        gradient. GPU tests skip without a device; the argument checks run everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "common/compare.hpp"
#include "cuda_test_util.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/reference/bsq_loss.hpp"
#include "qlip/reference/l2_norm.hpp"

#include "bsq_loss.cuh"
#include "common.cuh"

namespace qlip {
namespace {

using test::download;
using test::random_matrix;
using test::upload;

constexpr std::int64_t kN = 37, kL = 28;

/// Unit rows, as the quantiser sees them (u = h/‖h‖).
Tensor<float, 2> unit_rows(std::uint64_t seed) {
  const Tensor<float, 2> h = random_matrix(kN, kL, seed);
  Tensor<float, 2> u({kN, kL});
  reference::l2_normalize_rows(h.view(), u.view(), 1e-12f);
  return u;
}

void expect_near_rel(double got, double want, const char* what) {
  const test::Tolerance tol = test::kF32Reduction;
  EXPECT_NEAR(got, want, tol.atol + tol.rtol * std::abs(want)) << what;
}

class CudaBsqLoss : public ::testing::TestWithParam<BsqLossConfig> {};

TEST_P(CudaBsqLoss, LossAndBackwardMatchReference) {
  QLIP_REQUIRE_GPU();
  const BsqLossConfig cfg = GetParam();
  const Tensor<float, 2> z = unit_rows(1), dzq = random_matrix(kN, kL, 2);
  auto d_z = upload(z), d_dzq = upload(dzq);
  cuda::DeviceBuffer<float> d_dz(kN * kL), d_dz_alone(kN * kL);
  const cuda::BsqLossWorkspace ws(kN, kL, cfg);
  const DeviceView<const float, 2> zv = d_z.view<2>({kN, kL});
  const BsqLossResult got = ops::bsq_loss(cuda_backend{}, zv, cfg, ws);
  ops::bsq_loss_backward(cuda_backend{}, zv, cfg, 0.3, d_dzq.view<2>({kN, kL}), d_dz.view<2>({kN, kL}), ws);
  ops::bsq_loss_backward(cuda_backend{}, zv, cfg, 0.3, {}, d_dz_alone.view<2>({kN, kL}), ws);
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  const BsqLossResult want = reference::bsq_loss(z.view(), cfg);
  // Both in double, sums in another order: well inside kF32Reduction.
  expect_near_rel(got.loss, want.loss, "loss");
  expect_near_rel(got.commitment, want.commitment, "commitment");
  expect_near_rel(got.per_sample_entropy, want.per_sample_entropy, "per_sample_entropy");
  expect_near_rel(got.codebook_entropy, want.codebook_entropy, "codebook_entropy");
  Tensor<float, 2> dz({kN, kL}), dz_alone({kN, kL});
  reference::bsq_loss_backward(z.view(), cfg, 0.3, dzq.view(), dz.view());
  reference::bsq_loss_backward(z.view(), cfg, 0.3, HostView<const float, 2>(), dz_alone.view());
  // Double inside, rounded to float once: kF32Op.
  EXPECT_TRUE(test::all_close(download<float, 2>(d_dz, {kN, kL}).view(), dz.view(), test::kF32Op));
  EXPECT_TRUE(test::all_close(download<float, 2>(d_dz_alone, {kN, kL}).view(), dz_alone.view(), test::kF32Op));
}

INSTANTIATE_TEST_SUITE_P(
    Modes, CudaBsqLoss,
    ::testing::Values(BsqLossConfig{.inv_temperature = 100.0, .group_size = 4, .beta = 0.25},
                      BsqLossConfig{.inv_temperature = 1.0, .group_size = 14, .gamma1 = 0.5},
                      BsqLossConfig{
                          .inv_temperature = 100.0, .group_size = 7, .beta = 0.1, .mode = BsqEntropyMode::analytical}));

TEST(CudaBsqStraightThrough, ForwardAndBackwardMatchReference) {
  QLIP_REQUIRE_GPU();
  Tensor<float, 2> z = random_matrix(kN, kL, 3);
  z(0, 0) = 0.0f;  // z == 0 quantises to −q_scale
  auto d_z = upload(z);
  cuda::DeviceBuffer<float> d_out(kN * kL), d_back(kN * kL);
  const float q_scale = 1.0f / std::sqrt(static_cast<float>(kL));
  ops::bsq_straight_through(cuda_backend{}, d_z.view<2>({kN, kL}), q_scale, d_out.view<2>({kN, kL}));
  ops::bsq_straight_through_backward(cuda_backend{}, d_z.view<2>({kN, kL}), q_scale, d_back.view<2>({kN, kL}));
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  Tensor<float, 2> out({kN, kL}), back({kN, kL});
  reference::bsq_straight_through(HostView<const float, 2>(z.view()), q_scale, out.view());
  reference::bsq_straight_through_backward(HostView<const float, 2>(z.view()), q_scale, back.view());
  EXPECT_TRUE(test::all_close(download<float, 2>(d_out, {kN, kL}).view(), out.view(), test::kExact));
  EXPECT_TRUE(test::all_close(download<float, 2>(d_back, {kN, kL}).view(), back.view(), test::kExact));
}

TEST(CudaBsqLossErrors, BadConfigThrowsBeforeAnyLaunch) {
  DeviceView<const float, 2> z(nullptr, {kN, kL}, {kL, 1});
  const cuda::BsqLossWorkspace empty;
  EXPECT_THROW(ops::bsq_loss(cuda_backend{}, z, BsqLossConfig{.group_size = 5}, empty), Error);  // 5 ∤ 28
  EXPECT_THROW(ops::bsq_loss(cuda_backend{}, z, BsqLossConfig{.inv_temperature = 0.0, .group_size = 4}, empty), Error);
  // A workspace sized for another configuration is refused, before any launch.
  EXPECT_THROW(ops::bsq_loss(cuda_backend{}, z, BsqLossConfig{.group_size = 4}, empty), Error);
}

}  // namespace
}  // namespace qlip
