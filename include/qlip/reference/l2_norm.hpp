/// @file l2_norm.hpp
/// @brief Reference row-wise L2 normalisation, y = x / max(‖x‖₂, eps) (torch F.normalize, p=2).
///
/// Used for the BSQ input u (MODEL.md §2.6) and the CLIP embeddings (MODEL.md §2.9). Double accumulation,
/// deterministic.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::detail {
/// Checks x[M, D] → y[M, D]. Shared by every backend's l2_normalize_rows.
template <class M>
void check_l2_normalize_rows_args(const TensorView<const float, 2, M>& x, const TensorView<float, 2, M>& y) {
  check_shape(y, {x.size(0), x.size(1)}, "l2_normalize_rows output y");
}
}  // namespace qlip::detail

namespace qlip::reference {

/// Divides each row by max(its L2 norm, eps). y may alias x (same view); any strides.
inline void l2_normalize_rows(HostView<const float, 2> x,  // [M, D]
                              HostView<float, 2> y,        // [M, D]
                              float eps = 1e-12f) {
  detail::check_l2_normalize_rows_args(x, y);
  const std::int64_t m = x.size(0), d = x.size(1);
  for (std::int64_t i = 0; i < m; ++i) {
    double sq = 0.0;
    for (std::int64_t j = 0; j < d; ++j) sq += static_cast<double>(x(i, j)) * x(i, j);
    // F.normalize divides by the clamped norm (it does not multiply by a reciprocal).
    const double denom = std::max(std::sqrt(sq), static_cast<double>(eps));
    for (std::int64_t j = 0; j < d; ++j) y(i, j) = static_cast<float>(x(i, j) / denom);
  }
}

}  // namespace qlip::reference
