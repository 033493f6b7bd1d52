/// @file compare.hpp
/// @brief The tolerance policy, written once (CONVENTIONS.md §9): every element must satisfy
///        |got − ref| ≤ atol + rtol·|ref| and be finite. Tolerances per dtype live here; a test that
///        needs a different one passes it explicitly with a comment saying why.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

#include "qlip/core/allocator.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::test {

struct Tolerance {
  double atol;
  double rtol;
};

/// fp32 op vs fp32 reference with a different summation order (Eigen blocking, OpenMP splits).
inline constexpr Tolerance kF32Op{1e-5, 1e-5};
/// fp32 op with long reductions (GEMM/attention with K up to a few thousand).
inline constexpr Tolerance kF32Reduction{1e-4, 1e-4};
/// Whole-model fp32 hidden states vs the independent PyTorch reference (issue 3: 1e-4 relative).
inline constexpr Tolerance kF32Model{1e-4, 1e-4};
/// TF32 tensor-core GEMM vs the fp32 reference, for products of order 1: each input is rounded to a
/// 10-bit mantissa (relative 2^-11 ≈ 4.9e-4), so a sum of K products with random signs is off by
/// ~1e-3 of its size; 5e-3 leaves a factor of 5.
inline constexpr Tolerance kTf32Gemm{5e-3, 5e-3};
/// Exact: integer-valued inputs, index/bit arithmetic.
inline constexpr Tolerance kExact{0.0, 0.0};

/// Compares two equally shaped views element by element. Reports the count of failures and the
/// worst element (index, got, ref) so a failure says where and how badly.
template <class A, class B, int R, class M>
::testing::AssertionResult all_close(const TensorView<A, R, M>& got, const TensorView<B, R, M>& ref,
                                     Tolerance tol) {
  if (got.shape() != ref.shape()) {
    return ::testing::AssertionFailure()
           << "shape " << shape_string<R>(got.shape()) << " vs reference " << shape_string<R>(ref.shape());
  }
  std::int64_t failures = 0, n = got.numel(), worst_at = -1;
  double worst_excess = -1, worst_got = 0, worst_ref = 0;
  Extents<R> idx{};
  for (std::int64_t linear = 0; linear < n; ++linear) {
    std::int64_t rem = linear, off_g = got.offset(), off_r = ref.offset();
    for (int d = R - 1; d >= 0; --d) {
      idx[d] = rem % got.size(d);
      rem /= got.size(d);
      off_g += idx[d] * got.stride(d);
      off_r += idx[d] * ref.stride(d);
    }
    double g = static_cast<double>(got.base()[off_g]);
    double r = static_cast<double>(ref.base()[off_r]);
    double allowed = tol.atol + tol.rtol * std::fabs(r);
    double err = std::fabs(g - r);
    bool ok = std::isfinite(g) && std::isfinite(r) && err <= allowed;
    if (!ok) {
      ++failures;
      double excess = std::isfinite(err) ? err - allowed : 1e300;
      if (excess > worst_excess) {
        worst_excess = excess;
        worst_at = linear;
        worst_got = g;
        worst_ref = r;
      }
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << failures << " of " << n << " elements outside atol " << tol.atol
                                       << " + rtol " << tol.rtol << "·|ref|; worst at linear index "
                                       << worst_at << ": got " << worst_got << ", ref " << worst_ref;
}

/// Read-only view of an owning tensor or a view, so all_close can compare mixed arguments.
template <class E, int R>
HostView<const E, R> as_const_view(const Tensor<E, R>& t) {
  return t.view();
}
template <class E, int R>
HostView<const E, R> as_const_view(const HostView<E, R>& v) {
  return v;
}

/// Expects `f` to throw qlip::Error whose message contains `needle` (errors must name the problem).
template <class F>
void expect_error_naming(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no qlip::Error thrown; expected one naming \"" << needle << "\"";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace qlip::test
