/// @file mse_loss.hpp
/// @brief CPU mean-squared-error loss (formula, contract and checks as reference/mse_loss.hpp):
///        L = (1/N)·Σ (x̂ − x)², dx̂ = dloss·2(x̂ − x)/N (=).
///
/// The sum is taken in double over a fixed number of chunks of the row-major element order (one
/// OpenMP task each), then the chunk sums are added in order: the result does not depend on the
/// thread count, and nothing is allocated.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <algorithm>
#include <cstdint>

#include "qlip/core/backend.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/mse_loss.hpp"

namespace qlip {
namespace detail::cpu {
/// Chunks of the element range summed independently (fixed, so the order of the double sum is too).
inline constexpr int kMseChunks = 64;
}  // namespace detail::cpu

namespace ops {

/// L = (1/N)·Σ (x̂ − x)² in double.
/// @param x_hat [M, D] prediction (any strides)
/// @param x     [M, D] target
inline double mse_loss(cpu_backend, HostView<const float, 2> x_hat, HostView<const float, 2> x) {
  detail::check_mse_loss_args(x_hat, x, "mse_loss");
  const std::int64_t d = x_hat.size(1), n = x_hat.numel();
  double partial[detail::cpu::kMseChunks];
#pragma omp parallel for schedule(static) if (n >= 65536)
  for (int c = 0; c < detail::cpu::kMseChunks; ++c) {
    const std::int64_t e0 = n * c / detail::cpu::kMseChunks, e1 = n * (c + 1) / detail::cpu::kMseChunks;
    double acc = 0.0;
    for (std::int64_t e = e0; e < e1;) {  // walk [e0, e1) one row segment at a time
      const std::int64_t i = e / d, j0 = e % d, j1 = std::min<std::int64_t>(d, j0 + (e1 - e));
      const float* xh = x_hat.data() + i * x_hat.stride(0);
      const float* xr = x.data() + i * x.stride(0);
      for (std::int64_t j = j0; j < j1; ++j) {
        const double diff = static_cast<double>(xh[j * x_hat.stride(1)]) - static_cast<double>(xr[j * x.stride(1)]);
        acc += diff * diff;
      }
      e += j1 - j0;
    }
    partial[c] = acc;
  }
  double sum = 0.0;
  for (double p : partial) sum += p;
  return sum / static_cast<double>(n);
}

/// dx̂ = dloss·2(x̂ − x)/N (=); an empty dx_hat is skipped. dx_hat may alias neither input.
/// @param x_hat  [M, D] the forward prediction
/// @param x      [M, D] the forward target
/// @param dloss  upstream gradient of the scalar loss
/// @param dx_hat [M, D] written, or empty
inline void mse_loss_backward(cpu_backend, HostView<const float, 2> x_hat, HostView<const float, 2> x, double dloss,
                              HostView<float, 2> dx_hat) {
  detail::check_mse_loss_backward_args(x_hat, x, dx_hat);
  if (dx_hat.empty()) return;
  const std::int64_t m = x_hat.size(0), d = x_hat.size(1);
  const double k = 2.0 * dloss / static_cast<double>(x_hat.numel());
#pragma omp parallel for schedule(static) if (m * d >= 65536)
  for (std::int64_t i = 0; i < m; ++i) {
    const float* xh = x_hat.data() + i * x_hat.stride(0);
    const float* xr = x.data() + i * x.stride(0);
    float* g = dx_hat.data() + i * dx_hat.stride(0);
    for (std::int64_t j = 0; j < d; ++j)
      g[j * dx_hat.stride(1)] = static_cast<float>(
          k * (static_cast<double>(xh[j * x_hat.stride(1)]) - static_cast<double>(xr[j * x.stride(1)])));
  }
}

}  // namespace ops
}  // namespace qlip
