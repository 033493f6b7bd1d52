/// @file test_norm.cpp
/// @brief LayerNorm, RMSNorm and row L2 normalisation: CPU backend vs reference on odd sizes,
///        three layouts, in place, with guard checks; independent property checks of the references
///        (zero mean / unit variance, unit mean square, unit norm, zero rows).
#include <gtest/gtest.h>

#include <cmath>

#include "common/compare.hpp"
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

using test::Guarded;
using test::kAllLayouts;
using test::kOddShapes;

constexpr float kSentinel = -4321.25f;

/// Runs `cpu` and `ref` (both (x, y) → void, parameters bound by the caller) over every odd shape,
/// every input/output layout pair and in place. Inputs have mean `shift` to exercise cancellation.
template <class Ref, class Cpu>
void check_rowwise(Ref ref, Cpu cpu, test::Tolerance tol, float scale, float shift) {
  std::uint64_t seed = 7;
  for (const auto& mn : kOddShapes) {
    const std::int64_t m = mn[0], n = mn[1];
    for (test::Layout lin : kAllLayouts) {
      for (test::Layout lout : kAllLayouts) {
        SCOPED_TRACE(test::case_name(m, n, lin, lout));
        Guarded<float, 2> x({m, n}, lin, kSentinel), y({m, n}, lout, kSentinel);
        x.fill_normal(++seed, scale, shift);
        Tensor<float, 2> want({m, n});
        ref(n, x.cview(), want.view());
        cpu(n, x.cview(), y.view());
        EXPECT_TRUE(test::all_close(y.cview(), want.view(), tol));
        EXPECT_TRUE(y.guards_intact());
        EXPECT_TRUE(x.guards_intact());
      }
      Guarded<float, 2> x({m, n}, lin, kSentinel);
      x.fill_normal(++seed, scale, shift);
      Tensor<float, 2> want({m, n});
      ref(n, x.cview(), want.view());
      cpu(n, x.cview(), x.view());
      EXPECT_TRUE(test::all_close(x.cview(), want.view(), tol)) << "in place, " << test::layout_name(lin);
      EXPECT_TRUE(x.guards_intact());
    }
  }
}

/// Affine parameters for width n: gamma ≈ 1 ± 0.5, beta ≈ ±0.5, the same for every call with n.
/// Strided (every other element of a buffer) so the 1-D parameter strides are exercised too.
struct Affine {
  explicit Affine(std::int64_t n) : gamma_buf({2 * n}), beta_buf({2 * n}) {
    Philox rng(static_cast<std::uint64_t>(n));
    for (std::int64_t j = 0; j < 2 * n; ++j) {
      gamma_buf(j) = 1.0f + 0.5f * rng.normal(static_cast<std::uint64_t>(j));
      beta_buf(j) = 0.5f * rng.normal(static_cast<std::uint64_t>(j), 1);
    }
  }
  HostView<const float, 1> gamma() const { return HostView<const float, 1>(gamma_buf.data(), {gamma_buf.size(0) / 2}, {2}); }
  HostView<const float, 1> beta() const { return HostView<const float, 1>(beta_buf.data(), {beta_buf.size(0) / 2}, {2}, 1); }
  Tensor<float, 1> gamma_buf, beta_buf;
};

TEST(Norm, LayerNormCpuMatchesReference) {
  const float eps = 1e-5f;
  check_rowwise([&](std::int64_t n, auto x, auto y) { Affine a(n); reference::layer_norm(x, a.gamma(), a.beta(), eps, y); },
                [&](std::int64_t n, auto x, auto y) { Affine a(n); ops::layer_norm(cpu_backend{}, x, a.gamma(), a.beta(), eps, y); },
                test::kF32Op, 2.0f, 3.0f);
}

TEST(Norm, LayerNormContiguousParameters) {
  // The all-unit-stride fast path, with contiguous gamma/beta.
  const std::int64_t m = 65, n = 989;
  Guarded<float, 2> x({m, n}, test::Layout::contiguous, kSentinel), y({m, n}, test::Layout::contiguous, kSentinel);
  x.fill_normal(3, 1.5f, -2.0f);
  Tensor<float, 1> gamma({n}), beta({n});
  for (std::int64_t j = 0; j < n; ++j) gamma(j) = 0.5f + 0.001f * static_cast<float>(j), beta(j) = 0.01f * static_cast<float>(j % 13);
  Tensor<float, 2> want({m, n});
  reference::layer_norm(x.cview(), gamma.view(), beta.view(), 1e-6f, want.view());
  ops::layer_norm(cpu_backend{}, x.cview(), gamma.view(), beta.view(), 1e-6f, y.view());
  EXPECT_TRUE(test::all_close(y.cview(), want.view(), test::kF32Op));
  EXPECT_TRUE(y.guards_intact());
}

TEST(Norm, LayerNormReferenceHasZeroMeanUnitVariance) {
  const std::int64_t m = 7, n = 989;
  Guarded<float, 2> x({m, n}, test::Layout::contiguous, kSentinel);
  x.fill_normal(11, 5.0f, 100.0f);  // large mean: two-pass variance must not cancel
  Tensor<float, 1> ones({n}), zeros({n});
  for (std::int64_t j = 0; j < n; ++j) ones(j) = 1.0f, zeros(j) = 0.0f;
  Tensor<float, 2> y({m, n});
  const float eps = 1e-5f;
  reference::layer_norm(x.cview(), ones.view(), zeros.view(), eps, y.view());
  for (std::int64_t i = 0; i < m; ++i) {
    double mean = 0, var = 0, in_mean = 0, in_var = 0;
    for (std::int64_t j = 0; j < n; ++j) mean += y(i, j), in_mean += x.cview()(i, j);
    mean /= n, in_mean /= n;
    for (std::int64_t j = 0; j < n; ++j) {
      var += (y(i, j) - mean) * (y(i, j) - mean);
      in_var += (x.cview()(i, j) - in_mean) * (x.cview()(i, j) - in_mean);
    }
    var /= n, in_var /= n;
    EXPECT_NEAR(mean, 0.0, 1e-6) << "row " << i;
    EXPECT_NEAR(var, in_var / (in_var + eps), 1e-6) << "row " << i;  // biased variance, eps inside
  }
}

TEST(Norm, RmsNormCpuMatchesReference) {
  const float eps = 1e-5f;
  check_rowwise([&](std::int64_t n, auto x, auto y) { Affine a(n); reference::rms_norm(x, a.gamma(), eps, y); },
                [&](std::int64_t n, auto x, auto y) { Affine a(n); ops::rms_norm(cpu_backend{}, x, a.gamma(), eps, y); },
                test::kF32Op, 2.0f, 0.5f);
}

TEST(Norm, RmsNormReferenceHasUnitMeanSquare) {
  const std::int64_t m = 7, n = 111;
  Guarded<float, 2> x({m, n}, test::Layout::transposed, kSentinel);
  x.fill_normal(12, 3.0f, 1.0f);
  Tensor<float, 1> w({n});
  for (std::int64_t j = 0; j < n; ++j) w(j) = 1.0f;
  Tensor<float, 2> y({m, n});
  reference::rms_norm(x.cview(), w.view(), 0.0f, y.view());
  for (std::int64_t i = 0; i < m; ++i) {
    double ms = 0, ratio = y(i, 0) / x.cview()(i, 0);
    for (std::int64_t j = 0; j < n; ++j) {
      ms += static_cast<double>(y(i, j)) * y(i, j);
      EXPECT_NEAR(y(i, j) / x.cview()(i, j), ratio, 1e-5 * ratio);  // a pure per-row scaling
    }
    EXPECT_NEAR(ms / n, 1.0, 1e-6) << "row " << i;
  }
}

TEST(Norm, L2NormalizeCpuMatchesReference) {
  check_rowwise([](std::int64_t, auto x, auto y) { reference::l2_normalize_rows(x, y); },
                [](std::int64_t, auto x, auto y) { ops::l2_normalize_rows(cpu_backend{}, x, y); }, test::kF32Op, 2.0f,
                0.25f);
}

TEST(Norm, L2NormalizeUnitNormsAndZeroRows) {
  const std::int64_t m = 5, n = 28;
  Guarded<float, 2> x({m, n}, test::Layout::padded, kSentinel);
  x.fill_normal(13, 1e-3f);
  for (std::int64_t j = 0; j < n; ++j) x.view()(2, j) = 0.0f;  // zero row: clamped by eps → stays 0
  Tensor<float, 2> ref_y({m, n}), cpu_y({m, n});
  reference::l2_normalize_rows(x.cview(), ref_y.view());
  ops::l2_normalize_rows(cpu_backend{}, x.cview(), cpu_y.view());
  EXPECT_TRUE(test::all_close(cpu_y.view(), ref_y.view(), test::kF32Op));
  for (std::int64_t i = 0; i < m; ++i) {
    double sq = 0;
    for (std::int64_t j = 0; j < n; ++j) sq += static_cast<double>(ref_y(i, j)) * ref_y(i, j);
    if (i == 2) {
      EXPECT_EQ(sq, 0.0);
      for (std::int64_t j = 0; j < n; ++j) EXPECT_EQ(cpu_y(2, j), 0.0f);
    } else {
      EXPECT_NEAR(std::sqrt(sq), 1.0, 1e-6) << "row " << i;
    }
  }
  // eps larger than the norm: y = x / eps exactly as F.normalize.
  Tensor<float, 2> big_eps({m, n});
  ops::l2_normalize_rows(cpu_backend{}, x.cview(), big_eps.view(), 1e3f);
  for (std::int64_t j = 0; j < n; ++j) EXPECT_EQ(big_eps(0, j), x.cview()(0, j) / 1e3f);
}

TEST(Norm, MatchPyTorchGolden) {
  // F.layer_norm / LlamaRMSNorm formula / F.normalize in PyTorch 2.x float32 on a fixed input
  // (the third row has mean 1000: cancellation in a one-pass variance would show).
  const float xs[3][5] = {{1.f, 2.f, 3.f, 4.5f, -7.f}, {.25f, .25f, .25f, .25f, .25f}, {1e3f, 1001.f, 999.f, 1002.f, 998.f}};
  const float ln[3][5] = {{0.0746277571f, 0.261693478f, 0.944292367f, -0.64528501f, -1.91544604f},
                          {0.f, 0.100000001f, -0.200000003f, 0.300000012f, 0.f},
                          {0.f, 0.453552485f, -1.61421001f, -1.11420989f, -1.41420996f}};
  const float rms[3][5] = {{0.245071471f, 0.245071471f, 1.47042882f, -1.10282159f, -1.71550035f},
                           {0.999920011f, 0.499960005f, 1.99984002f, -0.999920011f, 0.999920011f},
                           {0.999998987f, 0.500499487f, 1.997998f, -1.00199902f, 0.997999012f}};
  const float l2_row0[5] = {0.10959932953119278f, 0.21919865906238556f, 0.32879799604415894f, 0.493196964263916f,
                            -0.7671952843666077f};
  Tensor<float, 2> x({3, 5}), want_ln({3, 5}), want_rms({3, 5}), y({3, 5}), want_l2({1, 5});
  Tensor<float, 1> gamma({5}), beta({5});
  const float gs[5] = {1.f, .5f, 2.f, -1.f, 1.f}, bs[5] = {0.f, .1f, -.2f, .3f, 0.f};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 5; ++j) x(i, j) = xs[i][j], want_ln(i, j) = ln[i][j], want_rms(i, j) = rms[i][j];
  for (int j = 0; j < 5; ++j) gamma(j) = gs[j], beta(j) = bs[j], want_l2(0, j) = l2_row0[j];
  reference::layer_norm(x.view(), gamma.view(), beta.view(), 1e-5f, y.view());
  EXPECT_TRUE(test::all_close(y.view(), want_ln.view(), test::kF32Op));
  ops::layer_norm(cpu_backend{}, x.view(), gamma.view(), beta.view(), 1e-5f, y.view());
  EXPECT_TRUE(test::all_close(y.view(), want_ln.view(), test::kF32Op));
  reference::rms_norm(x.view(), gamma.view(), 1e-5f, y.view());
  EXPECT_TRUE(test::all_close(y.view(), want_rms.view(), test::kF32Op));
  ops::rms_norm(cpu_backend{}, x.view(), gamma.view(), 1e-5f, y.view());
  EXPECT_TRUE(test::all_close(y.view(), want_rms.view(), test::kF32Op));
  ops::l2_normalize_rows(cpu_backend{}, x.view(), y.view());
  EXPECT_TRUE(test::all_close(y.view().slice(0, 0, 1), want_l2.view(), test::kF32Op));
}

TEST(Norm, ShapeMismatchThrowsNamingTheArgument) {
  Tensor<float, 2> x({3, 4}), y({3, 4}), bad({4, 3});
  Tensor<float, 1> p4({4}), p3({3});
  EXPECT_TRUE(test::throws_with([&] { ops::layer_norm(cpu_backend{}, x.view(), p3.view(), p4.view(), 1e-5f, y.view()); },
                                "layer_norm gamma"));
  EXPECT_TRUE(test::throws_with([&] { reference::layer_norm(x.view(), p4.view(), p3.view(), 1e-5f, y.view()); },
                                "layer_norm beta"));
  EXPECT_TRUE(test::throws_with([&] { ops::layer_norm(cpu_backend{}, x.view(), p4.view(), p4.view(), 1e-5f, bad.view()); },
                                "layer_norm output y"));
  EXPECT_TRUE(test::throws_with([&] { ops::rms_norm(cpu_backend{}, x.view(), p3.view(), 1e-5f, y.view()); }, "rms_norm weight"));
  EXPECT_TRUE(test::throws_with([&] { ops::l2_normalize_rows(cpu_backend{}, x.view(), bad.view()); },
                                "l2_normalize_rows output y"));
}

}  // namespace
}  // namespace qlip
