/// @file test_norm_grad.cpp
/// @brief LayerNorm, RMSNorm and row L2 normalisation backwards: the double references against
///        finite differences, the CPU backend against the float references (strided layouts,
///        accumulation into non-zero parameter gradients, skipped gradients, dx in place of dy), the
///        training forwards against the inference forwards (bit for bit on the CPU), the clamped
///        branch of the L2 normalisation, and the argument checks.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "common/norms_grad_util.hpp"
#include "cpu/guarded.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/cpu/l2_norm.hpp"
#include "qlip/cpu/layer_norm.hpp"
#include "qlip/cpu/rms_norm.hpp"
#include "qlip/reference/l2_norm.hpp"
#include "qlip/reference/layer_norm.hpp"
#include "qlip/reference/rms_norm.hpp"

namespace qlip {
namespace {

using test::fill_normal;
using test::Guarded;
using test::kAllLayouts;
using test::Layout;
using test::span_of;

constexpr float kSentinel = -4321.25f;

struct Shape {
  std::int64_t m, d;
};
/// Finite-difference shapes: size-1 rows and columns, odd widths.
constexpr Shape kGradShapes[] = {{1, 1}, {1, 6}, {4, 1}, {3, 7}, {5, 4}};
/// CPU-vs-reference shapes: partial 64-column blocks (70, 129), and 300 × 64 (parallel paths).
constexpr Shape kCpuShapes[] = {{1, 1}, {3, 5}, {33, 70}, {7, 129}, {300, 64}};

// ---------------------------------------------------------------------------------------------
// LayerNorm

TEST(LayerNormGrad, ReferenceMatchesFiniteDifferences) {
  std::uint64_t seed = 300;
  const float eps = 1e-5f;
  for (const Shape& s : kGradShapes) {
    SCOPED_TRACE(::testing::Message() << s.m << "x" << s.d);
    Tensor<double, 2> x({s.m, s.d}), dy({s.m, s.d}), y({s.m, s.d}), dx({s.m, s.d});
    Tensor<double, 1> gamma({s.d}), beta({s.d}), mean({s.m}), rstd({s.m}), dgamma({s.d}), dbeta({s.d});
    fill_normal(x, ++seed, 1.5, 0.7);  // non-zero row means
    fill_normal(gamma, ++seed, 0.5, 1.0);
    fill_normal(beta, ++seed);
    fill_normal(dy, ++seed);
    reference::layer_norm_train<double>(x.view(), gamma.view(), beta.view(), eps, y.view(), mean.view(), rstd.view());
    reference::layer_norm_backward<double>(x.view(), gamma.view(), mean.view(), rstd.view(), dy.view(), dx.view(),
                                           dgamma.view(), dbeta.view());
    auto loss = [&] {
      reference::layer_norm<double>(x.view(), gamma.view(), beta.view(), eps, y.view());
      return test::weighted_sum(dy, y);
    };
    EXPECT_TRUE(test::check_gradients(loss, {{"x", span_of(x), span_of(dx)},
                                             {"gamma", span_of(gamma), span_of(dgamma)},
                                             {"beta", span_of(beta), span_of(dbeta)}}));
  }
}

TEST(LayerNormGrad, TrainForwardEqualsInferenceBitForBit) {
  std::uint64_t seed = 310;
  const float eps = 1e-6f;
  for (const Shape& s : kCpuShapes) {
    for (Layout lin : kAllLayouts) {
      SCOPED_TRACE(::testing::Message() << s.m << "x" << s.d << " " << test::layout_name(lin));
      Tensor<double, 2> xd({s.m, s.d});
      Tensor<double, 1> gd({s.d}), bd({s.d});
      fill_normal(xd, ++seed, 2.0, 3.0);
      fill_normal(gd, ++seed, 0.5, 1.0);
      fill_normal(bd, ++seed);
      Guarded<float, 2> x({s.m, s.d}, lin, kSentinel), y_train({s.m, s.d}, lin, kSentinel);
      test::fill_from(x, xd);
      test::StridedVector gamma(gd), beta(bd);
      Tensor<float, 2> y_inf({s.m, s.d}), y_ref({s.m, s.d}), y_ref_train({s.m, s.d});
      Tensor<float, 1> mean({s.m}), rstd({s.m}), mean_ref({s.m}), rstd_ref({s.m});
      ops::layer_norm(cpu_backend{}, x.cview(), gamma.cview(), beta.cview(), eps, y_inf.view());
      ops::layer_norm_train(cpu_backend{}, x.cview(), gamma.cview(), beta.cview(), eps, y_train.view(), mean.view(),
                            rstd.view());
      EXPECT_TRUE(test::bitwise_equal(y_train.cview(), y_inf.view()));
      EXPECT_TRUE(y_train.guards_intact());
      // The saved statistics are the reference's, and the reference's two forwards agree exactly too.
      reference::layer_norm(x.cview(), gamma.cview(), beta.cview(), eps, y_ref.view());
      reference::layer_norm_train<float>(x.cview(), gamma.cview(), beta.cview(), eps, y_ref_train.view(),
                                         mean_ref.view(), rstd_ref.view());
      EXPECT_TRUE(test::bitwise_equal(y_ref_train.view(), y_ref.view()));
      EXPECT_TRUE(test::all_close(mean.view(), mean_ref.view(), test::kF32Op));
      EXPECT_TRUE(test::all_close(rstd.view(), rstd_ref.view(), test::kF32Op));
    }
  }
}

TEST(LayerNormGrad, CpuMatchesReferenceAndAccumulates) {
  std::uint64_t seed = 320;
  const float eps = 1e-5f;
  for (const Shape& s : kCpuShapes) {
    for (Layout layout : kAllLayouts) {
      SCOPED_TRACE(::testing::Message() << s.m << "x" << s.d << " " << test::layout_name(layout));
      Tensor<double, 2> xd({s.m, s.d}), dyd({s.m, s.d});
      Tensor<double, 1> gd({s.d}), bd({s.d}), dg0({s.d}), db0({s.d});
      fill_normal(xd, ++seed, 1.5, 0.5);
      fill_normal(dyd, ++seed);
      fill_normal(gd, ++seed, 0.5, 1.0);
      fill_normal(bd, ++seed);
      fill_normal(dg0, ++seed);  // gradients already holding a value: backward must add to it
      fill_normal(db0, ++seed);
      Guarded<float, 2> x({s.m, s.d}, layout, kSentinel), dy({s.m, s.d}, layout, kSentinel),
          dx({s.m, s.d}, layout, kSentinel);
      test::fill_from(x, xd);
      test::fill_from(dy, dyd);
      test::StridedVector gamma(gd), beta(bd), dgamma(dg0), dbeta(db0);
      Tensor<float, 2> y({s.m, s.d}), dx_ref({s.m, s.d});
      Tensor<float, 1> mean({s.m}), rstd({s.m});
      Tensor<float, 1> dgamma_ref = test::to_float(dg0), dbeta_ref = test::to_float(db0);
      ops::layer_norm_train(cpu_backend{}, x.cview(), gamma.cview(), beta.cview(), eps, y.view(), mean.view(),
                            rstd.view());
      // Both backwards consume the same saved statistics.
      reference::layer_norm_backward<float>(x.cview(), gamma.cview(), mean.view(), rstd.view(), dy.cview(),
                                            dx_ref.view(), dgamma_ref.view(), dbeta_ref.view());
      ops::layer_norm_backward(cpu_backend{}, x.cview(), gamma.cview(), mean.view(), rstd.view(), dy.cview(), dx.view(),
                               dgamma.view(), dbeta.view());
      EXPECT_TRUE(test::all_close(dx.cview(), dx_ref.view(), test::kF32Reduction));
      EXPECT_TRUE(test::all_close(dgamma.cview(), dgamma_ref.view(), test::kF32Reduction));
      EXPECT_TRUE(test::all_close(dbeta.cview(), dbeta_ref.view(), test::kF32Reduction));
      EXPECT_TRUE(dx.guards_intact());
      EXPECT_TRUE(dgamma.gaps_intact());
      EXPECT_TRUE(dbeta.gaps_intact());
    }
  }
}

TEST(LayerNormGrad, CpuSkipsEmptyGradientsAndWritesDxOverDy) {
  const std::int64_t m = 9, d = 70;
  Tensor<double, 2> xd({m, d}), dyd({m, d});
  Tensor<double, 1> gd({d}), bd({d});
  fill_normal(xd, 1);
  fill_normal(dyd, 2);
  fill_normal(gd, 3, 0.5, 1.0);
  fill_normal(bd, 4);
  const Tensor<float, 2> x = test::to_float(xd), dy = test::to_float(dyd);
  const Tensor<float, 1> gamma = test::to_float(gd), beta = test::to_float(bd);
  Tensor<float, 2> y({m, d}), dx_ref({m, d});
  Tensor<float, 1> mean({m}), rstd({m}), dbeta({d}), dbeta_ref({d}), dgamma({d}), dgamma_ref({d});
  ops::layer_norm_train(cpu_backend{}, x.view(), gamma.view(), beta.view(), 1e-5f, y.view(), mean.view(), rstd.view());
  reference::layer_norm_backward<float>(x.view(), gamma.view(), mean.view(), rstd.view(), dy.view(), dx_ref.view(),
                                        dgamma_ref.view(), dbeta_ref.view());
  // dx written over dy (same view), dgamma not wanted (a frozen scale).
  Tensor<float, 2> g = test::to_float(dyd);
  ops::layer_norm_backward(cpu_backend{}, x.view(), gamma.view(), mean.view(), rstd.view(), g.view(), g.view(),
                           HostView<float, 1>(), dbeta.view());
  EXPECT_TRUE(test::all_close(g.view(), dx_ref.view(), test::kF32Reduction));
  EXPECT_TRUE(test::all_close(dbeta.view(), dbeta_ref.view(), test::kF32Reduction));
  // Parameters only (a frozen input): dgamma alone.
  ops::layer_norm_backward(cpu_backend{}, x.view(), gamma.view(), mean.view(), rstd.view(), dy.view(),
                           HostView<float, 2>(), dgamma.view(), HostView<float, 1>());
  EXPECT_TRUE(test::all_close(dgamma.view(), dgamma_ref.view(), test::kF32Reduction));
}

TEST(LayerNormGrad, ArgumentErrorsNameTheArgument) {
  Tensor<float, 2> x({3, 4}), y({3, 4}), dy({3, 4}), dx({3, 4}), bad({4, 3});
  Tensor<float, 1> g({4}), b({4}), mean({3}), rstd({3}), dg({4}), db({4}), bad3({3}), bad4({4});
  auto backward = [&](HostView<const float, 1> mu, HostView<float, 2> dxv, HostView<float, 1> dgv, HostView<float, 1> dbv,
                      HostView<const float, 2> dyv) {
    ops::layer_norm_backward(cpu_backend{}, x.view(), g.view(), mu, rstd.view(), dyv, dxv, dgv, dbv);
  };
  test::expect_error_naming([&] { backward(bad4.view(), dx.view(), dg.view(), db.view(), dy.view()); },
                            "layer_norm_backward: mean");
  test::expect_error_naming([&] { backward(mean.view(), bad.view(), dg.view(), db.view(), dy.view()); },
                            "layer_norm_backward: dx");
  test::expect_error_naming([&] { backward(mean.view(), dx.view(), bad3.view(), db.view(), dy.view()); },
                            "layer_norm_backward: dgamma");
  test::expect_error_naming([&] { backward(mean.view(), dx.view(), dg.view(), bad3.view(), dy.view()); },
                            "layer_norm_backward: dbeta");
  test::expect_error_naming([&] { backward(mean.view(), dx.view(), dg.view(), db.view(), bad.view()); },
                            "layer_norm_backward: dy");
  test::expect_error_naming(
      [&] {
        reference::layer_norm_backward<float>(x.view(), g.view(), mean.view(), bad4.view(), dy.view(), dx.view(),
                                              dg.view(), db.view());
      },
      "layer_norm_backward: rstd");
  test::expect_error_naming(
      [&] {
        ops::layer_norm_train(cpu_backend{}, x.view(), g.view(), b.view(), 1e-5f, y.view(), mean.view(), bad4.view());
      },
      "layer_norm_train rstd");
  // The training forward must keep x intact for the backward: in place is refused.
  test::expect_error_naming(
      [&] {
        ops::layer_norm_train(cpu_backend{}, x.view(), g.view(), b.view(), 1e-5f, x.view(), mean.view(), rstd.view());
      },
      "layer_norm_train: output y overlaps input x");
  // Partial overlap (rows 1..3 of x's buffer) is refused; adjacent, disjoint rows are fine.
  Tensor<float, 2> buf({6, 4});
  const HostView<float, 2> rows = buf.view();
  test::expect_error_naming(
      [&] {
        reference::layer_norm_train<float>(rows.slice(0, 0, 3), g.view(), b.view(), 1e-5f, rows.slice(0, 1, 4),
                                           mean.view(), rstd.view());
      },
      "layer_norm_train: output y overlaps input x");
  reference::layer_norm_train<float>(rows.slice(0, 0, 3), g.view(), b.view(), 1e-5f, rows.slice(0, 3, 6), mean.view(),
                                     rstd.view());
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

TEST(RmsNormGrad, ReferenceMatchesFiniteDifferences) {
  std::uint64_t seed = 400;
  const float eps = 1e-5f;
  for (const Shape& s : kGradShapes) {
    SCOPED_TRACE(::testing::Message() << s.m << "x" << s.d);
    Tensor<double, 2> x({s.m, s.d}), dy({s.m, s.d}), y({s.m, s.d}), dx({s.m, s.d});
    Tensor<double, 1> w({s.d}), rstd({s.m}), dw({s.d});
    fill_normal(x, ++seed, 1.5, 0.3);
    fill_normal(w, ++seed, 0.5, 1.0);
    fill_normal(dy, ++seed);
    reference::rms_norm_train<double>(x.view(), w.view(), eps, y.view(), rstd.view());
    reference::rms_norm_backward<double>(x.view(), w.view(), rstd.view(), dy.view(), dx.view(), dw.view());
    auto loss = [&] {
      reference::rms_norm<double>(x.view(), w.view(), eps, y.view());
      return test::weighted_sum(dy, y);
    };
    EXPECT_TRUE(
        test::check_gradients(loss, {{"x", span_of(x), span_of(dx)}, {"weight", span_of(w), span_of(dw)}}));
  }
}

TEST(RmsNormGrad, TrainForwardEqualsInferenceBitForBit) {
  std::uint64_t seed = 410;
  const float eps = 1e-5f;
  for (const Shape& s : kCpuShapes) {
    for (Layout lin : kAllLayouts) {
      SCOPED_TRACE(::testing::Message() << s.m << "x" << s.d << " " << test::layout_name(lin));
      Tensor<double, 2> xd({s.m, s.d});
      Tensor<double, 1> wd({s.d});
      fill_normal(xd, ++seed, 2.0, 0.5);
      fill_normal(wd, ++seed, 0.5, 1.0);
      Guarded<float, 2> x({s.m, s.d}, lin, kSentinel), y_train({s.m, s.d}, lin, kSentinel);
      test::fill_from(x, xd);
      test::StridedVector w(wd);
      Tensor<float, 2> y_inf({s.m, s.d}), y_ref({s.m, s.d}), y_ref_train({s.m, s.d});
      Tensor<float, 1> rstd({s.m}), rstd_ref({s.m});
      ops::rms_norm(cpu_backend{}, x.cview(), w.cview(), eps, y_inf.view());
      ops::rms_norm_train(cpu_backend{}, x.cview(), w.cview(), eps, y_train.view(), rstd.view());
      EXPECT_TRUE(test::bitwise_equal(y_train.cview(), y_inf.view()));
      EXPECT_TRUE(y_train.guards_intact());
      reference::rms_norm(x.cview(), w.cview(), eps, y_ref.view());
      reference::rms_norm_train<float>(x.cview(), w.cview(), eps, y_ref_train.view(), rstd_ref.view());
      EXPECT_TRUE(test::bitwise_equal(y_ref_train.view(), y_ref.view()));
      EXPECT_TRUE(test::all_close(rstd.view(), rstd_ref.view(), test::kF32Op));
    }
  }
}

TEST(RmsNormGrad, CpuMatchesReferenceAndAccumulates) {
  std::uint64_t seed = 420;
  const float eps = 1e-5f;
  for (const Shape& s : kCpuShapes) {
    for (Layout layout : kAllLayouts) {
      SCOPED_TRACE(::testing::Message() << s.m << "x" << s.d << " " << test::layout_name(layout));
      Tensor<double, 2> xd({s.m, s.d}), dyd({s.m, s.d});
      Tensor<double, 1> wd({s.d}), dw0({s.d});
      fill_normal(xd, ++seed, 1.5, 0.5);
      fill_normal(dyd, ++seed);
      fill_normal(wd, ++seed, 0.5, 1.0);
      fill_normal(dw0, ++seed);
      Guarded<float, 2> x({s.m, s.d}, layout, kSentinel), dy({s.m, s.d}, layout, kSentinel),
          dx({s.m, s.d}, layout, kSentinel);
      test::fill_from(x, xd);
      test::fill_from(dy, dyd);
      test::StridedVector w(wd), dw(dw0);
      Tensor<float, 2> y({s.m, s.d}), dx_ref({s.m, s.d});
      Tensor<float, 1> rstd({s.m});
      Tensor<float, 1> dw_ref = test::to_float(dw0);
      ops::rms_norm_train(cpu_backend{}, x.cview(), w.cview(), eps, y.view(), rstd.view());
      reference::rms_norm_backward<float>(x.cview(), w.cview(), rstd.view(), dy.cview(), dx_ref.view(), dw_ref.view());
      ops::rms_norm_backward(cpu_backend{}, x.cview(), w.cview(), rstd.view(), dy.cview(), dx.view(), dw.view());
      EXPECT_TRUE(test::all_close(dx.cview(), dx_ref.view(), test::kF32Reduction));
      EXPECT_TRUE(test::all_close(dw.cview(), dw_ref.view(), test::kF32Reduction));
      EXPECT_TRUE(dx.guards_intact());
      EXPECT_TRUE(dw.gaps_intact());
    }
  }
}

TEST(RmsNormGrad, CpuSkipsEmptyGradientsAndWritesDxOverDy) {
  const std::int64_t m = 9, d = 70;
  Tensor<double, 2> xd({m, d}), dyd({m, d});
  Tensor<double, 1> wd({d});
  fill_normal(xd, 5);
  fill_normal(dyd, 6);
  fill_normal(wd, 7, 0.5, 1.0);
  const Tensor<float, 2> x = test::to_float(xd), dy = test::to_float(dyd);
  const Tensor<float, 1> w = test::to_float(wd);
  Tensor<float, 2> y({m, d}), dx_ref({m, d});
  Tensor<float, 1> rstd({m}), dw({d}), dw_ref({d});
  ops::rms_norm_train(cpu_backend{}, x.view(), w.view(), 1e-5f, y.view(), rstd.view());
  reference::rms_norm_backward<float>(x.view(), w.view(), rstd.view(), dy.view(), dx_ref.view(), dw_ref.view());
  Tensor<float, 2> g = test::to_float(dyd);
  ops::rms_norm_backward(cpu_backend{}, x.view(), w.view(), rstd.view(), g.view(), g.view(), HostView<float, 1>());
  EXPECT_TRUE(test::all_close(g.view(), dx_ref.view(), test::kF32Reduction));
  ops::rms_norm_backward(cpu_backend{}, x.view(), w.view(), rstd.view(), dy.view(), HostView<float, 2>(), dw.view());
  EXPECT_TRUE(test::all_close(dw.view(), dw_ref.view(), test::kF32Reduction));
}

TEST(RmsNormGrad, ArgumentErrorsNameTheArgument) {
  Tensor<float, 2> x({3, 4}), y({3, 4}), dy({3, 4}), dx({3, 4}), bad({4, 3});
  Tensor<float, 1> w({4}), rstd({3}), dw({4}), bad3({3}), bad4({4});
  test::expect_error_naming(
      [&] { ops::rms_norm_backward(cpu_backend{}, x.view(), w.view(), bad4.view(), dy.view(), dx.view(), dw.view()); },
      "rms_norm_backward: rstd");
  test::expect_error_naming(
      [&] { ops::rms_norm_backward(cpu_backend{}, x.view(), bad3.view(), rstd.view(), dy.view(), dx.view(), dw.view()); },
      "rms_norm_backward: weight");
  test::expect_error_naming(
      [&] { ops::rms_norm_backward(cpu_backend{}, x.view(), w.view(), rstd.view(), bad.view(), dx.view(), dw.view()); },
      "rms_norm_backward: dy");
  test::expect_error_naming(
      [&] { ops::rms_norm_backward(cpu_backend{}, x.view(), w.view(), rstd.view(), dy.view(), bad.view(), dw.view()); },
      "rms_norm_backward: dx");
  test::expect_error_naming(
      [&] { ops::rms_norm_backward(cpu_backend{}, x.view(), w.view(), rstd.view(), dy.view(), dx.view(), bad3.view()); },
      "rms_norm_backward: dweight");
  test::expect_error_naming(
      [&] { ops::rms_norm_train(cpu_backend{}, x.view(), w.view(), 1e-5f, y.view(), bad4.view()); },
      "rms_norm_train rstd");
  test::expect_error_naming(
      [&] { ops::rms_norm_train(cpu_backend{}, x.view(), w.view(), 1e-5f, x.view(), rstd.view()); },
      "rms_norm_train: output y overlaps input x");
}

// ---------------------------------------------------------------------------------------------
// Row L2 normalisation

/// Rows alternately of norm ≫ eps and ≪ eps (eps = 0.5), far from the kink at ‖x‖ = eps.
void fill_mixed_norm_rows(Tensor<double, 2>& x, std::uint64_t seed) {
  fill_normal(x, seed);
  for (std::int64_t i = 0; i < x.size(0); ++i) {
    double sq = 0.0;
    for (std::int64_t j = 0; j < x.size(1); ++j) sq += x(i, j) * x(i, j);
    const double target = i % 2 == 0 ? 2.0 : 0.05;  // row norm after scaling
    for (std::int64_t j = 0; j < x.size(1); ++j) x(i, j) *= target / std::sqrt(sq);
  }
}

TEST(L2NormalizeGrad, ReferenceMatchesFiniteDifferencesInBothBranches) {
  std::uint64_t seed = 500;
  for (const Shape& s : kGradShapes) {
    for (const float eps : {1e-12f, 0.5f}) {
      SCOPED_TRACE(::testing::Message() << s.m << "x" << s.d << " eps " << eps);
      Tensor<double, 2> x({s.m, s.d}), dy({s.m, s.d}), y({s.m, s.d}), dx({s.m, s.d});
      if (eps == 0.5f) {
        fill_mixed_norm_rows(x, ++seed);  // with eps 0.5 the odd rows take the clamped branch
      } else {
        fill_normal(x, ++seed);
      }
      fill_normal(dy, ++seed);
      reference::l2_normalize_rows_backward<double>(x.view(), dy.view(), dx.view(), eps);
      auto loss = [&] {
        reference::l2_normalize_rows<double>(x.view(), y.view(), eps);
        return test::weighted_sum(dy, y);
      };
      EXPECT_TRUE(test::check_gradients(loss, {{"x", span_of(x), span_of(dx)}}));
    }
  }
}

TEST(L2NormalizeGrad, ZeroRowTakesTheClampedBranchExactly) {
  // ‖x‖ = 0 ≤ eps: y = x / eps, so dx = dy / eps exactly (F.normalize's clamp_min gradient).
  const std::int64_t m = 3, d = 5;
  const float eps = 1e-12f;
  Tensor<double, 2> xd({m, d}), dyd({m, d}), dx({m, d});
  fill_normal(xd, 1);
  fill_normal(dyd, 2);
  for (std::int64_t j = 0; j < d; ++j) xd(1, j) = 0.0;
  reference::l2_normalize_rows_backward<double>(xd.view(), dyd.view(), dx.view(), eps);
  for (std::int64_t j = 0; j < d; ++j) EXPECT_EQ(dx(1, j), dyd(1, j) / static_cast<double>(eps)) << j;
  const Tensor<float, 2> x = test::to_float(xd), dy = test::to_float(dyd);
  Tensor<float, 2> dxf({m, d});
  ops::l2_normalize_rows_backward(cpu_backend{}, x.view(), dy.view(), dxf.view(), eps);
  for (std::int64_t j = 0; j < d; ++j) EXPECT_EQ(dxf(1, j), dy(1, j) / eps) << j;
  // A row whose norm equals eps exactly is clamped too (torch's clamp_min passes no gradient to the
  // norm there): x = (3, 4) has norm 5 exactly in float and double.
  Tensor<double, 2> xe({1, 2}), dye({1, 2}), dxe({1, 2});
  xe(0, 0) = 3.0, xe(0, 1) = 4.0, dye(0, 0) = 1.0, dye(0, 1) = -2.0;
  reference::l2_normalize_rows_backward<double>(xe.view(), dye.view(), dxe.view(), 5.0f);
  EXPECT_EQ(dxe(0, 0), 1.0 / 5.0);
  EXPECT_EQ(dxe(0, 1), -2.0 / 5.0);
  const Tensor<float, 2> xef = test::to_float(xe), dyef = test::to_float(dye);
  Tensor<float, 2> dxef({1, 2});
  ops::l2_normalize_rows_backward(cpu_backend{}, xef.view(), dyef.view(), dxef.view(), 5.0f);
  EXPECT_EQ(dxef(0, 0), 1.0f / 5.0f);
  EXPECT_EQ(dxef(0, 1), -2.0f / 5.0f);
}

TEST(L2NormalizeGrad, CpuMatchesReference) {
  std::uint64_t seed = 520;
  for (const Shape& s : kCpuShapes) {
    for (const float eps : {1e-12f, 0.5f}) {
      for (Layout layout : kAllLayouts) {
        SCOPED_TRACE(::testing::Message() << s.m << "x" << s.d << " eps " << eps << " " << test::layout_name(layout));
        Tensor<double, 2> xd({s.m, s.d}), dyd({s.m, s.d});
        fill_mixed_norm_rows(xd, ++seed);
        fill_normal(dyd, ++seed);
        Guarded<float, 2> x({s.m, s.d}, layout, kSentinel), dy({s.m, s.d}, layout, kSentinel),
            dx({s.m, s.d}, layout, kSentinel);
        test::fill_from(x, xd);
        test::fill_from(dy, dyd);
        Tensor<float, 2> dx_ref({s.m, s.d});
        reference::l2_normalize_rows_backward<float>(x.cview(), dy.cview(), dx_ref.view(), eps);
        ops::l2_normalize_rows_backward(cpu_backend{}, x.cview(), dy.cview(), dx.view(), eps);
        // The clamped rows give dy/eps = 2·dy, so values stay O(1) and the usual tolerance applies.
        EXPECT_TRUE(test::all_close(dx.cview(), dx_ref.view(), test::kF32Reduction));
        EXPECT_TRUE(dx.guards_intact());
      }
    }
  }
  // dx written over dy (same view).
  Tensor<double, 2> xd({5, 33}), dyd({5, 33});
  fill_mixed_norm_rows(xd, 1);
  fill_normal(dyd, 2);
  const Tensor<float, 2> x = test::to_float(xd), dy = test::to_float(dyd);
  Tensor<float, 2> dx_ref({5, 33}), g = test::to_float(dyd);
  reference::l2_normalize_rows_backward<float>(x.view(), dy.view(), dx_ref.view(), 0.5f);
  ops::l2_normalize_rows_backward(cpu_backend{}, x.view(), g.view(), g.view(), 0.5f);
  EXPECT_TRUE(test::all_close(g.view(), dx_ref.view(), test::kF32Reduction));
}

TEST(L2NormalizeGrad, ArgumentErrorsNameTheArgument) {
  Tensor<float, 2> x({3, 4}), dy({3, 4}), dx({3, 4}), bad({4, 3});
  test::expect_error_naming([&] { ops::l2_normalize_rows_backward(cpu_backend{}, x.view(), bad.view(), dx.view()); },
                            "l2_normalize_rows_backward: dy");
  test::expect_error_naming([&] { ops::l2_normalize_rows_backward(cpu_backend{}, x.view(), dy.view(), bad.view()); },
                            "l2_normalize_rows_backward: dx");
  // An empty dx is "not wanted": nothing to do, no error.
  ops::l2_normalize_rows_backward(cpu_backend{}, x.view(), dy.view(), HostView<float, 2>());
}

}  // namespace
}  // namespace qlip
