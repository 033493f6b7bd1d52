/// @file test_contrastive_loss_grad.cpp
/// @brief CLIP contrastive loss: the double reference against finite differences (whole batch,
///        B = 1, 3, 5, and local blocks of a larger batch), the CPU backend against the float
///        reference (strided views, accumulation into d_logit_scale, skipped gradients, the arena
///        size), the accuracies, clamp_logit_scale and the argument checks.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "common/loss_test_util.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/cpu/contrastive_loss.hpp"
#include "qlip/reference/contrastive_loss.hpp"

namespace qlip {
namespace {

using test::fill_normal;
using test::span_of;

/// Rows scaled to unit length (the loss's callers pass L2-normalised features).
void normalize_rows(Tensor<double, 2>& t) {
  for (std::int64_t i = 0; i < t.size(0); ++i) {
    double n = 0.0;
    for (std::int64_t j = 0; j < t.size(1); ++j) n += t(i, j) * t(i, j);
    for (std::int64_t j = 0; j < t.size(1); ++j) t(i, j) /= std::sqrt(n);
  }
}

struct Case {
  std::int64_t batch, dim;
  ContrastiveRows rows;
  double logit_scale;
};

TEST(ContrastiveLossGrad, ReferenceMatchesFiniteDifferences) {
  const Case cases[] = {{1, 4, {}, 2.6592},     {3, 4, {}, 2.6592},   {5, 3, {}, 1.3},
                        {5, 4, {1, 3}, 2.0},    {4, 6, {3, 1}, 0.5},  {6, 2, {0, 2}, 3.0}};
  std::uint64_t seed = 300;
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "B " << c.batch << " E " << c.dim << " rows [" << c.rows.offset << ", "
                                      << c.rows.count << ")");
    Tensor<double, 2> image({c.batch, c.dim}), text({c.batch, c.dim});
    fill_normal(image, ++seed);
    fill_normal(text, ++seed);
    normalize_rows(image);
    normalize_rows(text);
    Tensor<double, 1> ls({1}), dls({1});
    ls(0) = c.logit_scale;
    dls(0) = 0.375;  // a parameter gradient already holding a value: the backward adds to it
    const double dloss = 0.8;
    Tensor<double, 2> di({c.batch, c.dim}), dt({c.batch, c.dim});
    reference::contrastive_loss_backward<double>(image.view(), text.view(), ls.view(), dloss, di.view(), dt.view(),
                                                 dls.view(), c.rows);
    dls(0) -= 0.375;
    auto loss = [&] {
      return dloss * reference::contrastive_loss<double>(image.view(), text.view(), ls.view(), c.rows).loss;
    };
    EXPECT_TRUE(test::check_gradients(loss, {{"image", span_of(image), span_of(di)},
                                             {"text", span_of(text), span_of(dt)},
                                             {"logit_scale", span_of(ls), span_of(dls)}}));
  }
}

TEST(ContrastiveLossGrad, SingleRowBatchHasZeroLossAndGradients) {
  // One pair: each cross-entropy has one class, so L = 0 whatever the features and the scale.
  Tensor<double, 2> image({1, 3}), text({1, 3}), di({1, 3}), dt({1, 3});
  fill_normal(image, 1);
  fill_normal(text, 2);
  Tensor<double, 1> ls({1}), dls({1});
  ls(0) = 2.0;
  const ContrastiveLossResult r = reference::contrastive_loss<double>(image.view(), text.view(), ls.view());
  EXPECT_EQ(r.loss, 0.0);
  EXPECT_EQ(r.image_to_text_accuracy, 1.0);
  reference::contrastive_loss_backward<double>(image.view(), text.view(), ls.view(), 1.0, di.view(), dt.view(),
                                               dls.view());
  for (std::int64_t j = 0; j < 3; ++j) EXPECT_EQ(di(0, j), 0.0);
  EXPECT_EQ(dls(0), 0.0);
}

TEST(ContrastiveLossGrad, AccuracyCountsRowsWhoseOwnPairWins) {
  // Texts are the images permuted except row 0: image 0 ↔ text 0 match; image 1's best text is
  // text 2 (its own copy) and image 2's best is text 1, so image→text = text→image = 1/3.
  Tensor<float, 2> image({3, 3}), text({3, 3});
  const float rows[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) image(i, j) = rows[i][j];
  for (int j = 0; j < 3; ++j) {
    text(0, j) = rows[0][j];
    text(1, j) = rows[2][j];
    text(2, j) = rows[1][j];
  }
  Tensor<float, 1> ls({1});
  ls(0) = 2.6592f;
  const ContrastiveLossResult ref = reference::contrastive_loss(image.view(), text.view(), ls.view());
  EXPECT_DOUBLE_EQ(ref.image_to_text_accuracy, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(ref.text_to_image_accuracy, 1.0 / 3.0);
  Arena ws(contrastive_loss_workspace_bytes(3));
  const ContrastiveLossResult cpu = ops::contrastive_loss(cpu_backend{}, ws, image.view(), text.view(), ls.view());
  EXPECT_DOUBLE_EQ(cpu.image_to_text_accuracy, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(cpu.text_to_image_accuracy, 1.0 / 3.0);
  // text = image gives 1 both ways (the diagonal is the unique maximum of every row and column).
  const ContrastiveLossResult same = reference::contrastive_loss(image.view(), image.view(), ls.view());
  EXPECT_EQ(same.image_to_text_accuracy, 1.0);
  EXPECT_EQ(same.text_to_image_accuracy, 1.0);
}

TEST(ContrastiveLossGrad, CpuMatchesReferenceAndAccumulates) {
  const Case cases[] = {{3, 4, {}, 2.6592}, {17, 32, {}, 2.6592}, {64, 48, {}, 4.0}, {40, 16, {8, 16}, 2.6592}};
  std::uint64_t seed = 400;
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "B " << c.batch << " E " << c.dim << " rows [" << c.rows.offset << ", "
                                      << c.rows.count << ")");
    Tensor<double, 2> imaged({c.batch, c.dim}), textd({c.batch, c.dim});
    fill_normal(imaged, ++seed);
    fill_normal(textd, ++seed);
    normalize_rows(imaged);
    normalize_rows(textd);
    const Tensor<float, 2> image = test::to_float(imaged), text = test::to_float(textd);
    Tensor<float, 1> ls({1}), dls_ref({1}), dls({1});
    ls(0) = static_cast<float>(c.logit_scale);
    dls_ref(0) = dls(0) = -0.25f;
    const double dloss = 1.7;

    const std::int64_t b = c.rows.count < 0 ? c.batch : c.rows.count;
    Arena ws(contrastive_loss_workspace_bytes(b, c.batch));
    const ContrastiveLossResult ref = reference::contrastive_loss(image.view(), text.view(), ls.view(), c.rows);
    const ContrastiveLossResult cpu =
        ops::contrastive_loss(cpu_backend{}, ws, image.view(), text.view(), ls.view(), c.rows);
    EXPECT_TRUE(test::scalar_close(cpu.loss, ref.loss, test::kF32Reduction));
    EXPECT_EQ(cpu.image_to_text_accuracy, ref.image_to_text_accuracy);
    EXPECT_EQ(cpu.text_to_image_accuracy, ref.text_to_image_accuracy);
    EXPECT_EQ(ws.used(), 0u);  // the arena is rewound

    Tensor<float, 2> di_ref({c.batch, c.dim}), dt_ref({c.batch, c.dim}), di({c.batch, c.dim}), dt({c.batch, c.dim});
    reference::contrastive_loss_backward<float>(image.view(), text.view(), ls.view(), dloss, di_ref.view(),
                                                dt_ref.view(), dls_ref.view(), c.rows);
    ops::contrastive_loss_backward(cpu_backend{}, ws, image.view(), text.view(), ls.view(), dloss, di.view(), dt.view(),
                                   dls.view(), c.rows);
    EXPECT_TRUE(test::all_close(test::as_const_view(di), test::as_const_view(di_ref), test::kF32Reduction));
    EXPECT_TRUE(test::all_close(test::as_const_view(dt), test::as_const_view(dt_ref), test::kF32Reduction));
    EXPECT_TRUE(test::all_close(test::as_const_view(dls), test::as_const_view(dls_ref), test::kF32Reduction));
    EXPECT_LE(ws.peak(), contrastive_loss_workspace_bytes(b, c.batch));
  }
}

TEST(ContrastiveLossGrad, CpuTakesStridedViewsAndSkipsEmptyGradients) {
  // image stored transposed, text with padded rows, d_text padded; d_image and d_logit_scale not wanted.
  const std::int64_t n = 9, e = 7;
  Tensor<double, 2> imaged({n, e}), textd({n, e});
  fill_normal(imaged, 11);
  fill_normal(textd, 12);
  normalize_rows(imaged);
  normalize_rows(textd);
  const Tensor<float, 2> image_c = test::to_float(imaged), text_c = test::to_float(textd);
  Tensor<float, 2> image_store, text_store, dt_store;
  const HostView<float, 2> image = test::transposed_view(image_store, n, e), text = test::padded_view(text_store, n, e, 3);
  test::copy_into(image_c, image);
  test::copy_into(text_c, text);
  const HostView<float, 2> dt = test::padded_view(dt_store, n, e, 2);
  for (std::int64_t i = 0; i < dt_store.numel(); ++i) dt_store.data()[i] = 123.0f;  // sentinels in the padding
  Tensor<float, 1> ls({1});
  ls(0) = 2.6592f;
  Tensor<float, 2> di_ref({n, e}), dt_ref({n, e});
  Tensor<float, 1> dls_ref({1});
  reference::contrastive_loss_backward<float>(image_c.view(), text_c.view(), ls.view(), 1.0, di_ref.view(),
                                              dt_ref.view(), dls_ref.view());
  Arena ws(contrastive_loss_workspace_bytes(n));
  const ContrastiveLossResult ref = reference::contrastive_loss(image_c.view(), text_c.view(), ls.view());
  EXPECT_TRUE(test::scalar_close(ops::contrastive_loss(cpu_backend{}, ws, image, text, ls.view()).loss, ref.loss,
                                 test::kF32Reduction));
  ops::contrastive_loss_backward(cpu_backend{}, ws, image, text, ls.view(), 1.0, HostView<float, 2>(), dt,
                                 HostView<float, 1>());
  EXPECT_TRUE(test::all_close(HostView<const float, 2>(dt), test::as_const_view(dt_ref), test::kF32Reduction));
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = e; j < e + 2; ++j) EXPECT_EQ(dt_store(i, j), 123.0f) << "padding written at " << i;
}

TEST(ContrastiveLossGrad, ArenaTooSmallThrows) {
  Tensor<float, 2> image({4, 3}), text({4, 3});
  Tensor<float, 1> ls({1});
  Arena ws(contrastive_loss_workspace_bytes(4) - 64);
  test::expect_error_naming([&] { ops::contrastive_loss(cpu_backend{}, ws, image.view(), text.view(), ls.view()); },
                            "workspace arena exhausted");
}

TEST(ContrastiveLossGrad, ClampLogitScaleIsOpenClipsRange) {
  EXPECT_EQ(clamp_logit_scale(-0.5), 0.0);
  EXPECT_EQ(clamp_logit_scale(2.6592), 2.6592);
  EXPECT_DOUBLE_EQ(clamp_logit_scale(7.0), std::log(100.0));
  EXPECT_FLOAT_EQ(clamp_logit_scale(7.0f), static_cast<float>(std::log(100.0)));
}

TEST(ContrastiveLossGrad, ArgumentErrorsNameTheArgument) {
  Tensor<float, 2> image({4, 3}), text({4, 3}), bad_text({4, 2}), di({4, 3}), bad_di({3, 3}), dt({4, 3});
  Tensor<float, 1> ls({1}), bad_ls({2}), dls({1}), bad_dls({2});
  Tensor<float, 2> empty({0, 3});
  Arena ws(1 << 16);
  const cpu_backend cpu{};
  test::expect_error_naming([&] { ops::contrastive_loss(cpu, ws, image.view(), bad_text.view(), ls.view()); },
                            "contrastive_loss: text features");
  test::expect_error_naming([&] { ops::contrastive_loss(cpu, ws, image.view(), text.view(), bad_ls.view()); },
                            "contrastive_loss: logit_scale");
  test::expect_error_naming([&] { ops::contrastive_loss(cpu, ws, empty.view(), empty.view(), ls.view()); },
                            "contrastive_loss: image features are empty");
  test::expect_error_naming(
      [&] { ops::contrastive_loss(cpu, ws, image.view(), text.view(), ls.view(), ContrastiveRows{3, 2}); },
      "contrastive_loss: local rows [3, 5)");
  test::expect_error_naming(
      [&] { ops::contrastive_loss(cpu, ws, image.view(), text.view(), ls.view(), ContrastiveRows{4, -1}); },
      "contrastive_loss: local rows");
  test::expect_error_naming(
      [&] {
        ops::contrastive_loss_backward(cpu, ws, image.view(), text.view(), ls.view(), 1.0, bad_di.view(), dt.view(),
                                       dls.view());
      },
      "contrastive_loss_backward: d_image");
  test::expect_error_naming(
      [&] {
        ops::contrastive_loss_backward(cpu, ws, image.view(), text.view(), ls.view(), 1.0, di.view(), dt.view(),
                                       bad_dls.view());
      },
      "contrastive_loss_backward: d_logit_scale");
  test::expect_error_naming(
      [&] {
        reference::contrastive_loss_backward<float>(image.view(), bad_text.view(), ls.view(), 1.0, di.view(),
                                                    dt.view(), dls.view());
      },
      "contrastive_loss_backward: text features");
}

}  // namespace
}  // namespace qlip
