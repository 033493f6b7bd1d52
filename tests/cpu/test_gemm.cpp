/// @file test_gemm.cpp
/// @brief CPU gemm/linear against the double-precision reference: odd sizes, every transpose,
///        sliced and fully strided views, alpha/beta, bias, exact integer checks, guard regions,
///        thread counts and shape errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/compare.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/cpu/gemm.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/reference/gemm.hpp"

namespace qlip {
namespace {

using test::all_close;
using test::kExact;
using test::kF32Reduction;

constexpr float kSentinel = -12345.25f;
constexpr std::int64_t kGuard = 37;  // elements before and after every view's storage

/// How a test matrix sits in memory.
enum class Layout {
  row,      ///< contiguous row-major
  col,      ///< contiguous column-major (a transposed view)
  padded,   ///< row-major with 3 extra columns per row and an offset (a slice)
  strided,  ///< neither stride is 1 (every other element): the copy path
};
const char* name(Layout l) {
  switch (l) {
    case Layout::row: return "row";
    case Layout::col: return "col";
    case Layout::padded: return "padded";
    case Layout::strided: return "strided";
  }
  return "?";
}

/// A [rows, cols] view in a given layout over storage with sentinel guards on both sides. Every
/// storage element outside the view also holds the sentinel, so untouched() checks that nothing
/// outside the view was written.
struct Matrix {
  AlignedBuffer<float> storage;
  HostView<float, 2> view;
  std::vector<bool> inside;  // storage element belongs to the view

  bool untouched() const {
    for (std::int64_t i = 0; i < storage.size(); ++i)
      if (!inside[i] && storage.data()[i] != kSentinel) return false;
    return true;
  }
};

/// Values: normal·scale, or integers in [-4, 4] when `integer` (exact in fp32 for K ≤ 2^24 / 16).
Matrix make_matrix(std::int64_t rows, std::int64_t cols, Layout layout, std::uint64_t seed, float scale = 1.0f,
                   bool integer = false) {
  Matrix m;
  std::int64_t body = 0;
  switch (layout) {
    case Layout::row:
    case Layout::col: body = rows * cols; break;
    case Layout::padded: body = rows * (cols + 3); break;
    case Layout::strided: body = rows * cols * 2; break;
  }
  m.storage = AlignedBuffer<float>(body + 2 * kGuard, false);
  float* base = m.storage.data() + kGuard;
  switch (layout) {
    case Layout::row: m.view = HostView<float, 2>(base, {rows, cols}); break;
    case Layout::col: m.view = HostView<float, 2>(base, {cols, rows}).transpose(0, 1); break;
    case Layout::padded: m.view = HostView<float, 2>(base, {rows, cols + 3}).slice(1, 2, cols + 2); break;
    case Layout::strided: m.view = HostView<float, 3>(base, {rows, cols, 2}).select(2, 1); break;
  }
  for (std::int64_t i = 0; i < m.storage.size(); ++i) m.storage.data()[i] = kSentinel;
  m.inside.assign(static_cast<std::size_t>(m.storage.size()), false);
  Philox rng(seed);
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t j = 0; j < cols; ++j) {
      const std::uint64_t e = static_cast<std::uint64_t>(i * cols + j);
      m.view(i, j) = integer ? std::floor(rng.uniform(e) * 9.0f) - 4.0f : rng.normal(e) * scale;
      m.inside[static_cast<std::size_t>(m.view.index_of(i, j) + kGuard)] = true;
    }
  }
  return m;
}

/// Runs cpu gemm and reference gemm on identical copies of c and compares every element.
void check_gemm(std::int64_t m, std::int64_t k, std::int64_t n, Layout la, Layout lb, Layout lc, float alpha,
                float beta, bool integer = false) {
  SCOPED_TRACE(std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n) + " a=" + name(la) +
               " b=" + name(lb) + " c=" + name(lc) + " alpha=" + std::to_string(alpha) +
               " beta=" + std::to_string(beta));
  // 1/√K keeps the outputs O(1), so kF32Reduction's atol is meaningful at every K.
  const float scale = integer ? 1.0f : 1.0f / std::sqrt(static_cast<float>(std::max<std::int64_t>(k, 1)));
  Matrix a = make_matrix(m, k, la, 1, scale, integer);
  Matrix b = make_matrix(k, n, lb, 2, 1.0f, integer);
  Matrix c = make_matrix(m, n, lc, 3, 1.0f, integer);
  Matrix c_ref = make_matrix(m, n, Layout::row, 3, 1.0f, integer);
  ops::gemm(cpu_backend{}, a.view, b.view, c.view, alpha, beta);
  reference::gemm(a.view, b.view, c_ref.view, alpha, beta);
  EXPECT_TRUE(all_close(c.view, c_ref.view, integer ? kExact : kF32Reduction));
  EXPECT_TRUE(c.untouched()) << "gemm wrote outside c";
  EXPECT_TRUE(a.untouched() && b.untouched()) << "gemm wrote into an input's storage";
}

TEST(CpuGemm, OddSizesAllTransposes) {
  const std::int64_t sizes[] = {1, 7, 65, 111};
  for (auto m : sizes)
    for (auto k : sizes)
      for (auto n : sizes)
        for (Layout la : {Layout::row, Layout::col})
          for (Layout lb : {Layout::row, Layout::col}) check_gemm(m, k, n, la, lb, Layout::row, 1.0f, 0.0f);
}

TEST(CpuGemm, AlphaBeta) {
  for (Layout lc : {Layout::row, Layout::col, Layout::padded, Layout::strided}) {
    check_gemm(65, 111, 7, Layout::row, Layout::col, lc, 0.5f, -1.5f);
    check_gemm(65, 111, 7, Layout::col, Layout::row, lc, -2.0f, 1.0f);
    check_gemm(7, 65, 111, Layout::row, Layout::row, lc, 1.0f, 0.25f);
  }
}

TEST(CpuGemm, NonContiguousViews) {
  const Layout all[] = {Layout::row, Layout::col, Layout::padded, Layout::strided};
  for (Layout la : all)
    for (Layout lb : all)
      for (Layout lc : all) check_gemm(65, 33, 111, la, lb, lc, 1.0f, 0.0f);
}

TEST(CpuGemm, ExactOnIntegers) {
  // Integer inputs in [-4, 4]: every partial sum is an integer below 2^24, so any summation order
  // (Eigen blocking, FMA, threads) gives the exact result.
  for (Layout la : {Layout::row, Layout::col, Layout::strided})
    for (Layout lb : {Layout::row, Layout::col, Layout::padded}) {
      check_gemm(65, 768, 111, la, lb, Layout::row, 1.0f, 0.0f, true);
      check_gemm(111, 257, 65, la, lb, Layout::padded, 2.0f, 3.0f, true);
    }
}

TEST(CpuGemm, VitShape) {
  check_gemm(257, 768, 768, Layout::row, Layout::col, Layout::row, 1.0f, 0.0f);
  check_gemm(257, 768, 768, Layout::row, Layout::row, Layout::row, 1.0f, 1.0f);
}

TEST(CpuGemm, BetaZeroDoesNotReadC) {
  for (Layout lc : {Layout::row, Layout::strided}) {
    Matrix a = make_matrix(65, 33, Layout::row, 1);
    Matrix b = make_matrix(33, 111, Layout::row, 2);
    Matrix c = make_matrix(65, 111, lc, 3);
    Matrix ref = make_matrix(65, 111, Layout::row, 4);
    for (std::int64_t i = 0; i < 65; ++i)
      for (std::int64_t j = 0; j < 111; ++j) c.view(i, j) = std::numeric_limits<float>::quiet_NaN();
    ops::gemm(cpu_backend{}, a.view, b.view, c.view, 1.0f, 0.0f);
    reference::gemm(a.view, b.view, ref.view);
    EXPECT_TRUE(all_close(c.view, ref.view, kF32Reduction)) << name(lc);
  }
}

TEST(CpuGemm, EmptyInnerDimensionScalesC) {
  Matrix a = make_matrix(7, 0, Layout::row, 1);
  Matrix b = make_matrix(0, 5, Layout::row, 2);
  Matrix c = make_matrix(7, 5, Layout::row, 3);
  Matrix ref = make_matrix(7, 5, Layout::row, 3);
  ops::gemm(cpu_backend{}, a.view, b.view, c.view, 1.0f, 0.5f);
  reference::gemm(a.view, b.view, ref.view, 1.0f, 0.5f);
  EXPECT_TRUE(all_close(c.view, ref.view, kExact));
  Matrix empty = make_matrix(0, 5, Layout::row, 4);
  Matrix a0 = make_matrix(0, 3, Layout::row, 5);
  Matrix b0 = make_matrix(3, 5, Layout::row, 6);
  ops::gemm(cpu_backend{}, a0.view, b0.view, empty.view);  // M = 0: nothing to do, no throw
  EXPECT_TRUE(empty.untouched());
}

TEST(CpuGemm, TileAndBlockBoundaries) {
  // Sizes one below, at and one above the register tile (rows kMR, columns kNR), the depth block
  // kKC and the column block kNCPanels·kNR, so every tail path of the packed kernel runs.
  namespace sg = detail::cpu::sgemm;
  const std::int64_t mr = sg::kMR, nr = sg::kNR, kc = sg::kKC, nc = sg::kNCPanels * sg::kNR;
  for (std::int64_t m : {mr - 1, mr, mr + 1, 5 * mr + 3})
    for (std::int64_t n : {nr - 1, nr + 1, nc + 1})
      for (std::int64_t k : {kc - 1, kc + 1, 2 * kc + 3}) {
        check_gemm(m, k, n, Layout::row, Layout::col, Layout::row, 1.0f, 0.0f);
        check_gemm(m, k, n, Layout::col, Layout::row, Layout::padded, -0.5f, 2.0f);
      }
}

/// c = a·b with `threads` threads, into a fresh copy of the same initial c.
Matrix gemm_with_threads(const Matrix& a, const Matrix& b, std::int64_t n, int threads) {
  Matrix c = make_matrix(a.view.size(0), n, Layout::row, 3);
  set_num_threads(threads);
  EXPECT_EQ(num_threads(), threads);
  ops::gemm(cpu_backend{}, a.view, b.view, c.view, 1.0f, 0.5f);
  return c;
}

TEST(CpuGemm, ThreadCountsGiveTheSameBits) {
  // The depth is summed in one fixed order whichever way the output is split (rows for tall
  // products, panels for short ones), so 1, 2 and 3 threads agree exactly.
  const int before = num_threads();
  for (std::int64_t m : {257, 5}) {
    SCOPED_TRACE("M = " + std::to_string(m));
    Matrix a = make_matrix(m, 768, Layout::row, 1, 1.0f / std::sqrt(768.0f));
    Matrix b = make_matrix(768, 300, Layout::col, 2);
    const Matrix c1 = gemm_with_threads(a, b, 300, 1);
    for (int threads : {2, 3}) {
      const Matrix ct = gemm_with_threads(a, b, 300, threads);
      EXPECT_TRUE(all_close(ct.view, c1.view, kExact)) << threads << " threads";
    }
  }
  set_num_threads(before);
  EXPECT_THROW(set_num_threads(0), Error);
}

/// Runs cpu linear and reference linear and compares every element.
void check_linear(std::int64_t m, std::int64_t k, std::int64_t n, Layout lx, Layout lw, Layout ly, bool bias) {
  SCOPED_TRACE(std::to_string(m) + "x" + std::to_string(k) + "->" + std::to_string(n) + " x=" + name(lx) +
               " w=" + name(lw) + " y=" + name(ly) + (bias ? " bias" : " no-bias"));
  Matrix x = make_matrix(m, k, lx, 11);
  Matrix w = make_matrix(n, k, lw, 12, 1.0f / std::sqrt(static_cast<float>(k)));
  Matrix bias_storage = make_matrix(2, n, Layout::row, 13);  // bias = row 1 of a [2,N] (offset view)
  HostView<const float, 1> b = bias ? HostView<const float, 1>(bias_storage.view.select(0, 1)) : HostView<const float, 1>();
  Matrix y = make_matrix(m, n, ly, 14);
  Matrix y_ref = make_matrix(m, n, Layout::row, 15);
  ops::linear(cpu_backend{}, x.view, w.view, b, y.view);
  reference::linear(x.view, w.view, b, y_ref.view);
  EXPECT_TRUE(all_close(y.view, y_ref.view, kF32Reduction));
  EXPECT_TRUE(y.untouched()) << "linear wrote outside y";
}

TEST(CpuLinear, BiasAndLayouts) {
  for (bool bias : {true, false})
    for (Layout lw : {Layout::row, Layout::col, Layout::strided})
      for (Layout ly : {Layout::row, Layout::padded, Layout::strided}) {
        check_linear(65, 111, 7, Layout::row, lw, ly, bias);
        check_linear(1, 7, 65, Layout::padded, lw, ly, bias);
      }
}

TEST(CpuLinear, VitShapes) {
  check_linear(257, 768, 768, Layout::row, Layout::row, Layout::row, true);
  check_linear(111, 768, 3072, Layout::row, Layout::row, Layout::row, true);
  check_linear(111, 3072, 768, Layout::row, Layout::row, Layout::row, false);
}

TEST(CpuLinear, StridedBias) {
  Matrix x = make_matrix(7, 65, Layout::row, 1);
  Matrix w = make_matrix(33, 65, Layout::row, 2, 0.125f);
  Matrix bias_storage = make_matrix(33, 2, Layout::row, 3);  // column 0: stride 2
  HostView<const float, 1> b = bias_storage.view.select(1, 0);
  Matrix y = make_matrix(7, 33, Layout::row, 4);
  Matrix y_ref = make_matrix(7, 33, Layout::row, 5);
  ops::linear(cpu_backend{}, x.view, w.view, b, y.view);
  reference::linear(x.view, w.view, b, y_ref.view);
  EXPECT_TRUE(all_close(y.view, y_ref.view, kF32Reduction));
}

TEST(CpuLinear, ExactOnIntegers) {
  Matrix x = make_matrix(65, 768, Layout::row, 1, 1.0f, true);
  Matrix w = make_matrix(111, 768, Layout::row, 2, 1.0f, true);
  Matrix bias = make_matrix(1, 111, Layout::row, 3, 1.0f, true);
  Matrix y = make_matrix(65, 111, Layout::row, 4);
  Matrix y_ref = make_matrix(65, 111, Layout::row, 5);
  ops::linear(cpu_backend{}, x.view, w.view, bias.view.select(0, 0), y.view);
  reference::linear(x.view, w.view, bias.view.select(0, 0), y_ref.view);
  EXPECT_TRUE(all_close(y.view, y_ref.view, kExact));
}

TEST(CpuLinear, RowsAccumulateAddsToY) {
  // linear_rows(accumulate) = y + x·wᵀ + b (the fused residual add); without it, linear().
  Matrix x = make_matrix(29, 65, Layout::row, 1);
  Matrix w = make_matrix(33, 65, Layout::row, 2, 0.125f);
  Matrix bias = make_matrix(1, 33, Layout::row, 3);
  Matrix y = make_matrix(29, 33, Layout::row, 4);
  Matrix want = make_matrix(29, 33, Layout::row, 4);  // same initial values as y
  Matrix product = make_matrix(29, 33, Layout::row, 5);
  ops::linear_rows(cpu_backend{}, x.view, w.view, bias.view.select(0, 0), y.view, true);
  reference::linear(x.view, w.view, bias.view.select(0, 0), product.view);
  for (std::int64_t i = 0; i < 29; ++i)
    for (std::int64_t j = 0; j < 33; ++j) want.view(i, j) += product.view(i, j);
  EXPECT_TRUE(all_close(y.view, want.view, kF32Reduction));
  ops::linear_rows(cpu_backend{}, x.view, w.view, bias.view.select(0, 0), y.view, false);
  EXPECT_TRUE(all_close(y.view, product.view, kF32Reduction));
}

TEST(CpuLinear, StreamingRowsMatchReferenceAndAnyThreadCount) {
  // M ≤ kStreamingRows (decoding) streams each weight row once; 9 rows take the packed SGEMM.
  for (std::int64_t m = 1; m <= detail::cpu::kStreamingRows + 1; ++m) {
    SCOPED_TRACE(::testing::Message() << "M = " << m);
    check_linear(m, 300, 70, Layout::row, Layout::row, Layout::row, true);
    check_linear(m, 33, 5, Layout::padded, Layout::row, Layout::strided, false);
  }
  // x past 24 KiB (AVX-512: tiles of two weight rows instead of one), K off every chunk size.
  for (std::int64_t m : {4, 8}) check_linear(m, 1601, 37, Layout::row, Layout::row, Layout::row, true);
  Matrix x = make_matrix(5, 700, Layout::row, 1);
  Matrix w = make_matrix(999, 700, Layout::row, 2, 0.05f);
  Matrix y1 = make_matrix(5, 999, Layout::row, 3), y3 = make_matrix(5, 999, Layout::row, 4);
  const int saved = num_threads();
  set_num_threads(1);
  ops::linear(cpu_backend{}, x.view, w.view, {}, y1.view);
  set_num_threads(3);
  ops::linear(cpu_backend{}, x.view, w.view, {}, y3.view);
  set_num_threads(saved);
  EXPECT_TRUE(all_close(y3.view, y1.view, kExact));
}

TEST(CpuLinear, PackedWeightGivesTheSameBitsAsTheView) {
  for (std::int64_t m : {1, 65, 257}) {
    Matrix x = make_matrix(m, 300, Layout::row, 1);
    Matrix w = make_matrix(111, 300, Layout::row, 2, 1.0f / std::sqrt(300.0f));
    Matrix bias = make_matrix(1, 111, Layout::row, 3);
    Matrix y = make_matrix(m, 111, Layout::row, 4);
    Matrix y_packed = make_matrix(m, 111, Layout::padded, 5);
    const PackedWeight packed(w.view);
    EXPECT_EQ(packed.out_features(), 111);
    EXPECT_EQ(packed.in_features(), 300);
    ops::linear(cpu_backend{}, x.view, w.view, bias.view.select(0, 0), y.view);
    ops::linear(cpu_backend{}, x.view, packed, bias.view.select(0, 0), y_packed.view);
    // Up to kStreamingRows rows the view takes the weight-streaming path (another summation order).
    const auto tol = m <= detail::cpu::kStreamingRows ? kF32Reduction : kExact;
    EXPECT_TRUE(all_close(y_packed.view, y.view, tol)) << "M = " << m;
    EXPECT_TRUE(y_packed.untouched());
  }
}

/// A bf16 copy of w (round to nearest even) and the same rounded values as an fp32 matrix.
struct Bf16Weight {
  Tensor<bf16, 2> bits;
  Tensor<float, 2> widened;
};
Bf16Weight round_weight(HostView<const float, 2> w) {
  Bf16Weight r{Tensor<bf16, 2>(w.shape()), Tensor<float, 2>(w.shape())};
  for (std::int64_t i = 0; i < w.size(0); ++i)
    for (std::int64_t j = 0; j < w.size(1); ++j) {
      r.bits(i, j) = bf16(w(i, j));
      r.widened(i, j) = static_cast<float>(r.bits(i, j));
    }
  return r;
}

/// bf16-weight linear against the reference on the same bf16 weights, and against the fp32 linear
/// on the widened weights (the only difference from fp32 decoding is the weights' rounding).
void check_linear_bf16(std::int64_t m, std::int64_t k, std::int64_t n, Layout lx, Layout ly, bool bias) {
  SCOPED_TRACE(::testing::Message() << m << "x" << k << "->" << n << " x=" << name(lx) << " y=" << name(ly)
                                    << (bias ? " bias" : " no-bias"));
  Matrix x = make_matrix(m, k, lx, 21);
  Matrix w = make_matrix(n, k, Layout::row, 22, 1.0f / std::sqrt(static_cast<float>(std::max<std::int64_t>(k, 1))));
  Matrix bias_storage = make_matrix(2, n, Layout::row, 23);
  HostView<const float, 1> b = bias ? HostView<const float, 1>(bias_storage.view.select(0, 1)) : HostView<const float, 1>();
  const Bf16Weight w16 = round_weight(w.view);
  Matrix y = make_matrix(m, n, ly, 24);
  Matrix y_ref = make_matrix(m, n, Layout::row, 25), y_f32 = make_matrix(m, n, Layout::row, 26);
  ops::linear(cpu_backend{}, x.view, w16.bits.view(), b, y.view);
  reference::linear(x.view, w16.bits.view(), b, y_ref.view);
  ops::linear(cpu_backend{}, x.view, w16.widened.view(), b, y_f32.view);
  EXPECT_TRUE(all_close(y.view, y_ref.view, kF32Reduction));
  EXPECT_TRUE(all_close(y.view, y_f32.view, kF32Reduction));
  EXPECT_TRUE(y.untouched()) << "linear wrote outside y";
}

TEST(CpuLinearBf16, StreamingAndBlockedPathsMatchReference) {
  // M = 1 (one sequential row), 2..8 (tiles), 9+ (widened blocks through the SGEMM); K around the
  // 16-element chunks and the 32-element lines of the one-row kernel; N around the tile widths
  // and the 256-row blocks.
  for (std::int64_t m : {1, 2, 3, 4, 5, 8, 9, 40})
    for (std::int64_t k : {1, 15, 16, 17, 33, 48, 300})
      for (std::int64_t n : {1, 5, 13, 257}) check_linear_bf16(m, k, n, Layout::row, Layout::row, m % 2 == 1);
  check_linear_bf16(1, 768, 300, Layout::padded, Layout::strided, true);
  check_linear_bf16(6, 768, 70, Layout::strided, Layout::padded, false);
  check_linear_bf16(3, 0, 4, Layout::row, Layout::row, true);  // K = 0: y = bias
  // x past 24 KiB (AVX-512: tiles of two weight rows instead of one), K off every chunk size.
  for (std::int64_t m : {4, 8}) check_linear_bf16(m, 1601, 37, Layout::row, Layout::row, true);
}

TEST(CpuLinearBf16, ThreadCountsGiveTheSameBits) {
  for (std::int64_t m : {1, 5, 12}) {
    Matrix x = make_matrix(m, 700, Layout::row, 1);
    Matrix w = make_matrix(999, 700, Layout::row, 2, 0.05f);
    const Bf16Weight w16 = round_weight(w.view);
    Matrix y1 = make_matrix(m, 999, Layout::row, 3), y3 = make_matrix(m, 999, Layout::row, 4);
    const int saved = num_threads();
    set_num_threads(1);
    ops::linear(cpu_backend{}, x.view, w16.bits.view(), {}, y1.view);
    set_num_threads(3);
    ops::linear(cpu_backend{}, x.view, w16.bits.view(), {}, y3.view);
    set_num_threads(saved);
    EXPECT_TRUE(all_close(y3.view, y1.view, kExact)) << "M = " << m;
  }
}

TEST(CpuLinearBf16, BadArgumentsNameTheProblem) {
  Tensor<float, 2> x({4, 5}), y({4, 3});
  Tensor<bf16, 2> w_bad({3, 6}), w_t({5, 3});
  test::expect_error_naming([&] { ops::linear(cpu_backend{}, x.view(), w_bad.view(), {}, y.view()); },
                            "w has shape [3, 6], expected [N, 5]");
  test::expect_error_naming(
      [&] { ops::linear(cpu_backend{}, x.view(), HostView<const bf16, 2>(w_t.view()).transpose(0, 1), {}, y.view()); },
      "bf16 weight needs unit stride along K");
}

using test::expect_error_naming;

TEST(CpuLinear, PackedWeightBadShapesNameTheArgument) {
  Tensor<float, 2> x({4, 5}), x_bad({4, 6}), w({3, 5}), y({4, 3}), y_bad({4, 5});
  Tensor<float, 1> bias_bad({4});
  const PackedWeight packed(w.view());
  expect_error_naming([&] { ops::linear(cpu_backend{}, x_bad.view(), packed, {}, y.view()); },
                      "x has shape [4, 6], expected [M, 5]");
  expect_error_naming([&] { ops::linear(cpu_backend{}, x.view(), packed, bias_bad.view(), y.view()); },
                      "bias has shape [4], expected [3]");
  expect_error_naming([&] { ops::linear(cpu_backend{}, x.view(), packed, {}, y_bad.view()); },
                      "y has shape [4, 5], expected [4, 3]");
  expect_error_naming([&] { ops::linear(cpu_backend{}, x.view(), PackedWeight(), {}, y.view()); },
                      "packed weight is empty");
}

TEST(CpuGemm, BadShapesNameTheArgument) {
  Tensor<float, 2> a({4, 5}), b({6, 3}), b_ok({5, 3}), c({4, 3}), c_bad({3, 4});
  expect_error_naming([&] { ops::gemm(cpu_backend{}, a.view(), b.view(), c.view()); }, "b has shape [6, 3]");
  expect_error_naming([&] { ops::gemm(cpu_backend{}, a.view(), b_ok.view(), c_bad.view()); },
                      "c has shape [3, 4], expected [4, 3]");
  expect_error_naming([&] { reference::gemm(a.view(), b.view(), c.view()); }, "b has shape [6, 3]");
}

TEST(CpuLinear, BadShapesNameTheArgument) {
  Tensor<float, 2> x({4, 5}), w({3, 5}), w_bad({5, 3}), y({4, 3}), y_bad({4, 5});
  Tensor<float, 1> bias({3}), bias_bad({4});
  expect_error_naming([&] { ops::linear(cpu_backend{}, x.view(), w_bad.view(), bias.view(), y.view()); },
                      "w has shape [5, 3]");
  expect_error_naming([&] { ops::linear(cpu_backend{}, x.view(), w.view(), bias_bad.view(), y.view()); },
                      "bias has shape [4], expected [3]");
  expect_error_naming([&] { ops::linear(cpu_backend{}, x.view(), w.view(), bias.view(), y_bad.view()); },
                      "y has shape [4, 5], expected [4, 3]");
}

}  // namespace
}  // namespace qlip
