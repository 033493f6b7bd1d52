/// @file rms_norm.hpp
/// @brief Reference RMSNorm over the last dimension (plain loops, double accumulation).
///
/// y = x / sqrt(mean(x²) + eps) · w — eps inside the square root, as Llama's LlamaRMSNorm (which
/// computes in fp32; this oracle computes in double). Deterministic.
#pragma once

#include <cmath>
#include <cstdint>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::detail {
/// Checks x[M, D], weight[D] → y[M, D] with D > 0. Shared by every backend's rms_norm.
template <class M>
void check_rms_norm_args(const TensorView<const float, 2, M>& x, const TensorView<const float, 1, M>& weight,
                         const TensorView<float, 2, M>& y) {
  const std::int64_t m = x.size(0), d = x.size(1);
  check_shape(y, {m, d}, "rms_norm output y");
  check_shape(weight, {d}, "rms_norm weight");
  QLIP_CHECK(d > 0, "rms_norm needs a non-empty normalised dimension");
}
}  // namespace qlip::detail

namespace qlip::reference {

/// RMSNorm of each row. y may alias x (same view); any strides.
inline void rms_norm(HostView<const float, 2> x,       // [M, D]
                     HostView<const float, 1> weight,  // [D]
                     float eps,
                     HostView<float, 2> y) {           // [M, D]
  detail::check_rms_norm_args(x, weight, y);
  const std::int64_t m = x.size(0), d = x.size(1);
  for (std::int64_t i = 0; i < m; ++i) {
    double sq = 0.0;
    for (std::int64_t j = 0; j < d; ++j) sq += static_cast<double>(x(i, j)) * x(i, j);
    const double rstd = 1.0 / std::sqrt(sq / static_cast<double>(d) + static_cast<double>(eps));
    for (std::int64_t j = 0; j < d; ++j) y(i, j) = static_cast<float>(x(i, j) * rstd * weight(j));
  }
}

}  // namespace qlip::reference
