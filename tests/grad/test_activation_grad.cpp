/// @file test_activation_grad.cpp
/// @brief Backwards of the element-wise activations (GELU, quick-GELU, SiLU, tanh, SwiGLU) and of the
///        row softmax: the double references against finite differences, the CPU backend against the
///        float references (strided layouts, saturated inputs, dx in place of dy, skipped
///        gradients), known derivative values, and the argument checks.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "common/norms_grad_util.hpp"
#include "cpu/guarded.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/cpu/activation.hpp"
#include "qlip/cpu/softmax.hpp"
#include "qlip/reference/activation.hpp"
#include "qlip/reference/softmax.hpp"

namespace qlip {
namespace {

using test::fill_normal;
using test::Guarded;
using test::kAllLayouts;
using test::Layout;
using test::span_of;

constexpr float kSentinel = -4321.25f;

struct Shape {
  std::int64_t m, n;
};
constexpr Shape kGradShapes[] = {{1, 1}, {1, 7}, {5, 1}, {3, 5}, {4, 9}};
constexpr Shape kCpuShapes[] = {{1, 1}, {7, 7}, {7, 111}, {65, 65}, {111, 131}};

/// One element-wise activation: its double forward, its backward at both precisions and on the CPU.
struct UnaryOp {
  const char* name;
  void (*forward_f64)(HostView<const double, 2>, HostView<double, 2>);
  void (*forward_f32)(HostView<const float, 2>, HostView<float, 2>);
  void (*backward_f64)(HostView<const double, 2>, HostView<const double, 2>, HostView<double, 2>);
  void (*backward_f32)(HostView<const float, 2>, HostView<const float, 2>, HostView<float, 2>);
  void (*backward_cpu)(cpu_backend, HostView<const float, 2>, HostView<const float, 2>, HostView<float, 2>);
  double grad_at_zero;  // f'(0): 0.5 for the x·Φ/σ family, 1 for tanh
};
const UnaryOp kUnaryOps[] = {
    {"gelu", &reference::gelu<double>, &reference::gelu<float>, &reference::gelu_backward<double>,
     &reference::gelu_backward<float>, &ops::gelu_backward, 0.5},
    {"quick_gelu", &reference::quick_gelu<double>, &reference::quick_gelu<float>,
     &reference::quick_gelu_backward<double>, &reference::quick_gelu_backward<float>, &ops::quick_gelu_backward, 0.5},
    {"silu", &reference::silu<double>, &reference::silu<float>, &reference::silu_backward<double>,
     &reference::silu_backward<float>, &ops::silu_backward, 0.5},
    {"tanh_act", &reference::tanh_act<double>, &reference::tanh_act<float>, &reference::tanh_act_backward<double>,
     &reference::tanh_act_backward<float>, &ops::tanh_act_backward, 1.0},
};

TEST(ActivationGrad, ReferenceMatchesFiniteDifferences) {
  std::uint64_t seed = 600;
  for (const UnaryOp& op : kUnaryOps) {
    for (const Shape& s : kGradShapes) {
      SCOPED_TRACE(::testing::Message() << op.name << " " << s.m << "x" << s.n);
      Tensor<double, 2> x({s.m, s.n}), dy({s.m, s.n}), y({s.m, s.n}), dx({s.m, s.n});
      fill_normal(x, ++seed, 2.5);  // reaches the tails (|x| up to ~6) as well as the bend near 0
      fill_normal(dy, ++seed);
      op.backward_f64(x.view(), dy.view(), dx.view());
      auto loss = [&] {
        op.forward_f64(x.view(), y.view());
        return test::weighted_sum(dy, y);
      };
      EXPECT_TRUE(test::check_gradients(loss, {{"x", span_of(x), span_of(dx)}}));
    }
  }
}

TEST(ActivationGrad, DoubleForwardsAreTheFloatOracle) {
  // The finite differences differentiate the double instantiation; it must be the same function.
  Tensor<double, 2> xd({3, 41});
  fill_normal(xd, 7, 3.0);
  const Tensor<float, 2> x = test::to_float(xd);
  for (const UnaryOp& op : kUnaryOps) {
    SCOPED_TRACE(op.name);
    Tensor<double, 2> x_back({3, 41}), yd({3, 41});  // the float inputs, exactly, in double
    for (std::int64_t i = 0; i < x.numel(); ++i) x_back.data()[i] = static_cast<double>(x.data()[i]);
    Tensor<float, 2> yf({3, 41});
    op.forward_f64(x_back.view(), yd.view());
    op.forward_f32(x.view(), yf.view());
    EXPECT_TRUE(test::all_close(yf.view(), test::to_float(yd).view(), test::kF32Op));
  }
}

TEST(ActivationGrad, KnownDerivativeValues) {
  // f'(0), and the saturated tails: gelu', silu' → 1 (x → +∞) and 0 (x → −∞); tanh' → 0.
  Tensor<double, 2> x({1, 3}), dy({1, 3}), dx({1, 3});
  x(0, 0) = 0.0, x(0, 1) = 40.0, x(0, 2) = -40.0;
  dy(0, 0) = dy(0, 1) = dy(0, 2) = 1.0;
  for (const UnaryOp& op : kUnaryOps) {
    SCOPED_TRACE(op.name);
    op.backward_f64(x.view(), dy.view(), dx.view());
    EXPECT_NEAR(dx(0, 0), op.grad_at_zero, 1e-15);
    EXPECT_NEAR(dx(0, 1), op.grad_at_zero == 1.0 ? 0.0 : 1.0, 1e-12);
    EXPECT_NEAR(dx(0, 2), 0.0, 1e-12);
  }
  // gelu'(1) = Φ(1) + φ(1); silu'(1) = σ(1)·(1 + 1 − σ(1)).
  Tensor<double, 2> one({1, 1}), g({1, 1});
  one(0, 0) = 1.0;  // used as x and as dy
  reference::gelu_backward<double>(one.view(), one.view(), g.view());
  EXPECT_NEAR(g(0, 0), 0.8413447460685429 + 0.24197072451914337, 1e-15);
  reference::silu_backward<double>(one.view(), one.view(), g.view());
  const double s1 = 1.0 / (1.0 + std::exp(-1.0));
  EXPECT_NEAR(g(0, 0), s1 * (2.0 - s1), 1e-15);
}

TEST(ActivationGrad, CpuMatchesReference) {
  std::uint64_t seed = 700;
  for (const UnaryOp& op : kUnaryOps) {
    for (const Shape& s : kCpuShapes) {
      for (Layout layout : kAllLayouts) {
        SCOPED_TRACE(::testing::Message() << op.name << " " << s.m << "x" << s.n << " " << test::layout_name(layout));
        Tensor<double, 2> xd({s.m, s.n}), dyd({s.m, s.n});
        fill_normal(xd, ++seed, 3.0);
        fill_normal(dyd, ++seed);
        // Saturated inputs, where exp_fast clamps: the derivative must still be finite and right.
        const double extremes[] = {-100.0, -88.5, -30.0, 30.0, 88.5, 100.0};
        for (std::int64_t k = 0; k < 6 && k < xd.numel(); ++k) xd.data()[k * 7 % xd.numel()] = extremes[k];
        Guarded<float, 2> x({s.m, s.n}, layout, kSentinel), dy({s.m, s.n}, layout, kSentinel),
            dx({s.m, s.n}, layout, kSentinel);
        test::fill_from(x, xd);
        test::fill_from(dy, dyd);
        Tensor<float, 2> dx_ref({s.m, s.n});
        op.backward_f32(x.cview(), dy.cview(), dx_ref.view());
        op.backward_cpu(cpu_backend{}, x.cview(), dy.cview(), dx.view());
        EXPECT_TRUE(test::all_close(dx.cview(), dx_ref.view(), test::kF32Op));
        EXPECT_TRUE(dx.guards_intact());
      }
    }
  }
}

TEST(ActivationGrad, CpuWritesDxOverDyAndSkipsAnEmptyDx) {
  Tensor<double, 2> xd({9, 33}), dyd({9, 33});
  fill_normal(xd, 11, 2.0);
  fill_normal(dyd, 12);
  const Tensor<float, 2> x = test::to_float(xd), dy = test::to_float(dyd);
  for (const UnaryOp& op : kUnaryOps) {
    SCOPED_TRACE(op.name);
    Tensor<float, 2> dx_ref({9, 33}), g = test::to_float(dyd);
    op.backward_f32(x.view(), dy.view(), dx_ref.view());
    op.backward_cpu(cpu_backend{}, x.view(), g.view(), g.view());
    EXPECT_TRUE(test::all_close(g.view(), dx_ref.view(), test::kF32Op));
    op.backward_cpu(cpu_backend{}, x.view(), dy.view(), HostView<float, 2>());  // nothing wanted: no-op
  }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

TEST(SwigluGrad, ReferenceMatchesFiniteDifferences) {
  std::uint64_t seed = 800;
  for (const Shape& s : kGradShapes) {
    SCOPED_TRACE(::testing::Message() << s.m << "x" << s.n);
    Tensor<double, 2> gate({s.m, s.n}), lin({s.m, s.n}), dy({s.m, s.n}), y({s.m, s.n}), dgate({s.m, s.n}),
        dlin({s.m, s.n});
    fill_normal(gate, ++seed, 2.5);
    fill_normal(lin, ++seed);
    fill_normal(dy, ++seed);
    reference::swiglu_backward<double>(gate.view(), lin.view(), dy.view(), dgate.view(), dlin.view());
    auto loss = [&] {
      reference::swiglu<double>(gate.view(), lin.view(), y.view());
      return test::weighted_sum(dy, y);
    };
    EXPECT_TRUE(test::check_gradients(loss, {{"gate", span_of(gate), span_of(dgate)}, {"lin", span_of(lin), span_of(dlin)}}));
  }
}

TEST(SwigluGrad, CpuMatchesReference) {
  std::uint64_t seed = 820;
  for (const Shape& s : kCpuShapes) {
    for (Layout layout : kAllLayouts) {
      SCOPED_TRACE(::testing::Message() << s.m << "x" << s.n << " " << test::layout_name(layout));
      Tensor<double, 2> gd({s.m, s.n}), ld({s.m, s.n}), dyd({s.m, s.n});
      fill_normal(gd, ++seed, 3.0);
      fill_normal(ld, ++seed);
      fill_normal(dyd, ++seed);
      const double extremes[] = {-100.0, -88.5, -30.0, 30.0, 88.5, 100.0};
      for (std::int64_t k = 0; k < 6 && k < gd.numel(); ++k) gd.data()[k * 7 % gd.numel()] = extremes[k];
      Guarded<float, 2> gate({s.m, s.n}, layout, kSentinel), lin({s.m, s.n}, layout, kSentinel),
          dy({s.m, s.n}, layout, kSentinel), dgate({s.m, s.n}, layout, kSentinel), dlin({s.m, s.n}, layout, kSentinel);
      test::fill_from(gate, gd);
      test::fill_from(lin, ld);
      test::fill_from(dy, dyd);
      Tensor<float, 2> dgate_ref({s.m, s.n}), dlin_ref({s.m, s.n});
      reference::swiglu_backward<float>(gate.cview(), lin.cview(), dy.cview(), dgate_ref.view(), dlin_ref.view());
      ops::swiglu_backward(cpu_backend{}, gate.cview(), lin.cview(), dy.cview(), dgate.view(), dlin.view());
      EXPECT_TRUE(test::all_close(dgate.cview(), dgate_ref.view(), test::kF32Op));
      EXPECT_TRUE(test::all_close(dlin.cview(), dlin_ref.view(), test::kF32Op));
      EXPECT_TRUE(dgate.guards_intact());
      EXPECT_TRUE(dlin.guards_intact());
    }
  }
}

TEST(SwigluGrad, CpuSkipsEmptyGradientsAndWritesInPlace) {
  const std::int64_t m = 5, n = 37;
  Tensor<double, 2> gd({m, n}), ld({m, n}), dyd({m, n});
  fill_normal(gd, 1, 2.0);
  fill_normal(ld, 2);
  fill_normal(dyd, 3);
  const Tensor<float, 2> gate = test::to_float(gd), lin = test::to_float(ld), dy = test::to_float(dyd);
  Tensor<float, 2> dgate_ref({m, n}), dlin_ref({m, n});
  reference::swiglu_backward<float>(gate.view(), lin.view(), dy.view(), dgate_ref.view(), dlin_ref.view());
  // Only dlin (a frozen gate branch), written over dy.
  Tensor<float, 2> g = test::to_float(dyd);
  ops::swiglu_backward(cpu_backend{}, gate.view(), lin.view(), g.view(), HostView<float, 2>(), g.view());
  EXPECT_TRUE(test::all_close(g.view(), dlin_ref.view(), test::kF32Op));
  // Both, dgate over gate and dlin over lin (the buffers of the forward's inputs, reused).
  Tensor<float, 2> gate_buf = test::to_float(gd), lin_buf = test::to_float(ld);
  ops::swiglu_backward(cpu_backend{}, gate_buf.view(), lin_buf.view(), dy.view(), gate_buf.view(), lin_buf.view());
  EXPECT_TRUE(test::all_close(gate_buf.view(), dgate_ref.view(), test::kF32Op));
  EXPECT_TRUE(test::all_close(lin_buf.view(), dlin_ref.view(), test::kF32Op));
  // Only dgate.
  Tensor<float, 2> dgate({m, n});
  ops::swiglu_backward(cpu_backend{}, gate.view(), lin.view(), dy.view(), dgate.view(), HostView<float, 2>());
  EXPECT_TRUE(test::all_close(dgate.view(), dgate_ref.view(), test::kF32Op));
}

TEST(ActivationGrad, ArgumentErrorsNameTheArgument) {
  Tensor<float, 2> x({3, 4}), dy({3, 4}), dx({3, 4}), bad({4, 3});
  test::expect_error_naming([&] { ops::gelu_backward(cpu_backend{}, x.view(), bad.view(), dx.view()); },
                            "gelu_backward: dy");
  test::expect_error_naming([&] { ops::silu_backward(cpu_backend{}, x.view(), dy.view(), bad.view()); },
                            "silu_backward: dx");
  test::expect_error_naming([&] { reference::tanh_act_backward<float>(x.view(), dy.view(), bad.view()); },
                            "tanh_act_backward: dx");
  test::expect_error_naming([&] { ops::quick_gelu_backward(cpu_backend{}, x.view(), bad.view(), dx.view()); },
                            "quick_gelu_backward: dy");
  test::expect_error_naming(
      [&] { ops::swiglu_backward(cpu_backend{}, x.view(), bad.view(), dy.view(), dx.view(), dx.view()); },
      "swiglu_backward: lin");
  test::expect_error_naming(
      [&] { ops::swiglu_backward(cpu_backend{}, x.view(), x.view(), bad.view(), dx.view(), dx.view()); },
      "swiglu_backward: dy");
  test::expect_error_naming(
      [&] { ops::swiglu_backward(cpu_backend{}, x.view(), x.view(), dy.view(), bad.view(), dx.view()); },
      "swiglu_backward: dgate");
  test::expect_error_naming(
      [&] { ops::swiglu_backward(cpu_backend{}, x.view(), x.view(), dy.view(), dx.view(), bad.view()); },
      "swiglu_backward: dlin");
}

// ---------------------------------------------------------------------------------------------
// Softmax over rows

TEST(SoftmaxGrad, ReferenceMatchesFiniteDifferences) {
  std::uint64_t seed = 900;
  for (const Shape& s : kGradShapes) {
    for (const bool masked : {false, true}) {
      SCOPED_TRACE(::testing::Message() << s.m << "x" << s.n << (masked ? " masked" : ""));
      Tensor<double, 2> x({s.m, s.n}), dy({s.m, s.n}), y({s.m, s.n}), dx({s.m, s.n});
      fill_normal(x, ++seed, 2.0);
      fill_normal(dy, ++seed);
      // A −inf logit (a causal mask) in the last column: its probability is 0 and so is its gradient.
      if (masked && s.n > 1)
        for (std::int64_t i = 0; i < s.m; ++i) x(i, s.n - 1) = -std::numeric_limits<double>::infinity();
      reference::softmax_rows<double>(x.view(), y.view());
      reference::softmax_rows_backward<double>(y.view(), dy.view(), dx.view());
      auto loss = [&] {
        reference::softmax_rows<double>(x.view(), y.view());
        return test::weighted_sum(dy, y);
      };
      EXPECT_TRUE(test::check_gradients(loss, {{"x", span_of(x), span_of(dx)}}));
      if (masked && s.n > 1) {
        for (std::int64_t i = 0; i < s.m; ++i) EXPECT_EQ(dx(i, s.n - 1), 0.0);
      }
    }
  }
}

TEST(SoftmaxGrad, CpuMatchesReference) {
  std::uint64_t seed = 920;
  for (const Shape& s : kCpuShapes) {
    for (Layout layout : kAllLayouts) {
      SCOPED_TRACE(::testing::Message() << s.m << "x" << s.n << " " << test::layout_name(layout));
      Tensor<double, 2> xd({s.m, s.n}), dyd({s.m, s.n});
      fill_normal(xd, ++seed, 3.0);
      fill_normal(dyd, ++seed);
      const Tensor<float, 2> x = test::to_float(xd);
      Guarded<float, 2> y({s.m, s.n}, layout, kSentinel), dy({s.m, s.n}, layout, kSentinel),
          dx({s.m, s.n}, layout, kSentinel);
      ops::softmax_rows(cpu_backend{}, x.view(), y.view());
      test::fill_from(dy, dyd);
      Tensor<float, 2> dx_ref({s.m, s.n});
      reference::softmax_rows_backward<float>(y.cview(), dy.cview(), dx_ref.view());
      ops::softmax_rows_backward(cpu_backend{}, y.cview(), dy.cview(), dx.view());
      EXPECT_TRUE(test::all_close(dx.cview(), dx_ref.view(), test::kF32Reduction));
      EXPECT_TRUE(dx.guards_intact());
    }
  }
  // dx written over dy (same view); an empty dx does nothing.
  Tensor<double, 2> xd({6, 50}), dyd({6, 50});
  fill_normal(xd, 1, 2.0);
  fill_normal(dyd, 2);
  const Tensor<float, 2> x = test::to_float(xd), dy = test::to_float(dyd);
  Tensor<float, 2> y({6, 50}), dx_ref({6, 50}), g = test::to_float(dyd);
  ops::softmax_rows(cpu_backend{}, x.view(), y.view());
  reference::softmax_rows_backward<float>(y.view(), dy.view(), dx_ref.view());
  ops::softmax_rows_backward(cpu_backend{}, y.view(), g.view(), g.view());
  EXPECT_TRUE(test::all_close(g.view(), dx_ref.view(), test::kF32Reduction));
  ops::softmax_rows_backward(cpu_backend{}, y.view(), dy.view(), HostView<float, 2>());
}

TEST(SoftmaxGrad, ArgumentErrorsNameTheArgument) {
  Tensor<float, 2> y({3, 4}), dy({3, 4}), dx({3, 4}), bad({4, 3});
  test::expect_error_naming([&] { ops::softmax_rows_backward(cpu_backend{}, y.view(), bad.view(), dx.view()); },
                            "softmax_rows_backward: dy");
  test::expect_error_naming([&] { ops::softmax_rows_backward(cpu_backend{}, y.view(), dy.view(), bad.view()); },
                            "softmax_rows_backward: dx");
}

}  // namespace
}  // namespace qlip
