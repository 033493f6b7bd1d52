/// @file softmax.hpp
/// @brief CPU row-wise softmax in float32 (max-subtracted) and its backward: OpenMP over rows, SIMD
///        reductions.
///
/// y = exp(x − max)·(1/Σ exp(x − max)), the order of PyTorch's CPU kernel. A row of all −inf gives
/// NaN (as torch). Backward from y: dx = y ⊙ (dy − Σ_j y_j·dy_j) (reference/softmax.hpp; dx written
/// with =, an empty dx skipped). Deterministic for a given thread count (one thread per row, fixed order).
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/softmax.hpp"

namespace qlip::detail::cpu {
template <bool kUnit>
inline void softmax_row(const float* x, std::int64_t sx_, float* y, std::int64_t sy_, std::int64_t n) {
  const std::int64_t sx = kUnit ? 1 : sx_, sy = kUnit ? 1 : sy_;
  float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
  for (std::int64_t j = 0; j < n; ++j) mx = std::max(mx, x[j * sx]);
  float sum = 0.0f;
  // Writes y[j] only after every x has been read for the max: safe when y aliases x.
  for (std::int64_t j = 0; j < n; ++j) {
    const float e = std::exp(x[j * sx] - mx);
    y[j * sy] = e;
    sum += e;
  }
  const float inv = 1.0f / sum;
  for (std::int64_t j = 0; j < n; ++j) y[j * sy] *= inv;
}

/// dx of one row; the dot product finishes before dx is written (safe when dx aliases y or dy).
template <bool kUnit>
inline void softmax_backward_row(const float* y, std::int64_t sy_, const float* dy, std::int64_t sdy_, float* dx,
                                 std::int64_t sdx_, std::int64_t n) {
  const std::int64_t sy = kUnit ? 1 : sy_, sdy = kUnit ? 1 : sdy_, sdx = kUnit ? 1 : sdx_;
  float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
  for (std::int64_t j = 0; j < n; ++j) dot += y[j * sy] * dy[j * sdy];
  for (std::int64_t j = 0; j < n; ++j) dx[j * sdx] = y[j * sy] * (dy[j * sdy] - dot);
}
}  // namespace qlip::detail::cpu

namespace qlip::ops {

/// y = softmax(x) along each row. y may alias x (same view); any strides.
inline void softmax_rows(cpu_backend,
                         HostView<const float, 2> x,  // [M, N]
                         HostView<float, 2> y) {      // [M, N]
  detail::check_softmax_rows_args(x, y);
  const std::int64_t m = x.size(0), n = x.size(1);
  const bool unit = x.stride(1) == 1 && y.stride(1) == 1;
#pragma omp parallel for schedule(static) if (m * n >= 16384)
  for (std::int64_t i = 0; i < m; ++i) {
    const float* xr = x.data() + i * x.stride(0);
    float* yr = y.data() + i * y.stride(0);
    if (unit)
      detail::cpu::softmax_row<true>(xr, 1, yr, 1, n);
    else
      detail::cpu::softmax_row<false>(xr, x.stride(1), yr, y.stride(1), n);
  }
}

/// Backward of softmax_rows from its output y: dx = y ⊙ (dy − Σ_j y_j·dy_j). dx may alias y or dy
/// (same view); any strides.
inline void softmax_rows_backward(cpu_backend,
                                  HostView<const float, 2> y,   // [M, N] forward output
                                  HostView<const float, 2> dy,  // [M, N] upstream gradient
                                  HostView<float, 2> dx) {      // [M, N] written, or empty
  detail::check_softmax_rows_backward_args(y, dy, dx);
  if (dx.empty()) return;
  const std::int64_t m = y.size(0), n = y.size(1);
  const bool unit = y.stride(1) == 1 && dy.stride(1) == 1 && dx.stride(1) == 1;
#pragma omp parallel for schedule(static) if (m * n >= 16384)
  for (std::int64_t i = 0; i < m; ++i) {
    const float* yr = y.data() + i * y.stride(0);
    const float* dyr = dy.data() + i * dy.stride(0);
    float* dxr = dx.data() + i * dx.stride(0);
    if (unit)
      detail::cpu::softmax_backward_row<true>(yr, 1, dyr, 1, dxr, 1, n);
    else
      detail::cpu::softmax_backward_row<false>(yr, y.stride(1), dyr, dy.stride(1), dxr, dx.stride(1), n);
  }
}

}  // namespace qlip::ops
