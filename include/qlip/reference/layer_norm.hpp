/// @file layer_norm.hpp
/// @brief Reference LayerNorm over the last dimension (plain loops, double accumulation): the oracle
///        for every backend's layer_norm.
///
/// y = (x − mean) / sqrt(var + eps) · gamma + beta, var biased (÷D), as torch.nn.LayerNorm.
/// Deterministic: one sequential double-precision pass per row.
#pragma once

#include <cmath>
#include <cstdint>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::detail {
/// Checks x[M, D], gamma[D], beta[D] → y[M, D] with D > 0. Shared by every backend's layer_norm.
template <class M>
void check_layer_norm_args(const TensorView<const float, 2, M>& x, const TensorView<const float, 1, M>& gamma,
                           const TensorView<const float, 1, M>& beta, const TensorView<float, 2, M>& y) {
  const std::int64_t m = x.size(0), d = x.size(1);
  check_shape(y, {m, d}, "layer_norm output y");
  check_shape(gamma, {d}, "layer_norm gamma");
  check_shape(beta, {d}, "layer_norm beta");
  QLIP_CHECK(d > 0, "layer_norm needs a non-empty normalised dimension");
}
}  // namespace qlip::detail

namespace qlip::reference {

/// LayerNorm of each row. y may alias x (same view); any strides.
inline void layer_norm(HostView<const float, 2> x,      // [M, D]
                       HostView<const float, 1> gamma,  // [D]
                       HostView<const float, 1> beta,   // [D]
                       float eps,
                       HostView<float, 2> y) {          // [M, D]
  detail::check_layer_norm_args(x, gamma, beta, y);
  const std::int64_t m = x.size(0), d = x.size(1);
  for (std::int64_t i = 0; i < m; ++i) {
    double sum = 0.0;
    for (std::int64_t j = 0; j < d; ++j) sum += x(i, j);
    const double mean = sum / static_cast<double>(d);
    double sq = 0.0;  // two-pass variance: no cancellation for rows with a large mean
    for (std::int64_t j = 0; j < d; ++j) {
      const double c = static_cast<double>(x(i, j)) - mean;
      sq += c * c;
    }
    const double rstd = 1.0 / std::sqrt(sq / static_cast<double>(d) + static_cast<double>(eps));
    for (std::int64_t j = 0; j < d; ++j) {
      const double v = (static_cast<double>(x(i, j)) - mean) * rstd * gamma(j) + beta(j);
      y(i, j) = static_cast<float>(v);
    }
  }
}

}  // namespace qlip::reference
