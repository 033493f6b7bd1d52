/// @file test_elementwise.cpp
/// @brief Element-wise activations (GELU, quick-GELU, SiLU, tanh, SwiGLU) and row softmax: the CPU
///        backend against the reference on odd sizes, three layouts and in place, with guard
///        checks; plus independent checks of the references (double-precision formulas, softmax
///        row sums, masked entries).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "common/compare.hpp"
#include "cpu/guarded.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/cpu/activation.hpp"
#include "qlip/cpu/softmax.hpp"
#include "qlip/reference/activation.hpp"
#include "qlip/reference/softmax.hpp"

namespace qlip {
namespace {

using test::Guarded;
using test::kAllLayouts;
using test::kOddShapes;

constexpr float kSentinel = 1234.5f;

/// CPU op vs reference for y = f(x) over every odd shape and every pair of input/output layouts,
/// plus the in-place form.
template <class Ref, class Cpu>
void check_unary(Ref ref, Cpu cpu, test::Tolerance tol, float scale, float shift = 0.0f) {
  std::uint64_t seed = 1;
  for (const auto& mn : kOddShapes) {
    const std::int64_t m = mn[0], n = mn[1];
    for (test::Layout lin : kAllLayouts) {
      for (test::Layout lout : kAllLayouts) {
        SCOPED_TRACE(test::case_name(m, n, lin, lout));
        Guarded<float, 2> x({m, n}, lin, kSentinel);
        x.fill_normal(++seed, scale, shift);
        Guarded<float, 2> y({m, n}, lout, kSentinel);
        Tensor<float, 2> want({m, n});
        ref(x.cview(), want.view());
        cpu(x.cview(), y.view());
        EXPECT_TRUE(test::all_close(y.cview(), want.view(), tol));
        EXPECT_TRUE(y.guards_intact());
        EXPECT_TRUE(x.guards_intact());
      }
      // In place: y aliases x.
      Guarded<float, 2> x({m, n}, lin, kSentinel);
      x.fill_normal(++seed, scale, shift);
      Tensor<float, 2> want({m, n});
      ref(x.cview(), want.view());
      cpu(x.cview(), x.view());
      EXPECT_TRUE(test::all_close(x.cview(), want.view(), tol)) << "in place, " << test::layout_name(lin);
      EXPECT_TRUE(x.guards_intact());
    }
  }
}

TEST(Elementwise, GeluCpuMatchesReference) {
  // Same scalar formula on both sides and no reduction: bit-identical.
  check_unary([](auto x, auto y) { reference::gelu(x, y); }, [](auto x, auto y) { ops::gelu(cpu_backend{}, x, y); },
              test::kExact, 3.0f);
}

TEST(Elementwise, QuickGeluCpuMatchesReference) {
  check_unary([](auto x, auto y) { reference::quick_gelu(x, y); },
              [](auto x, auto y) { ops::quick_gelu(cpu_backend{}, x, y); }, test::kExact, 3.0f);
}

TEST(Elementwise, SiluCpuMatchesReference) {
  check_unary([](auto x, auto y) { reference::silu(x, y); }, [](auto x, auto y) { ops::silu(cpu_backend{}, x, y); },
              test::kExact, 6.0f);
}

TEST(Elementwise, TanhCpuMatchesReference) {
  check_unary([](auto x, auto y) { reference::tanh_act(x, y); },
              [](auto x, auto y) { ops::tanh_act(cpu_backend{}, x, y); }, test::kExact, 2.0f);
}

TEST(Elementwise, SoftmaxCpuMatchesReference) {
  // fp32 row sums vs the double reference: different summation order and precision.
  check_unary([](auto x, auto y) { reference::softmax_rows(x, y); },
              [](auto x, auto y) { ops::softmax_rows(cpu_backend{}, x, y); }, test::kF32Op, 4.0f, 10.0f);
}

/// The reference activations against the formulas evaluated in double (independent of math.hpp's
/// float expressions). 2 ulp-ish slack for the float evaluation of erf/exp.
TEST(Elementwise, ReferenceActivationsMatchDoubleFormulas) {
  const std::int64_t n = 401;
  Tensor<float, 2> x({1, n}), y({1, n}), want({1, n});
  for (std::int64_t j = 0; j < n; ++j) x(0, j) = -10.0f + 20.0f * static_cast<float>(j) / static_cast<float>(n - 1);
  const test::Tolerance tol{1e-7, 1e-6};
  auto expect_formula = [&](auto op, auto formula, const char* what) {
    op(x.view(), y.view());
    for (std::int64_t j = 0; j < n; ++j) want(0, j) = static_cast<float>(formula(static_cast<double>(x(0, j))));
    EXPECT_TRUE(test::all_close(y.view(), want.view(), tol)) << what;
  };
  expect_formula([](auto a, auto b) { reference::gelu(a, b); },
                 [](double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); }, "gelu");
  expect_formula([](auto a, auto b) { reference::quick_gelu(a, b); },
                 [](double v) { return v / (1.0 + std::exp(-1.702 * v)); }, "quick_gelu");
  expect_formula([](auto a, auto b) { reference::silu(a, b); }, [](double v) { return v / (1.0 + std::exp(-v)); },
                 "silu");
  expect_formula([](auto a, auto b) { reference::tanh_act(a, b); }, [](double v) { return std::tanh(v); }, "tanh");
  // Values printed by PyTorch 2.x: F.gelu(torch.tensor([1., -1., 3.])).
  Tensor<float, 2> k({1, 3}), ky({1, 3});
  k(0, 0) = 1.0f, k(0, 1) = -1.0f, k(0, 2) = 3.0f;
  reference::gelu(k.view(), ky.view());
  EXPECT_NEAR(ky(0, 0), 0.8413447f, 1e-7);
  EXPECT_NEAR(ky(0, 1), -0.1586553f, 1e-7);
  EXPECT_NEAR(ky(0, 2), 2.9959502f, 1e-6);
}

TEST(Elementwise, SwigluCpuMatchesReferenceAndComposition) {
  std::uint64_t seed = 100;
  for (const auto& mn : kOddShapes) {
    const std::int64_t m = mn[0], n = mn[1];
    for (test::Layout l : kAllLayouts) {
      SCOPED_TRACE(test::case_name(m, n, l, l));
      Guarded<float, 2> gate({m, n}, l, kSentinel), lin({m, n}, test::Layout::padded, kSentinel);
      gate.fill_normal(++seed, 4.0f);
      lin.fill_normal(++seed, 2.0f);
      Guarded<float, 2> y({m, n}, l == test::Layout::transposed ? test::Layout::contiguous : test::Layout::transposed,
                          kSentinel);
      Tensor<float, 2> want({m, n}), silu_gate({m, n});
      reference::swiglu(gate.cview(), lin.cview(), want.view());
      ops::swiglu(cpu_backend{}, gate.cview(), lin.cview(), y.view());
      EXPECT_TRUE(test::all_close(y.cview(), want.view(), test::kExact));
      EXPECT_TRUE(y.guards_intact());
      // Independent composition: silu(gate) ⊙ lin from the silu op.
      reference::silu(gate.cview(), silu_gate.view());
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < n; ++j) silu_gate(i, j) *= lin.cview()(i, j);
      EXPECT_TRUE(test::all_close(want.view(), silu_gate.view(), test::kExact));
      // In place over the gate and over the linear branch.
      ops::swiglu(cpu_backend{}, gate.cview(), lin.cview(), gate.view());
      EXPECT_TRUE(test::all_close(gate.cview(), want.view(), test::kExact));
      EXPECT_TRUE(gate.guards_intact());
    }
  }
  Tensor<float, 2> a({2, 3}), b({2, 4}), c({2, 3});
  EXPECT_TRUE(test::throws_with([&] { ops::swiglu(cpu_backend{}, a.view(), b.view(), c.view()); }, "swiglu linear branch lin"));
  EXPECT_TRUE(test::throws_with([&] { reference::swiglu(a.view(), b.view(), c.view()); }, "swiglu linear branch lin"));
}

TEST(Elementwise, SoftmaxRowsSumToOneAndMaskedEntriesAreZero) {
  const std::int64_t m = 7, n = 65;
  const float inf = std::numeric_limits<float>::infinity();
  Guarded<float, 2> x({m, n}, test::Layout::padded, kSentinel);
  x.fill_normal(9, 30.0f);  // large logits: the max subtraction matters
  // Causal-style mask: row i keeps columns 0..i.
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = i + 1; j < n; ++j) x.view()(i, j) = -inf;
  Tensor<float, 2> ref_y({m, n}), cpu_y({m, n});
  reference::softmax_rows(x.cview(), ref_y.view());
  ops::softmax_rows(cpu_backend{}, x.cview(), cpu_y.view());
  EXPECT_TRUE(test::all_close(cpu_y.view(), ref_y.view(), test::kF32Op));
  for (std::int64_t i = 0; i < m; ++i) {
    double sum = 0.0;
    for (std::int64_t j = 0; j < n; ++j) {
      sum += ref_y(i, j);
      if (j > i) {
        EXPECT_EQ(ref_y(i, j), 0.0f);
        EXPECT_EQ(cpu_y(i, j), 0.0f);
      }
    }
    EXPECT_NEAR(sum, 1.0, 1e-6) << "row " << i;
  }
  EXPECT_EQ(ref_y(0, 0), 1.0f);  // a single unmasked entry
  EXPECT_EQ(cpu_y(0, 0), 1.0f);
  // torch.softmax(torch.tensor([1, 2, 3, 4.5, -7])) in float32.
  Tensor<float, 2> g({1, 5}), gy({1, 5}), gwant({1, 5});
  const float gx[5] = {1.f, 2.f, 3.f, 4.5f, -7.f}, gw[5] = {0.0226126052f, 0.0614674315f, 0.167085811f, 0.748826623f, 7.58568376e-06f};
  for (int j = 0; j < 5; ++j) g(0, j) = gx[j], gwant(0, j) = gw[j];
  ops::softmax_rows(cpu_backend{}, g.view(), gy.view());
  EXPECT_TRUE(test::all_close(gy.view(), gwant.view(), test::kF32Op));
}

TEST(Elementwise, ShapeMismatchThrowsNamingTheArgument) {
  Tensor<float, 2> x({3, 4}), y({4, 3});
  EXPECT_TRUE(test::throws_with([&] { ops::gelu(cpu_backend{}, x.view(), y.view()); }, "gelu output y"));
  EXPECT_TRUE(test::throws_with([&] { reference::silu(x.view(), y.view()); }, "silu output y"));
  EXPECT_TRUE(test::throws_with([&] { ops::softmax_rows(cpu_backend{}, x.view(), y.view()); }, "softmax_rows output y"));
}

}  // namespace
}  // namespace qlip
