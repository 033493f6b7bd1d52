/// @file activation.hpp
/// @brief CPU element-wise activations (GELU, quick-GELU, SiLU, tanh, SwiGLU gate): OpenMP over
///        rows, contiguous inner loops when the rows are dense.
///
/// Each evaluates the shared scalar formula of core/math.hpp, so results equal the reference
/// bit for bit (no reduction is involved).
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/math.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::detail::cpu {

/// e^x for float x without branches, so loops over it auto-vectorise (std::exp does not, unless
/// the build sets -fno-math-errno). Cody–Waite reduction x = n·ln2 + r, |r| ≤ ln2/2, then the
/// degree-6 minimax polynomial of Cephes' expf; error ≤ 2 ulp over the clamped range
/// [−87.3, 88.3] (inputs outside are clamped: e^x saturates at ~1.2e−38 / ~2.2e38, never inf/0,
/// which callers below rely on). NaN is not propagated. tests/cpu/test_fast_math.cpp checks it.
inline float exp_fast(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;      // ln2 split: high part exact in n·hi for |n| ≤ 128
  r = r - n * -2.12194440e-4f;         // low part
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const auto bits = static_cast<std::uint32_t>(static_cast<std::int32_t>(n) + 127) << 23;  // 2^n, n in [−126, 128)
  return p * std::bit_cast<float>(bits);
}

/// SiLU x·σ(x) = x / (1 + e^−x) through exp_fast: within a few ulp of math::silu (relative error
/// ≤ ~5e−7 where |silu(x)| ≥ 1e−30). Below x = −88 (true |silu| < 1e−36) x is clamped to −88, so the
/// result is ~−5e−37 rather than the exact tiny value or −0; NaN propagates.
/// Used by the fused SwiGLU of nn/encoder_layer.hpp; ops::silu/ops::swiglu stay on math::silu.
inline float silu_fast(float x) {
  x = std::max(x, -88.0f);
  return x / (1.0f + exp_fast(-x));
}

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
