/// @file l2_norm.hpp
/// @brief CPU row-wise L2 normalisation, y = x / max(‖x‖₂, eps) (F.normalize), and its backward:
///        OpenMP over rows, SIMD float reductions per row. Deterministic for a given thread count.
///
/// Backward formulas and contract as reference/l2_norm.hpp (dx written with =, the clamped branch
/// ‖x‖ ≤ eps gives dy/eps).
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

/// dx of one row (formula of reference::l2_normalize_rows_backward). Both reductions finish before
/// dx is written: safe when dx aliases dy or x.
template <bool kUnit>
inline void l2_normalize_backward_row(const float* x, std::int64_t sx_, const float* dy, std::int64_t sdy_, float* dx,
                                      std::int64_t sdx_, std::int64_t d, float eps) {
  const std::int64_t sx = kUnit ? 1 : sx_, sdy = kUnit ? 1 : sdy_, sdx = kUnit ? 1 : sdx_;
  float sq = 0.0f, dot = 0.0f;
#pragma omp simd reduction(+ : sq, dot)
  for (std::int64_t j = 0; j < d; ++j) {
    sq += x[j * sx] * x[j * sx];
    dot += x[j * sx] * dy[j * sdy];
  }
  const float n = std::sqrt(sq);
  if (n > eps) {
    const float inv = 1.0f / n, proj = dot / sq;
    for (std::int64_t j = 0; j < d; ++j) dx[j * sdx] = (dy[j * sdy] - x[j * sx] * proj) * inv;
  } else {
    for (std::int64_t j = 0; j < d; ++j) dx[j * sdx] = dy[j * sdy] / eps;
  }
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

/// Backward of l2_normalize_rows, recomputing the norm from x (formulas: reference/l2_norm.hpp).
/// dx may alias dy or x (same view); any strides.
inline void l2_normalize_rows_backward(cpu_backend,
                                       HostView<const float, 2> x,   // [M, D] forward input
                                       HostView<const float, 2> dy,  // [M, D] upstream gradient
                                       HostView<float, 2> dx,        // [M, D] written, or empty
                                       float eps = 1e-12f) {
  detail::check_l2_normalize_rows_backward_args(x, dy, dx);
  if (dx.empty()) return;
  const std::int64_t m = x.size(0), d = x.size(1);
  const bool unit = x.stride(1) == 1 && dy.stride(1) == 1 && dx.stride(1) == 1;
#pragma omp parallel for schedule(static) if (m * d >= 16384)
  for (std::int64_t i = 0; i < m; ++i) {
    const float* xr = x.data() + i * x.stride(0);
    const float* dyr = dy.data() + i * dy.stride(0);
    float* dxr = dx.data() + i * dx.stride(0);
    if (unit)
      detail::cpu::l2_normalize_backward_row<true>(xr, 1, dyr, 1, dxr, 1, d, eps);
    else
      detail::cpu::l2_normalize_backward_row<false>(xr, x.stride(1), dyr, dy.stride(1), dxr, dx.stride(1), d, eps);
  }
}

}  // namespace qlip::ops
