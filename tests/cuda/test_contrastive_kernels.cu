/// @file test_contrastive_kernels.cu
/// @brief The CLIP contrastive loss of the CUDA backend (kernels/contrastive_loss.cuh) vs the
///        plain-loop reference: the whole batch and a local block of a gathered batch, loss,
///        accuracies and every gradient. GPU tests skip without a device; the argument checks run
///        everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "common/compare.hpp"
#include "cuda_test_util.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/reference/contrastive_loss.hpp"
#include "qlip/reference/l2_norm.hpp"

#include "common.cuh"
#include "contrastive_loss.cuh"

namespace qlip {
namespace {

using test::download;
using test::random_matrix;
using test::upload;

constexpr std::int64_t kB = 300, kE = 64;

Tensor<float, 2> unit_rows(const Tensor<float, 2>& h) {
  Tensor<float, 2> u(h.shape());
  reference::l2_normalize_rows(h.view(), u.view(), 1e-12f);
  return u;
}

class CudaContrastive : public ::testing::TestWithParam<ContrastiveRows> {};

TEST_P(CudaContrastive, LossAccuracyAndGradientsMatchReference) {
  QLIP_REQUIRE_GPU();
  const ContrastiveRows rows = GetParam();
  // Text features near their images, so the accuracies are neither 0 nor 1.
  const Tensor<float, 2> image = unit_rows(random_matrix(kB, kE, 1));
  Tensor<float, 2> text_raw = random_matrix(kB, kE, 2, 0.8f);
  for (std::int64_t i = 0; i < text_raw.numel(); ++i) text_raw.data()[i] += image.data()[i];
  const Tensor<float, 2> text = unit_rows(text_raw);
  Tensor<float, 1> scale({1}), d_scale({1});
  scale(0) = std::log(20.0f);
  d_scale(0) = 0.25f;  // accumulated into
  auto d_img = upload(image), d_txt = upload(text), d_ls = upload(scale), d_dls = upload(d_scale);
  cuda::DeviceBuffer<float> d_dimg(kB * kE), d_dtxt(kB * kE);
  const cuda::BlasLt lt;
  const cuda::ContrastiveWorkspace ws(kB);
  const DeviceView<const float, 2> iv = d_img.view<2>({kB, kE}), tv = d_txt.view<2>({kB, kE});
  const DeviceView<const float, 1> lv = d_ls.view<1>({1});
  const ContrastiveLossResult got = ops::contrastive_loss(cuda_backend{}, lt, iv, tv, lv, rows, ws);
  ops::contrastive_loss_backward(cuda_backend{}, lt, iv, tv, lv, 0.5, d_dimg.view<2>({kB, kE}),
                                 d_dtxt.view<2>({kB, kE}), d_dls.view<1>({1}), rows, ws);
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  const ContrastiveLossResult want = reference::contrastive_loss(image.view(), text.view(), scale.view(), rows);
  Tensor<float, 2> dimg({kB, kE}), dtxt({kB, kE});
  Tensor<float, 1> dls({1});
  dls(0) = 0.25f;
  reference::contrastive_loss_backward<float>(image.view(), text.view(), scale.view(), 0.5, dimg.view(), dtxt.view(),
                                              dls.view(), rows);
  // Similarities in float (cuBLASLt) and sums over B = 300 terms: kF32Reduction.
  const test::Tolerance tol = test::kF32Reduction;
  EXPECT_NEAR(got.loss, want.loss, tol.atol + tol.rtol * std::abs(want.loss));
  EXPECT_DOUBLE_EQ(got.image_to_text_accuracy, want.image_to_text_accuracy);
  EXPECT_DOUBLE_EQ(got.text_to_image_accuracy, want.text_to_image_accuracy);
  EXPECT_TRUE(test::all_close(download<float, 2>(d_dimg, {kB, kE}).view(), dimg.view(), tol)) << "d_image";
  EXPECT_TRUE(test::all_close(download<float, 2>(d_dtxt, {kB, kE}).view(), dtxt.view(), tol)) << "d_text";
  EXPECT_TRUE(test::all_close(download<float, 1>(d_dls, {1}).view(), dls.view(), tol)) << "d_logit_scale";
}

INSTANTIATE_TEST_SUITE_P(Blocks, CudaContrastive,
                         ::testing::Values(ContrastiveRows{}, ContrastiveRows{.offset = 100, .count = 75}));

TEST(CudaContrastiveErrors, BadLocalRowsThrowBeforeAnyLaunch) {
  QLIP_REQUIRE_GPU();  // a BlasLt needs a device
  const cuda::BlasLt lt;
  const cuda::ContrastiveWorkspace empty;
  DeviceView<const float, 2> f(nullptr, {8, 4}, {4, 1});
  DeviceView<const float, 1> ls(nullptr, {1}, {1});
  EXPECT_THROW(ops::contrastive_loss(cuda_backend{}, lt, f, f, ls, {.offset = 6, .count = 3}, empty), Error);
  EXPECT_THROW(ops::contrastive_loss(cuda_backend{}, lt, f, f, ls, {}, empty), Error);  // workspace for B = 0
}

}  // namespace
}  // namespace qlip
