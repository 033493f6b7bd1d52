/// @file test_linear_grad.cpp
/// @brief linear backward: the double reference against finite differences, the CPU backend against
///        the float reference (strided views, accumulation into non-zero gradients, skipped
///        gradients), and the argument checks.
#include <gtest/gtest.h>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/cpu/gemm.hpp"
#include "qlip/reference/gemm.hpp"

namespace qlip {
namespace {

using test::fill_normal;
using test::span_of;

struct LinearCase {
  std::int64_t m, k, n;
  bool bias;
};
constexpr LinearCase kCases[] = {{1, 1, 1, true}, {3, 5, 4, true}, {7, 3, 6, false}, {5, 17, 9, true}};

TEST(LinearGrad, ReferenceMatchesFiniteDifferences) {
  std::uint64_t seed = 100;
  for (const LinearCase& c : kCases) {
    SCOPED_TRACE(::testing::Message() << c.m << "x" << c.k << " -> " << c.n << (c.bias ? " bias" : " no bias"));
    Tensor<double, 2> x({c.m, c.k}), w({c.n, c.k}), dy({c.m, c.n}), y({c.m, c.n});
    Tensor<double, 1> b({c.bias ? c.n : 0});
    fill_normal(x, ++seed);
    fill_normal(w, ++seed);
    fill_normal(b, ++seed);
    fill_normal(dy, ++seed);
    Tensor<double, 2> dx({c.m, c.k}), dw({c.n, c.k});
    Tensor<double, 1> db({c.bias ? c.n : 0});
    reference::linear_backward<double>(x.view(), w.view(), dy.view(), dx.view(), dw.view(), db.view());
    auto loss = [&] {
      reference::linear<double>(x.view(), w.view(), b.view(), y.view());
      return test::weighted_sum(dy, y);
    };
    std::vector<test::GradInput> inputs = {{"x", span_of(x), span_of(dx)}, {"w", span_of(w), span_of(dw)}};
    if (c.bias) inputs.push_back({"bias", span_of(b), span_of(db)});
    EXPECT_TRUE(test::check_gradients(loss, inputs));
  }
}

TEST(LinearGrad, CpuMatchesReferenceAndAccumulates) {
  std::uint64_t seed = 200;
  // The last two are big enough for per-thread slabs: by rows of dx and dw, then dw by columns (N = 8).
  for (const LinearCase& c : {LinearCase{3, 5, 4, true}, LinearCase{33, 70, 19, true}, LinearCase{64, 128, 96, false},
                              LinearCase{512, 96, 64, true}, LinearCase{2048, 64, 8, true}}) {
    SCOPED_TRACE(::testing::Message() << c.m << "x" << c.k << " -> " << c.n);
    Tensor<double, 2> xd({c.m, c.k}), wd({c.n, c.k}), dyd({c.m, c.n}), dw0({c.n, c.k});
    Tensor<double, 1> db0({c.n});
    fill_normal(xd, ++seed);
    fill_normal(wd, ++seed);
    fill_normal(dyd, ++seed);
    fill_normal(dw0, ++seed);  // gradients already holding a value: backward must add to it
    fill_normal(db0, ++seed);
    const Tensor<float, 2> x = test::to_float(xd), w = test::to_float(wd), dy = test::to_float(dyd);
    Tensor<float, 2> dx_ref({c.m, c.k}), dw_ref = test::to_float(dw0), dx({c.m, c.k}), dw = test::to_float(dw0);
    Tensor<float, 1> db_ref = test::to_float(db0), db = test::to_float(db0);
    HostView<float, 1> no_bias;
    reference::linear_backward<float>(x.view(), w.view(), dy.view(), dx_ref.view(), dw_ref.view(),
                                      c.bias ? db_ref.view() : no_bias);
    ops::linear_backward(cpu_backend{}, x.view(), w.view(), dy.view(), dx.view(), dw.view(),
                         c.bias ? db.view() : no_bias);
    EXPECT_TRUE(test::all_close(test::as_const_view(dx), test::as_const_view(dx_ref), test::kF32Reduction));
    EXPECT_TRUE(test::all_close(test::as_const_view(dw), test::as_const_view(dw_ref), test::kF32Reduction));
    EXPECT_TRUE(test::all_close(test::as_const_view(db), test::as_const_view(db_ref), test::kF32Reduction));
  }
}

TEST(LinearGrad, CpuTakesTransposedViewsAndSkipsEmptyGradients) {
  // x stored transposed ([K, M] memory read as an [M, K] view); dx not wanted (a frozen input).
  const std::int64_t m = 6, k = 5, n = 4;
  Tensor<double, 2> xt({k, m}), wd({n, k}), dyd({m, n});
  fill_normal(xt, 1);
  fill_normal(wd, 2);
  fill_normal(dyd, 3);
  const Tensor<float, 2> xt_f = test::to_float(xt), w = test::to_float(wd), dy = test::to_float(dyd);
  const HostView<const float, 2> x = xt_f.view().transpose(0, 1);
  Tensor<float, 2> dw({n, k}), dw_ref({n, k});
  Tensor<float, 1> db({n}), db_ref({n});
  reference::linear_backward<float>(x, w.view(), dy.view(), HostView<float, 2>(), dw_ref.view(), db_ref.view());
  ops::linear_backward(cpu_backend{}, x, w.view(), dy.view(), HostView<float, 2>(), dw.view(), db.view());
  EXPECT_TRUE(test::all_close(test::as_const_view(dw), test::as_const_view(dw_ref), test::kF32Reduction));
  EXPECT_TRUE(test::all_close(test::as_const_view(db), test::as_const_view(db_ref), test::kF32Reduction));
}

TEST(LinearGrad, ShapeErrorsNameTheArgument) {
  Tensor<float, 2> x({3, 5}), w({4, 5}), dy({3, 4}), bad_dx({3, 4}), dw({4, 5});
  Tensor<float, 1> db({4});
  test::expect_error_naming(
      [&] { ops::linear_backward(cpu_backend{}, x.view(), w.view(), dy.view(), bad_dx.view(), dw.view(), db.view()); },
      "linear_backward: dx");
  Tensor<float, 2> bad_dy({3, 3}), dx({3, 5});
  test::expect_error_naming(
      [&] { ops::linear_backward(cpu_backend{}, x.view(), w.view(), bad_dy.view(), dx.view(), dw.view(), db.view()); },
      "linear_backward: dy");
}

}  // namespace
}  // namespace qlip
