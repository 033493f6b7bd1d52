/// @file l2_norm.hpp
/// @brief Reference row-wise L2 normalisation, y = x / max(‖x‖₂, eps) (torch F.normalize, p=2), and
///        its backward.
///
/// Used for the BSQ input u (MODEL.md §2.6) and the CLIP embeddings (MODEL.md §2.9). Double accumulation,
/// deterministic.
///
/// Backward (dx written with =; an empty dx is skipped), per row with n = ‖x‖₂:
///   n > eps:  dx = (dy − y·(y·dy)) / n,  y = x / n
///   n ≤ eps:  dx = dy / eps   (the clamp is active; torch's clamp_min passes no gradient to the norm
///             at equality either)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::detail {
/// Checks x[M, D] → y[M, D]. Shared by every backend's l2_normalize_rows.
template <class T, class M>
void check_l2_normalize_rows_args(const TensorView<const T, 2, M>& x, const TensorView<T, 2, M>& y) {
  check_shape(y, {x.size(0), x.size(1)}, "l2_normalize_rows output y");
}

/// Checks the backward: x[M, D], dy[M, D], dx[M, D] or empty.
template <class T, class M>
void check_l2_normalize_rows_backward_args(const TensorView<const T, 2, M>& x, const TensorView<const T, 2, M>& dy,
                                           const TensorView<T, 2, M>& dx) {
  check_shape(dy, {x.size(0), x.size(1)}, "l2_normalize_rows_backward: dy");
  if (!dx.empty()) check_shape(dx, {x.size(0), x.size(1)}, "l2_normalize_rows_backward: dx");
}
}  // namespace qlip::detail

namespace qlip::reference {

/// Divides each row by max(its L2 norm, eps). y may alias x (same view); any strides.
/// T = float is the oracle of every backend; T = double is what finite differences differentiate.
/// @tparam T float or double
template <class T>
void l2_normalize_rows(HostView<const T, 2> x,  // [M, D]
                       HostView<T, 2> y,        // [M, D]
                       float eps = 1e-12f) {
  detail::check_l2_normalize_rows_args(x, y);
  const std::int64_t m = x.size(0), d = x.size(1);
  for (std::int64_t i = 0; i < m; ++i) {
    double sq = 0.0;
    for (std::int64_t j = 0; j < d; ++j) sq += static_cast<double>(x(i, j)) * static_cast<double>(x(i, j));
    // F.normalize divides by the clamped norm (it does not multiply by a reciprocal).
    const double denom = std::max(std::sqrt(sq), static_cast<double>(eps));
    for (std::int64_t j = 0; j < d; ++j) y(i, j) = static_cast<T>(static_cast<double>(x(i, j)) / denom);
  }
}

/// The float oracle, callable with mutable views (template deduction does not convert them).
inline void l2_normalize_rows(HostView<const float, 2> x, HostView<float, 2> y, float eps = 1e-12f) {
  l2_normalize_rows<float>(x, y, eps);
}

/// Backward of l2_normalize_rows (formulas in the file comment), recomputing the norm from x.
/// Each row's reductions finish before its dx is written, so dx may alias dy or x (same view).
/// @tparam T float or double
template <class T>
void l2_normalize_rows_backward(HostView<const T, 2> x,   // [M, D] forward input
                                HostView<const T, 2> dy,  // [M, D] upstream gradient
                                HostView<T, 2> dx,        // [M, D] written, or empty
                                float eps = 1e-12f) {
  detail::check_l2_normalize_rows_backward_args(x, dy, dx);
  if (dx.empty()) return;
  const std::int64_t m = x.size(0), d = x.size(1);
  for (std::int64_t i = 0; i < m; ++i) {
    double sq = 0.0, dot = 0.0;
    for (std::int64_t j = 0; j < d; ++j) {
      sq += static_cast<double>(x(i, j)) * static_cast<double>(x(i, j));
      dot += static_cast<double>(x(i, j)) * static_cast<double>(dy(i, j));
    }
    const double n = std::sqrt(sq);
    if (n > static_cast<double>(eps)) {
      const double proj = dot / sq;  // (y·dy)/n = (x·dy)/n²
      for (std::int64_t j = 0; j < d; ++j)
        dx(i, j) = static_cast<T>((static_cast<double>(dy(i, j)) - static_cast<double>(x(i, j)) * proj) / n);
    } else {
      for (std::int64_t j = 0; j < d; ++j)
        dx(i, j) = static_cast<T>(static_cast<double>(dy(i, j)) / static_cast<double>(eps));
    }
  }
}

}  // namespace qlip::reference
