/// @file rms_norm.hpp
/// @brief CPU RMSNorm over the last dimension: OpenMP over rows, SIMD float reduction per row.
///
/// y = x·rsqrt(mean(x²) + eps)·w, computed in float32 as Llama's LlamaRMSNorm does (its input is
/// upcast to fp32). Deterministic for a given thread count (one thread per row, fixed order).
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <cmath>
#include <cstdint>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/rms_norm.hpp"

namespace qlip::detail::cpu {
template <bool kUnit>
inline void rms_norm_row(const float* x, std::int64_t sx_, const float* w, std::int64_t sw_, float eps, float* y,
                         std::int64_t sy_, std::int64_t d) {
  const std::int64_t sx = kUnit ? 1 : sx_, sw = kUnit ? 1 : sw_, sy = kUnit ? 1 : sy_;
  float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
  for (std::int64_t j = 0; j < d; ++j) sq += x[j * sx] * x[j * sx];
  const float rstd = 1.0f / std::sqrt(sq / static_cast<float>(d) + eps);
  // HF order: weight · (x · rstd).
  for (std::int64_t j = 0; j < d; ++j) y[j * sy] = w[j * sw] * (x[j * sx] * rstd);
}
}  // namespace qlip::detail::cpu

namespace qlip::ops {

/// RMSNorm of each row. y may alias x (same view); any strides.
inline void rms_norm(cpu_backend,
                     HostView<const float, 2> x,       // [M, D]
                     HostView<const float, 1> weight,  // [D]
                     float eps,
                     HostView<float, 2> y) {           // [M, D]
  detail::check_rms_norm_args(x, weight, y);
  const std::int64_t m = x.size(0), d = x.size(1);
  const bool unit = x.stride(1) == 1 && y.stride(1) == 1 && weight.stride(0) == 1;
#pragma omp parallel for schedule(static) if (m * d >= 16384)
  for (std::int64_t i = 0; i < m; ++i) {
    const float* xr = x.data() + i * x.stride(0);
    float* yr = y.data() + i * y.stride(0);
    if (unit)
      detail::cpu::rms_norm_row<true>(xr, 1, weight.data(), 1, eps, yr, 1, d);
    else
      detail::cpu::rms_norm_row<false>(xr, x.stride(1), weight.data(), weight.stride(0), eps, yr, y.stride(1), d);
  }
}

}  // namespace qlip::ops
