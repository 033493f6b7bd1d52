/// @file softmax.hpp
/// @brief Reference row-wise softmax (max-subtracted; exp and sum in double) and its backward.
///
/// A row whose entries are all −inf gives NaN, as torch.softmax does; a row with at least one
/// finite entry is well defined (−inf entries become exactly 0, e.g. under a causal mask).
///
/// Backward, from the forward output y: dx = y ⊙ (dy − Σ_j y_j·dy_j) per row (written with =; an
/// empty dx is skipped). Entries with y = 0 (masked) get dx = 0.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::detail {
/// Checks x[M, N] → y[M, N]. Shared by every backend's softmax_rows.
template <class T, class M>
void check_softmax_rows_args(const TensorView<const T, 2, M>& x, const TensorView<T, 2, M>& y) {
  check_shape(y, {x.size(0), x.size(1)}, "softmax_rows output y");
}

/// Checks the backward: y[M, N], dy[M, N], dx[M, N] or empty.
template <class T, class M>
void check_softmax_rows_backward_args(const TensorView<const T, 2, M>& y, const TensorView<const T, 2, M>& dy,
                                      const TensorView<T, 2, M>& dx) {
  check_shape(dy, {y.size(0), y.size(1)}, "softmax_rows_backward: dy");
  if (!dx.empty()) check_shape(dx, {y.size(0), y.size(1)}, "softmax_rows_backward: dx");
}
}  // namespace qlip::detail

namespace qlip::reference {

/// y = softmax(x) along each row. y may alias x (same view); any strides.
/// T = float is the oracle of every backend; T = double is what finite differences differentiate.
/// @tparam T float or double
template <class T>
void softmax_rows(HostView<const T, 2> x,  // [M, N]
                  HostView<T, 2> y) {      // [M, N]
  detail::check_softmax_rows_args(x, y);
  const std::int64_t m = x.size(0), n = x.size(1);
  for (std::int64_t i = 0; i < m; ++i) {
    double mx = -std::numeric_limits<double>::infinity();
    for (std::int64_t j = 0; j < n; ++j) mx = std::fmax(mx, static_cast<double>(x(i, j)));
    double sum = 0.0;
    for (std::int64_t j = 0; j < n; ++j) sum += std::exp(static_cast<double>(x(i, j)) - mx);
    for (std::int64_t j = 0; j < n; ++j) y(i, j) = static_cast<T>(std::exp(static_cast<double>(x(i, j)) - mx) / sum);
  }
}

/// The float oracle, callable with mutable views (template deduction does not convert them).
inline void softmax_rows(HostView<const float, 2> x, HostView<float, 2> y) { softmax_rows<float>(x, y); }

/// Backward of softmax_rows from its output y (formula in the file comment), in double. Each row's
/// dot product finishes before its dx is written, so dx may alias y or dy (same view).
/// @tparam T float or double
template <class T>
void softmax_rows_backward(HostView<const T, 2> y,   // [M, N] forward output
                           HostView<const T, 2> dy,  // [M, N] upstream gradient
                           HostView<T, 2> dx) {      // [M, N] written, or empty
  detail::check_softmax_rows_backward_args(y, dy, dx);
  if (dx.empty()) return;
  const std::int64_t m = y.size(0), n = y.size(1);
  for (std::int64_t i = 0; i < m; ++i) {
    double dot = 0.0;
    for (std::int64_t j = 0; j < n; ++j) dot += static_cast<double>(y(i, j)) * static_cast<double>(dy(i, j));
    for (std::int64_t j = 0; j < n; ++j)
      dx(i, j) = static_cast<T>(static_cast<double>(y(i, j)) * (static_cast<double>(dy(i, j)) - dot));
  }
}

}  // namespace qlip::reference
