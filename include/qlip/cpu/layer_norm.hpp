/// @file layer_norm.hpp
/// @brief CPU LayerNorm over the last dimension: OpenMP over rows, SIMD float reductions per row.
///
/// Same formula as reference/layer_norm.hpp: y = (x − mean)/sqrt(var + eps)·gamma + beta with the
/// biased variance (torch.nn.LayerNorm). Accumulates in float32 like PyTorch's CPU kernel, with a
/// two-pass variance so rows with a large mean do not cancel. Deterministic for a given thread
/// count: each row is reduced by one thread in a fixed (vectorised) order.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <cmath>
#include <cstdint>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/layer_norm.hpp"

namespace qlip::detail::cpu {
/// One row; kUnit fixes every stride to 1 so the compiler emits contiguous SIMD loops.
template <bool kUnit>
inline void layer_norm_row(const float* x, std::int64_t sx_, const float* gamma, std::int64_t sg_,
                           const float* beta, std::int64_t sb_, float eps, float* y, std::int64_t sy_,
                           std::int64_t d) {
  const std::int64_t sx = kUnit ? 1 : sx_, sg = kUnit ? 1 : sg_, sb = kUnit ? 1 : sb_, sy = kUnit ? 1 : sy_;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (std::int64_t j = 0; j < d; ++j) sum += x[j * sx];
  const float mean = sum / static_cast<float>(d);
  float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
  for (std::int64_t j = 0; j < d; ++j) {
    const float c = x[j * sx] - mean;
    sq += c * c;
  }
  const float rstd = 1.0f / std::sqrt(sq / static_cast<float>(d) + eps);
  // Reads x[j] before writing y[j]: safe when y aliases x.
  for (std::int64_t j = 0; j < d; ++j) y[j * sy] = (x[j * sx] - mean) * rstd * gamma[j * sg] + beta[j * sb];
}
}  // namespace qlip::detail::cpu

namespace qlip::ops {

/// LayerNorm of each row (torch semantics). y may alias x (same view); any strides.
inline void layer_norm(cpu_backend,
                       HostView<const float, 2> x,      // [M, D]
                       HostView<const float, 1> gamma,  // [D]
                       HostView<const float, 1> beta,   // [D]
                       float eps,
                       HostView<float, 2> y) {          // [M, D]
  detail::check_layer_norm_args(x, gamma, beta, y);
  const std::int64_t m = x.size(0), d = x.size(1);
  const bool unit = x.stride(1) == 1 && y.stride(1) == 1 && gamma.stride(0) == 1 && beta.stride(0) == 1;
  // Below ~16k elements the fork/join costs more than the work.
#pragma omp parallel for schedule(static) if (m * d >= 16384)
  for (std::int64_t i = 0; i < m; ++i) {
    const float* xr = x.data() + i * x.stride(0);
    float* yr = y.data() + i * y.stride(0);
    if (unit)
      detail::cpu::layer_norm_row<true>(xr, 1, gamma.data(), 1, beta.data(), 1, eps, yr, 1, d);
    else
      detail::cpu::layer_norm_row<false>(xr, x.stride(1), gamma.data(), gamma.stride(0), beta.data(), beta.stride(0),
                                    eps, yr, y.stride(1), d);
  }
}

}  // namespace qlip::ops
