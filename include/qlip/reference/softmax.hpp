/// @file softmax.hpp
/// @brief Reference row-wise softmax (max-subtracted; exp and sum in double).
///
/// A row whose entries are all −inf gives NaN, as torch.softmax does; a row with at least one
/// finite entry is well defined (−inf entries become exactly 0, e.g. under a causal mask).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::detail {
/// Checks x[M, N] → y[M, N]. Shared by every backend's softmax_rows.
template <class M>
void check_softmax_rows_args(const TensorView<const float, 2, M>& x, const TensorView<float, 2, M>& y) {
  check_shape(y, {x.size(0), x.size(1)}, "softmax_rows output y");
}
}  // namespace qlip::detail

namespace qlip::reference {

/// y = softmax(x) along each row. y may alias x (same view); any strides.
inline void softmax_rows(HostView<const float, 2> x,  // [M, N]
                         HostView<float, 2> y) {      // [M, N]
  detail::check_softmax_rows_args(x, y);
  const std::int64_t m = x.size(0), n = x.size(1);
  for (std::int64_t i = 0; i < m; ++i) {
    double mx = -std::numeric_limits<double>::infinity();
    for (std::int64_t j = 0; j < n; ++j) mx = std::fmax(mx, static_cast<double>(x(i, j)));
    double sum = 0.0;
    for (std::int64_t j = 0; j < n; ++j) sum += std::exp(static_cast<double>(x(i, j)) - mx);
    for (std::int64_t j = 0; j < n; ++j)
      y(i, j) = static_cast<float>(std::exp(static_cast<double>(x(i, j)) - mx) / sum);
  }
}

}  // namespace qlip::reference
