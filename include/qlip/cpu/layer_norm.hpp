/// @file layer_norm.hpp
/// @brief CPU LayerNorm over the last dimension: inference and training forwards, and the backward.
///        OpenMP over rows (over column blocks for the parameter gradients), SIMD float reductions.
///
/// Same formulas as reference/layer_norm.hpp: y = (x − mean)/sqrt(var + eps)·gamma + beta with the
/// biased variance (torch.nn.LayerNorm, MODEL.md §2.3). Accumulates in float32 like PyTorch's CPU
/// kernel, with a two-pass variance so rows with a large mean do not cancel. layer_norm_train runs
/// the very row kernel of layer_norm, so its y equals layer_norm's bit for bit.
///
/// Backward contract (as the reference): dx written (=), dgamma and dbeta accumulated (+=), an
/// empty view skipped. Deterministic for any thread count: each row of dx is reduced by one thread,
/// and each column of dgamma/dbeta is summed over the rows in order by one thread.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <cmath>
#include <cstdint>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/layer_norm.hpp"

namespace qlip::detail::cpu {
/// One row; kUnit fixes every stride to 1 so the compiler emits contiguous SIMD loops. The row's
/// mean and rstd are also stored where mean_out / rstd_out point (training forward), after they are
/// computed, so the arithmetic is the same with or without them.
template <bool kUnit>
inline void layer_norm_row(const float* x, std::int64_t sx_, const float* gamma, std::int64_t sg_,
                           const float* beta, std::int64_t sb_, float eps, float* y, std::int64_t sy_,
                           std::int64_t d, float* mean_out = nullptr, float* rstd_out = nullptr) {
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
  if (mean_out != nullptr) *mean_out = mean;
  if (rstd_out != nullptr) *rstd_out = rstd;
  // Reads x[j] before writing y[j]: safe when y aliases x.
  for (std::int64_t j = 0; j < d; ++j) y[j * sy] = (x[j * sx] - mean) * rstd * gamma[j * sg] + beta[j * sb];
}

/// dx of one row from its saved mean and rstd (formula of reference::layer_norm_backward).
/// Reads dy[j] and x[j] before writing dx[j]: safe when dx aliases dy or x.
template <bool kUnit>
inline void layer_norm_backward_row(const float* x, std::int64_t sx_, const float* gamma, std::int64_t sg_,
                                    float mean, float rstd, const float* dy, std::int64_t sdy_, float* dx,
                                    std::int64_t sdx_, std::int64_t d) {
  const std::int64_t sx = kUnit ? 1 : sx_, sg = kUnit ? 1 : sg_, sdy = kUnit ? 1 : sdy_, sdx = kUnit ? 1 : sdx_;
  float sum_g = 0.0f, sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
  for (std::int64_t j = 0; j < d; ++j) {
    const float g = dy[j * sdy] * gamma[j * sg];
    sum_g += g;
    sum_gx += g * ((x[j * sx] - mean) * rstd);
  }
  const float mean_g = sum_g / static_cast<float>(d), mean_gx = sum_gx / static_cast<float>(d);
  for (std::int64_t j = 0; j < d; ++j) {
    const float g = dy[j * sdy] * gamma[j * sg];
    dx[j * sdx] = rstd * (g - mean_g - ((x[j * sx] - mean) * rstd) * mean_gx);
  }
}

/// Columns per block of the parameter-gradient pass: the per-column partial sums live on the stack.
inline constexpr std::int64_t kNormColumnBlock = 64;

/// dgamma[c0, c1) += Σ_i dy ⊙ x̂ and dbeta[c0, c1) += Σ_i dy (either may be null), c1 − c0 ≤
/// kNormColumnBlock. Rows in order, so the result does not depend on the thread count.
template <bool kUnit>
inline void layer_norm_param_grad_block(HostView<const float, 2> x, HostView<const float, 1> mean,
                                        HostView<const float, 1> rstd, HostView<const float, 2> dy,
                                        HostView<float, 1> dgamma, HostView<float, 1> dbeta, std::int64_t c0,
                                        std::int64_t c1) {
  const std::int64_t w = c1 - c0, sx = kUnit ? 1 : x.stride(1), sdy = kUnit ? 1 : dy.stride(1);
  float acc_g[kNormColumnBlock] = {}, acc_b[kNormColumnBlock] = {};
  for (std::int64_t i = 0; i < x.size(0); ++i) {
    const float mu = mean(i), r = rstd(i);
    const float* xr = x.data() + i * x.stride(0) + c0 * sx;
    const float* dyr = dy.data() + i * dy.stride(0) + c0 * sdy;
#pragma omp simd
    for (std::int64_t j = 0; j < w; ++j) {
      acc_g[j] += dyr[j * sdy] * ((xr[j * sx] - mu) * r);
      acc_b[j] += dyr[j * sdy];
    }
  }
  for (std::int64_t j = 0; j < w; ++j) {
    if (!dgamma.empty()) dgamma(c0 + j) += acc_g[j];
    if (!dbeta.empty()) dbeta(c0 + j) += acc_b[j];
  }
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

/// Training forward: y as layer_norm (bit for bit: the same row kernel), plus the per-row mean and
/// rstd = 1/sqrt(var + eps) that layer_norm_backward consumes. y must not overlap x (checked).
inline void layer_norm_train(cpu_backend,
                             HostView<const float, 2> x,      // [M, D]
                             HostView<const float, 1> gamma,  // [D]
                             HostView<const float, 1> beta,   // [D]
                             float eps,
                             HostView<float, 2> y,            // [M, D]
                             HostView<float, 1> mean,         // [M]
                             HostView<float, 1> rstd) {       // [M]
  detail::check_layer_norm_train_args(x, gamma, beta, y, mean, rstd);
  const std::int64_t m = x.size(0), d = x.size(1);
  const bool unit = x.stride(1) == 1 && y.stride(1) == 1 && gamma.stride(0) == 1 && beta.stride(0) == 1;
#pragma omp parallel for schedule(static) if (m * d >= 16384)
  for (std::int64_t i = 0; i < m; ++i) {
    const float* xr = x.data() + i * x.stride(0);
    float* yr = y.data() + i * y.stride(0);
    float* mu = mean.data() + i * mean.stride(0);
    float* rs = rstd.data() + i * rstd.stride(0);
    if (unit)
      detail::cpu::layer_norm_row<true>(xr, 1, gamma.data(), 1, beta.data(), 1, eps, yr, 1, d, mu, rs);
    else
      detail::cpu::layer_norm_row<false>(xr, x.stride(1), gamma.data(), gamma.stride(0), beta.data(), beta.stride(0),
                                         eps, yr, y.stride(1), d, mu, rs);
  }
}

/// Backward of layer_norm from layer_norm_train's mean and rstd (formulas: reference::layer_norm_backward).
/// The parameter gradients are reduced first, then dx, so dx may alias dy or x (same view); no
/// other overlap. Any strides.
inline void layer_norm_backward(cpu_backend,
                                HostView<const float, 2> x,      // [M, D] forward input
                                HostView<const float, 1> gamma,  // [D]
                                HostView<const float, 1> mean,   // [M] saved by layer_norm_train
                                HostView<const float, 1> rstd,   // [M] saved by layer_norm_train
                                HostView<const float, 2> dy,     // [M, D] upstream gradient
                                HostView<float, 2> dx,           // [M, D] written, or empty
                                HostView<float, 1> dgamma,       // [D] accumulated, or empty
                                HostView<float, 1> dbeta) {      // [D] accumulated, or empty
  detail::check_layer_norm_backward_args(x, gamma, mean, rstd, dy, dx, dgamma, dbeta);
  const std::int64_t m = x.size(0), d = x.size(1);
  const bool parallel = m * d >= 16384;  // below this the fork/join costs more than the work
  if (!dgamma.empty() || !dbeta.empty()) {
    const bool unit = x.stride(1) == 1 && dy.stride(1) == 1;
    const std::int64_t blocks = (d + detail::cpu::kNormColumnBlock - 1) / detail::cpu::kNormColumnBlock;
#pragma omp parallel for schedule(static) if (parallel)
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::int64_t c0 = b * detail::cpu::kNormColumnBlock;
      const std::int64_t c1 = c0 + detail::cpu::kNormColumnBlock < d ? c0 + detail::cpu::kNormColumnBlock : d;
      if (unit)
        detail::cpu::layer_norm_param_grad_block<true>(x, mean, rstd, dy, dgamma, dbeta, c0, c1);
      else
        detail::cpu::layer_norm_param_grad_block<false>(x, mean, rstd, dy, dgamma, dbeta, c0, c1);
    }
  }
  if (dx.empty()) return;
  const bool unit = x.stride(1) == 1 && dy.stride(1) == 1 && dx.stride(1) == 1 && gamma.stride(0) == 1;
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t i = 0; i < m; ++i) {
    const float* xr = x.data() + i * x.stride(0);
    const float* dyr = dy.data() + i * dy.stride(0);
    float* dxr = dx.data() + i * dx.stride(0);
    if (unit)
      detail::cpu::layer_norm_backward_row<true>(xr, 1, gamma.data(), 1, mean(i), rstd(i), dyr, 1, dxr, 1, d);
    else
      detail::cpu::layer_norm_backward_row<false>(xr, x.stride(1), gamma.data(), gamma.stride(0), mean(i), rstd(i),
                                                  dyr, dy.stride(1), dxr, dx.stride(1), d);
  }
}

}  // namespace qlip::ops
