/// @file activation.hpp
/// @brief CPU element-wise activations (GELU, quick-GELU, SiLU, tanh, SwiGLU gate): OpenMP over
///        rows, contiguous inner loops when the rows are dense.
///
/// Each evaluates the shared scalar formula of core/math.hpp, so results equal the reference
/// bit for bit (no reduction is involved).
#pragma once

#include <cmath>
#include <cstdint>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/math.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::detail::cpu {
/// y(i, j) = f(x(i, j)); y may alias x (same view).
template <class F>
void activation_map_rows(HostView<const float, 2> x, HostView<float, 2> y, const char* what, F f) {
  const std::int64_t m = x.size(0), n = x.size(1);
  check_shape(y, {m, n}, what);
  const std::int64_t sx = x.stride(1), sy = y.stride(1);
  const bool unit = sx == 1 && sy == 1;
#pragma omp parallel for schedule(static) if (m * n >= 8192)
  for (std::int64_t i = 0; i < m; ++i) {
    const float* xr = x.data() + i * x.stride(0);
    float* yr = y.data() + i * y.stride(0);
    if (unit) {
      for (std::int64_t j = 0; j < n; ++j) yr[j] = f(xr[j]);
    } else {
      for (std::int64_t j = 0; j < n; ++j) yr[j * sy] = f(xr[j * sx]);
    }
  }
}
}  // namespace qlip::detail::cpu

namespace qlip::ops {

/// Exact (erf) GELU. y may alias x.
inline void gelu(cpu_backend, HostView<const float, 2> x, HostView<float, 2> y) {  // [M, N] -> [M, N]
  detail::cpu::activation_map_rows(x, y, "gelu output y", [](float v) { return math::gelu(v); });
}

/// quick-GELU x·σ(1.702x). y may alias x.
inline void quick_gelu(cpu_backend, HostView<const float, 2> x, HostView<float, 2> y) {  // [M, N] -> [M, N]
  detail::cpu::activation_map_rows(x, y, "quick_gelu output y", [](float v) { return math::quick_gelu(v); });
}

/// SiLU x·σ(x). y may alias x.
inline void silu(cpu_backend, HostView<const float, 2> x, HostView<float, 2> y) {  // [M, N] -> [M, N]
  detail::cpu::activation_map_rows(x, y, "silu output y", [](float v) { return math::silu(v); });
}

/// tanh. y may alias x.
inline void tanh_act(cpu_backend, HostView<const float, 2> x, HostView<float, 2> y) {  // [M, N] -> [M, N]
  detail::cpu::activation_map_rows(x, y, "tanh_act output y", [](float v) { return std::tanh(v); });
}

/// SwiGLU gate y = silu(gate) ⊙ lin (w1 = gated branch). y may alias gate or lin (same view).
inline void swiglu(cpu_backend,
                   HostView<const float, 2> gate,  // [M, I]
                   HostView<const float, 2> lin,   // [M, I]
                   HostView<float, 2> y) {         // [M, I]
  const std::int64_t m = gate.size(0), n = gate.size(1);
  check_shape(lin, {m, n}, "swiglu linear branch lin");
  check_shape(y, {m, n}, "swiglu output y");
  const std::int64_t sg = gate.stride(1), sl = lin.stride(1), sy = y.stride(1);
  const bool unit = sg == 1 && sl == 1 && sy == 1;
#pragma omp parallel for schedule(static) if (m * n >= 8192)
  for (std::int64_t i = 0; i < m; ++i) {
    const float* gr = gate.data() + i * gate.stride(0);
    const float* lr = lin.data() + i * lin.stride(0);
    float* yr = y.data() + i * y.stride(0);
    if (unit) {
      for (std::int64_t j = 0; j < n; ++j) yr[j] = math::silu(gr[j]) * lr[j];
    } else {
      for (std::int64_t j = 0; j < n; ++j) yr[j * sy] = math::silu(gr[j * sg]) * lr[j * sl];
    }
  }
}

}  // namespace qlip::ops
