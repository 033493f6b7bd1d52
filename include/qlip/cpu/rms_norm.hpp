/// @file rms_norm.hpp
/// @brief CPU RMSNorm over the last dimension: inference and training forwards, and the backward.
///        OpenMP over rows (over column blocks for the weight gradient), SIMD float reductions.
///
/// y = x·rsqrt(mean(x²) + eps)·w, computed in float32 as Llama's LlamaRMSNorm does (its input is
/// upcast to fp32; MODEL.md §8.1). rms_norm_train runs the very row kernel of rms_norm, so its y
/// equals rms_norm's bit for bit. Backward formulas and contract as reference/rms_norm.hpp: dx
/// written (=), dweight accumulated (+=), an empty view skipped. Deterministic for any thread
/// count: one thread per row of dx, one thread per column of dweight (rows summed in order).
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <cmath>
#include <cstdint>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/rms_norm.hpp"

namespace qlip::detail::cpu {
/// One row; kUnit fixes every stride to 1. rstd is also stored where rstd_out points (training
/// forward), after it is computed, so the arithmetic is the same with or without it.
template <bool kUnit>
inline void rms_norm_row(const float* x, std::int64_t sx_, const float* w, std::int64_t sw_, float eps, float* y,
                         std::int64_t sy_, std::int64_t d, float* rstd_out = nullptr) {
  const std::int64_t sx = kUnit ? 1 : sx_, sw = kUnit ? 1 : sw_, sy = kUnit ? 1 : sy_;
  float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
  for (std::int64_t j = 0; j < d; ++j) sq += x[j * sx] * x[j * sx];
  const float rstd = 1.0f / std::sqrt(sq / static_cast<float>(d) + eps);
  if (rstd_out != nullptr) *rstd_out = rstd;
  // HF order: weight · (x · rstd).
  for (std::int64_t j = 0; j < d; ++j) y[j * sy] = w[j * sw] * (x[j * sx] * rstd);
}

/// dx of one row from its saved rstd (formula of reference::rms_norm_backward). Reads dy[j] and
/// x[j] before writing dx[j]: safe when dx aliases dy or x.
template <bool kUnit>
inline void rms_norm_backward_row(const float* x, std::int64_t sx_, const float* w, std::int64_t sw_, float rstd,
                                  const float* dy, std::int64_t sdy_, float* dx, std::int64_t sdx_, std::int64_t d) {
  const std::int64_t sx = kUnit ? 1 : sx_, sw = kUnit ? 1 : sw_, sdy = kUnit ? 1 : sdy_, sdx = kUnit ? 1 : sdx_;
  float sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_gx)
  for (std::int64_t j = 0; j < d; ++j) sum_gx += dy[j * sdy] * w[j * sw] * (x[j * sx] * rstd);
  const float mean_gx = sum_gx / static_cast<float>(d);
  for (std::int64_t j = 0; j < d; ++j)
    dx[j * sdx] = rstd * (dy[j * sdy] * w[j * sw] - (x[j * sx] * rstd) * mean_gx);
}

/// Columns per block of the weight-gradient pass: the per-column partial sums live on the stack.
inline constexpr std::int64_t kRmsColumnBlock = 64;

/// dweight[c0, c1) += Σ_i dy ⊙ x̂, c1 − c0 ≤ kRmsColumnBlock; rows in order (thread-count independent).
template <bool kUnit>
inline void rms_norm_weight_grad_block(HostView<const float, 2> x, HostView<const float, 1> rstd,
                                       HostView<const float, 2> dy, HostView<float, 1> dweight, std::int64_t c0,
                                       std::int64_t c1) {
  const std::int64_t w = c1 - c0, sx = kUnit ? 1 : x.stride(1), sdy = kUnit ? 1 : dy.stride(1);
  float acc[kRmsColumnBlock] = {};
  for (std::int64_t i = 0; i < x.size(0); ++i) {
    const float r = rstd(i);
    const float* xr = x.data() + i * x.stride(0) + c0 * sx;
    const float* dyr = dy.data() + i * dy.stride(0) + c0 * sdy;
#pragma omp simd
    for (std::int64_t j = 0; j < w; ++j) acc[j] += dyr[j * sdy] * (xr[j * sx] * r);
  }
  for (std::int64_t j = 0; j < w; ++j) dweight(c0 + j) += acc[j];
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

/// Training forward: y as rms_norm (bit for bit: the same row kernel), plus the per-row
/// rstd = 1/sqrt(mean(x²) + eps) that rms_norm_backward consumes. y must not overlap x (checked).
inline void rms_norm_train(cpu_backend,
                           HostView<const float, 2> x,       // [M, D]
                           HostView<const float, 1> weight,  // [D]
                           float eps,
                           HostView<float, 2> y,             // [M, D]
                           HostView<float, 1> rstd) {        // [M]
  detail::check_rms_norm_train_args(x, weight, y, rstd);
  const std::int64_t m = x.size(0), d = x.size(1);
  const bool unit = x.stride(1) == 1 && y.stride(1) == 1 && weight.stride(0) == 1;
#pragma omp parallel for schedule(static) if (m * d >= 16384)
  for (std::int64_t i = 0; i < m; ++i) {
    const float* xr = x.data() + i * x.stride(0);
    float* yr = y.data() + i * y.stride(0);
    float* rs = rstd.data() + i * rstd.stride(0);
    if (unit)
      detail::cpu::rms_norm_row<true>(xr, 1, weight.data(), 1, eps, yr, 1, d, rs);
    else
      detail::cpu::rms_norm_row<false>(xr, x.stride(1), weight.data(), weight.stride(0), eps, yr, y.stride(1), d, rs);
  }
}

/// Backward of rms_norm from rms_norm_train's rstd (formulas: reference::rms_norm_backward).
/// dweight is reduced first, then dx, so dx may alias dy or x (same view); no other overlap.
inline void rms_norm_backward(cpu_backend,
                              HostView<const float, 2> x,       // [M, D] forward input
                              HostView<const float, 1> weight,  // [D]
                              HostView<const float, 1> rstd,    // [M] saved by rms_norm_train
                              HostView<const float, 2> dy,      // [M, D] upstream gradient
                              HostView<float, 2> dx,            // [M, D] written, or empty
                              HostView<float, 1> dweight) {     // [D] accumulated, or empty
  detail::check_rms_norm_backward_args(x, weight, rstd, dy, dx, dweight);
  const std::int64_t m = x.size(0), d = x.size(1);
  const bool parallel = m * d >= 16384;  // below this the fork/join costs more than the work
  if (!dweight.empty()) {
    const bool unit = x.stride(1) == 1 && dy.stride(1) == 1;
    const std::int64_t blocks = (d + detail::cpu::kRmsColumnBlock - 1) / detail::cpu::kRmsColumnBlock;
#pragma omp parallel for schedule(static) if (parallel)
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::int64_t c0 = b * detail::cpu::kRmsColumnBlock;
      const std::int64_t c1 = c0 + detail::cpu::kRmsColumnBlock < d ? c0 + detail::cpu::kRmsColumnBlock : d;
      if (unit)
        detail::cpu::rms_norm_weight_grad_block<true>(x, rstd, dy, dweight, c0, c1);
      else
        detail::cpu::rms_norm_weight_grad_block<false>(x, rstd, dy, dweight, c0, c1);
    }
  }
  if (dx.empty()) return;
  const bool unit = x.stride(1) == 1 && dy.stride(1) == 1 && dx.stride(1) == 1 && weight.stride(0) == 1;
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t i = 0; i < m; ++i) {
    const float* xr = x.data() + i * x.stride(0);
    const float* dyr = dy.data() + i * dy.stride(0);
    float* dxr = dx.data() + i * dx.stride(0);
    if (unit)
      detail::cpu::rms_norm_backward_row<true>(xr, 1, weight.data(), 1, rstd(i), dyr, 1, dxr, 1, d);
    else
      detail::cpu::rms_norm_backward_row<false>(xr, x.stride(1), weight.data(), weight.stride(0), rstd(i), dyr,
                                                dy.stride(1), dxr, dx.stride(1), d);
  }
}

}  // namespace qlip::ops
