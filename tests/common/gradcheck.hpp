/// @file gradcheck.hpp
/// @brief Finite-difference checks of backward passes, in double precision, tolerance stated once.
///
/// A backward is checked on the double instantiation of its reference op: the scalar
/// L = Σ dy ⊙ forward(inputs) (dy random, fixed) is differentiated by central differences,
/// ∂L/∂a ≈ (L(a + h) − L(a − h)) / 2h, element by element, and compared with what the analytic
/// backward wrote for the same dy. With h = 1e-6 in double, truncation error is O(h²) ≈ 1e-12 and
/// rounding error ≈ 1e-16·|L|/h ≈ 1e-9 for the small shapes used, so the tolerance below has
/// three orders of margin and still catches any wrong term (which is O(1) off).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "common/compare.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::test {

/// Analytic vs central-difference gradient of a double-precision scalar (see the file comment).
inline constexpr Tolerance kFiniteDifference{1e-6, 1e-5};
/// Central-difference step.
inline constexpr double kFiniteDifferenceStep = 1e-6;

/// One differentiated input: its values (perturbed in place, restored) and the analytic gradient.
struct GradInput {
  std::string name;
  std::span<double> value;
  std::span<const double> grad;
};

/// Standard normal values (Philox(seed)) times scale plus shift, into any double tensor.
template <int R>
void fill_normal(Tensor<double, R>& t, std::uint64_t seed, double scale = 1.0, double shift = 0.0) {
  Philox rng(seed);
  for (std::int64_t i = 0; i < t.numel(); ++i)
    t.data()[i] = shift + scale * static_cast<double>(rng.normal(static_cast<std::uint64_t>(i)));
}

/// Σ dy ⊙ y: the scalar whose gradient with respect to y is dy.
template <int R>
double weighted_sum(const Tensor<double, R>& dy, const Tensor<double, R>& y) {
  double s = 0.0;
  for (std::int64_t i = 0; i < y.numel(); ++i) s += dy.data()[i] * y.data()[i];
  return s;
}

template <class T, int R>
std::span<T> span_of(Tensor<T, R>& t) {
  return {t.data(), static_cast<std::size_t>(t.numel())};
}
template <class T, int R>
std::span<const T> span_of(const Tensor<T, R>& t) {
  return {t.data(), static_cast<std::size_t>(t.numel())};
}

/// Compares every element of every input's analytic gradient with the central difference of
/// `loss` (which must read the inputs' current values). Reports the worst element per input.
inline ::testing::AssertionResult check_gradients(const std::function<double()>& loss,
                                                  const std::vector<GradInput>& inputs,
                                                  Tolerance tol = kFiniteDifference,
                                                  double h = kFiniteDifferenceStep) {
  std::ostringstream failures;
  failures.precision(10);
  for (const GradInput& in : inputs) {
    if (in.value.size() != in.grad.size()) {
      return ::testing::AssertionFailure() << in.name << ": " << in.value.size() << " values but "
                                           << in.grad.size() << " gradient elements";
    }
    std::int64_t bad = 0, worst_at = -1;
    double worst_excess = -1, worst_fd = 0, worst_an = 0;
    for (std::size_t i = 0; i < in.value.size(); ++i) {
      const double saved = in.value[i];
      in.value[i] = saved + h;
      const double up = loss();
      in.value[i] = saved - h;
      const double down = loss();
      in.value[i] = saved;
      const double fd = (up - down) / (2.0 * h), an = in.grad[i];
      const double err = std::fabs(fd - an), allowed = tol.atol + tol.rtol * std::fabs(fd);
      if (!(std::isfinite(fd) && std::isfinite(an) && err <= allowed)) {
        ++bad;
        const double excess = std::isfinite(err) ? err - allowed : 1e300;
        if (excess > worst_excess) {
          worst_excess = excess;
          worst_at = static_cast<std::int64_t>(i);
          worst_fd = fd;
          worst_an = an;
        }
      }
    }
    if (bad > 0) {
      failures << in.name << ": " << bad << " of " << in.value.size() << " elements off; worst at " << worst_at
               << ": analytic " << worst_an << ", finite difference " << worst_fd << "\n";
    }
  }
  if (failures.str().empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "gradient check (atol " << tol.atol << ", rtol " << tol.rtol << ", h " << h
                                       << "):\n"
                                       << failures.str();
}

/// Converts a double tensor to float (for running the float oracle and the CPU op on the same data).
template <int R>
Tensor<float, R> to_float(const Tensor<double, R>& t) {
  Tensor<float, R> out(t.shape());
  for (std::int64_t i = 0; i < t.numel(); ++i) out.data()[i] = static_cast<float>(t.data()[i]);
  return out;
}

}  // namespace qlip::test
