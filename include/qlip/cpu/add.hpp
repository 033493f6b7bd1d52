/// @file add.hpp
/// @brief CPU y += x and y += a·x (formulas as reference/add.hpp): OpenMP over rows for large tensors.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <cstdint>

#include "qlip/core/backend.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/add.hpp"

namespace qlip::ops {

/// y += x. Any strides; y must not overlap x. Bit-identical to the reference (one float add each).
inline void add_inplace(cpu_backend, HostView<const float, 2> x, HostView<float, 2> y) {  // [M, N] += [M, N]
  detail::check_add_args(x, y);
  const std::int64_t m = x.size(0), n = x.size(1);
  const bool unit = x.stride(1) == 1 && y.stride(1) == 1;
#pragma omp parallel for schedule(static) if (m * n >= 65536)
  for (std::int64_t i = 0; i < m; ++i) {
    const float* xr = x.data() + i * x.stride(0);
    float* yr = y.data() + i * y.stride(0);
    if (unit) {
#pragma omp simd
      for (std::int64_t j = 0; j < n; ++j) yr[j] += xr[j];
    } else {
      for (std::int64_t j = 0; j < n; ++j) yr[j * y.stride(1)] += xr[j * x.stride(1)];
    }
  }
}

/// y += a·x (reference::axpy: in double, rounded once, so bit-identical). y must not overlap x.
inline void axpy(cpu_backend, double a, HostView<const float, 2> x, HostView<float, 2> y) {
  detail::check_add_args(x, y);
  const std::int64_t m = x.size(0), n = x.size(1);
#pragma omp parallel for schedule(static) if (m * n >= 65536)
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      float& yv = y.data()[i * y.stride(0) + j * y.stride(1)];
      yv = static_cast<float>(static_cast<double>(yv) + a * static_cast<double>(x.data()[i * x.stride(0) + j * x.stride(1)]));
    }
}

}  // namespace qlip::ops
