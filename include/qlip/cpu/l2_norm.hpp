/// @file l2_norm.hpp
/// @brief CPU row-wise L2 normalisation, y = x / max(‖x‖₂, eps) (F.normalize): OpenMP over rows,
///        SIMD float reduction per row. Deterministic for a given thread count.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/l2_norm.hpp"

namespace qlip::detail::cpu {
template <bool kUnit>
inline void l2_normalize_row(const float* x, std::int64_t sx_, float* y, std::int64_t sy_, std::int64_t d,
                             float eps) {
  const std::int64_t sx = kUnit ? 1 : sx_, sy = kUnit ? 1 : sy_;
  float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
  for (std::int64_t j = 0; j < d; ++j) sq += x[j * sx] * x[j * sx];
  // F.normalize divides by the clamped norm rather than multiplying by its reciprocal.
  const float denom = std::max(std::sqrt(sq), eps);
  for (std::int64_t j = 0; j < d; ++j) y[j * sy] = x[j * sx] / denom;
}
}  // namespace qlip::detail::cpu

namespace qlip::ops {

/// Divides each row by max(its L2 norm, eps). y may alias x (same view); any strides.
inline void l2_normalize_rows(cpu_backend,
                              HostView<const float, 2> x,  // [M, D]
                              HostView<float, 2> y,        // [M, D]
                              float eps = 1e-12f) {
  detail::check_l2_normalize_rows_args(x, y);
  const std::int64_t m = x.size(0), d = x.size(1);
  const bool unit = x.stride(1) == 1 && y.stride(1) == 1;
#pragma omp parallel for schedule(static) if (m * d >= 16384)
  for (std::int64_t i = 0; i < m; ++i) {
    const float* xr = x.data() + i * x.stride(0);
    float* yr = y.data() + i * y.stride(0);
    if (unit)
      detail::cpu::l2_normalize_row<true>(xr, 1, yr, 1, d, eps);
    else
      detail::cpu::l2_normalize_row<false>(xr, x.stride(1), yr, y.stride(1), d, eps);
  }
}

}  // namespace qlip::ops
