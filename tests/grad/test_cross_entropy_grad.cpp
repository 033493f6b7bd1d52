/// @file test_cross_entropy_grad.cpp
/// @brief Token cross-entropy: the double reference against finite differences (masked rows
///        included), the CPU backend against the float reference (strided views, a vocabulary that
///        takes the parallel path, dlogits over the logits in place), thread-count independence,
///        all rows masked, and the argument checks.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "common/loss_test_util.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/cpu/cross_entropy.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/reference/cross_entropy.hpp"

namespace qlip {
namespace {

using test::fill_normal;
using test::span_of;

/// Targets cycling through the vocabulary; every third row masked (negative).
std::vector<std::int32_t> targets_for(std::int64_t n, std::int64_t v) {
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) t[static_cast<std::size_t>(i)] = i % 3 == 2 ? -1 : static_cast<std::int32_t>((5 * i + 1) % v);
  return t;
}
HostView<const std::int32_t, 1> view_of(const std::vector<std::int32_t>& v) {
  return HostView<const std::int32_t, 1>(v.data(), {static_cast<std::int64_t>(v.size())});
}

TEST(CrossEntropyGrad, ReferenceMatchesFiniteDifferences) {
  std::uint64_t seed = 900;
  for (const auto [n, v] : {std::pair<std::int64_t, std::int64_t>{1, 1}, {4, 7}, {6, 3}, {2, 13}}) {
    SCOPED_TRACE(::testing::Message() << n << "x" << v);
    Tensor<double, 2> logits({n, v}), dlogits({n, v});
    fill_normal(logits, ++seed, 2.0);
    const std::vector<std::int32_t> t = targets_for(n, v);
    const double dloss = 0.7;
    reference::cross_entropy_backward<double>(logits.view(), view_of(t), dloss, dlogits.view());
    auto loss = [&] { return dloss * reference::cross_entropy<double>(logits.view(), view_of(t)).loss; };
    EXPECT_TRUE(test::check_gradients(loss, {{"logits", span_of(logits), span_of(dlogits)}}));
  }
}

TEST(CrossEntropyGrad, ReferenceIsTheMeanNegativeLogLikelihood) {
  // Two rows, one masked: L = logsumexp(0, ln 3) − ln 3 = ln(4/3).
  Tensor<double, 2> logits({2, 2});
  logits(0, 0) = 0.0;
  logits(0, 1) = std::log(3.0);
  logits(1, 0) = 5.0;
  logits(1, 1) = -5.0;
  const std::vector<std::int32_t> t{1, -1};
  const CrossEntropyResult r = reference::cross_entropy<double>(logits.view(), view_of(t));
  EXPECT_EQ(r.count, 1);
  EXPECT_NEAR(r.loss, std::log(4.0 / 3.0), 1e-15);
}

TEST(CrossEntropyGrad, CpuMatchesReference) {
  std::uint64_t seed = 950;
  for (const auto [n, v] : {std::pair<std::int64_t, std::int64_t>{1, 1}, {17, 33}, {5, 20000}}) {  // 5×20000: OpenMP
    SCOPED_TRACE(::testing::Message() << n << "x" << v);
    Tensor<double, 2> ld({n, v});
    fill_normal(ld, ++seed, 3.0);
    const Tensor<float, 2> logits = test::to_float(ld);
    const std::vector<std::int32_t> t = targets_for(n, v);
    const CrossEntropyResult got = ops::cross_entropy(cpu_backend{}, logits.view(), view_of(t));
    const CrossEntropyResult want = reference::cross_entropy(logits.view(), view_of(t));
    EXPECT_EQ(got.count, want.count);
    EXPECT_TRUE(test::scalar_close(got.loss, want.loss, test::kF32Op));
    Tensor<float, 2> dref({n, v}), dgot({n, v});
    reference::cross_entropy_backward<float>(logits.view(), view_of(t), 2.5, dref.view());
    ops::cross_entropy_backward(cpu_backend{}, logits.view(), view_of(t), 2.5, dgot.view());
    EXPECT_TRUE(test::all_close(test::as_const_view(dgot), test::as_const_view(dref), test::kF32Op));
    // In place: dlogits over the logits.
    Tensor<float, 2> inplace = test::to_float(ld);
    ops::cross_entropy_backward(cpu_backend{}, inplace.view(), view_of(t), 2.5, inplace.view());
    EXPECT_TRUE(test::all_close(test::as_const_view(inplace), test::as_const_view(dref), test::kF32Op));
  }
}

TEST(CrossEntropyGrad, CpuTakesStridedViews) {
  const std::int64_t n = 6, v = 9;
  Tensor<double, 2> ld({n, v});
  fill_normal(ld, 31);
  const Tensor<float, 2> dense = test::to_float(ld);
  Tensor<float, 2> store, dstore;
  const HostView<float, 2> logits = test::transposed_view(store, n, v);
  test::copy_into(dense, logits);
  const HostView<float, 2> d = test::padded_view(dstore, n, v, 4);
  const std::vector<std::int32_t> t = targets_for(n, v);
  Tensor<float, 2> dref({n, v});
  reference::cross_entropy_backward<float>(dense.view(), view_of(t), 1.0, dref.view());
  ops::cross_entropy_backward(cpu_backend{}, logits, view_of(t), 1.0, d);
  EXPECT_TRUE(test::all_close(HostView<const float, 2>(d), test::as_const_view(dref), test::kF32Op));
  EXPECT_TRUE(test::scalar_close(ops::cross_entropy(cpu_backend{}, logits, view_of(t)).loss,
                                 reference::cross_entropy(dense.view(), view_of(t)).loss, test::kF32Op));
}

TEST(CrossEntropyGrad, CpuLossDoesNotDependOnTheThreadCount) {
  const std::int64_t n = 40, v = 3000;
  Tensor<double, 2> ld({n, v});
  fill_normal(ld, 41, 4.0);
  const Tensor<float, 2> logits = test::to_float(ld);
  const std::vector<std::int32_t> t = targets_for(n, v);
  const int saved = num_threads();
  set_num_threads(1);
  const double one = ops::cross_entropy(cpu_backend{}, logits.view(), view_of(t)).loss;
  set_num_threads(3);
  const double three = ops::cross_entropy(cpu_backend{}, logits.view(), view_of(t)).loss;
  set_num_threads(saved);
  EXPECT_EQ(one, three);
}

TEST(CrossEntropyGrad, EveryRowMaskedIsZeroLossAndZeroGradient) {
  Tensor<float, 2> logits({3, 4}), d({3, 4});
  for (std::int64_t i = 0; i < logits.numel(); ++i) logits.data()[i] = static_cast<float>(i);
  const std::vector<std::int32_t> t{-1, -1, -100};
  const CrossEntropyResult r = ops::cross_entropy(cpu_backend{}, logits.view(), view_of(t));
  EXPECT_EQ(r.count, 0);
  EXPECT_EQ(r.loss, 0.0);
  for (std::int64_t i = 0; i < d.numel(); ++i) d.data()[i] = 9.0f;
  ops::cross_entropy_backward(cpu_backend{}, logits.view(), view_of(t), 1.0, d.view());
  for (std::int64_t i = 0; i < d.numel(); ++i) EXPECT_EQ(d.data()[i], 0.0f);
}

TEST(CrossEntropyGrad, ArgumentErrorsNameTheArgument) {
  Tensor<float, 2> logits({3, 4}), bad_d({3, 5}), empty({3, 0});
  const std::vector<std::int32_t> ok{0, 1, 2}, short_t{0, 1}, out_of_range{0, 4, 1};
  test::expect_error_naming([&] { ops::cross_entropy(cpu_backend{}, logits.view(), view_of(short_t)); },
                            "cross_entropy: targets have 2 entries, logits 3 rows");
  test::expect_error_naming([&] { ops::cross_entropy(cpu_backend{}, logits.view(), view_of(out_of_range)); },
                            "target 4 of row 1 is outside the vocabulary of 4");
  test::expect_error_naming([&] { ops::cross_entropy(cpu_backend{}, empty.view(), view_of(ok)); },
                            "logits have no classes");
  test::expect_error_naming(
      [&] { ops::cross_entropy_backward(cpu_backend{}, logits.view(), view_of(ok), 1.0, bad_d.view()); },
      "cross_entropy_backward: dlogits");
}

}  // namespace
}  // namespace qlip
