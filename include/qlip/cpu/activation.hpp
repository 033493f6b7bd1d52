/// @file activation.hpp
/// @brief CPU element-wise activations (GELU, quick-GELU, SiLU, tanh, SwiGLU gate) and their
///        backwards: OpenMP over rows, contiguous inner loops when the rows are dense.
///
/// Each forward evaluates the shared scalar formula of core/math.hpp, so results equal the reference
/// bit for bit (no reduction is involved). The backwards use the derivatives of
/// reference/activation.hpp in float: the sigmoid-based ones (SiLU, quick-GELU, SwiGLU) through the
/// branch-free exp_fast so their loops vectorise, GELU through math::gelu_grad, tanh through
/// std::tanh. They agree with the double-accumulating reference to fp32 element-wise tolerance.
/// Backward contract: dx (dgate, dlin) written (=); an empty view skipped.
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
#include "qlip/reference/activation.hpp"  // the argument checks shared by every backend

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

/// d/dz [z·σ(z)] = σ(z)·(1 + z·σ(−z)) with σ(−z) = e^−z·σ(z) (no 1 − σ cancellation) and e^−z
/// from exp_fast, whose clamping keeps every intermediate finite: for z ≪ 0 the result is a tiny
/// ~−z·1e−39 instead of the exact ~−z·e^z, for z ≫ 0 exactly 1. Also the quick-GELU derivative at
/// z = 1.702x (reference/activation.hpp).
inline float silu_grad_fast(float z) {
  const float e = exp_fast(-z);
  const float s = 1.0f / (1.0f + e);
  return s * (1.0f + z * (e * s));
}

/// dx(i, j) = dy(i, j)·g(x(i, j)); dx may alias x or dy (same view). Arguments already checked.
template <class G>
void activation_backward_rows(HostView<const float, 2> x, HostView<const float, 2> dy, HostView<float, 2> dx, G g) {
  const std::int64_t m = x.size(0), n = x.size(1);
  const std::int64_t sx = x.stride(1), sdy = dy.stride(1), sdx = dx.stride(1);
  const bool unit = sx == 1 && sdy == 1 && sdx == 1;
#pragma omp parallel for schedule(static) if (m * n >= 8192)
  for (std::int64_t i = 0; i < m; ++i) {
    const float* xr = x.data() + i * x.stride(0);
    const float* dyr = dy.data() + i * dy.stride(0);
    float* dxr = dx.data() + i * dx.stride(0);
    if (unit) {
      for (std::int64_t j = 0; j < n; ++j) dxr[j] = dyr[j] * g(xr[j]);
    } else {
      for (std::int64_t j = 0; j < n; ++j) dxr[j * sdx] = dyr[j * sdy] * g(xr[j * sx]);
    }
  }
}

/// One row of the SwiGLU backward; a null dg or dl skips that output. All three inputs of an
/// element are read before its outputs are written (safe under same-view aliasing).
template <bool kUnit>
inline void swiglu_backward_row(const float* g, std::int64_t sg_, const float* l, std::int64_t sl_, const float* d,
                                std::int64_t sd_, float* dg, std::int64_t sdg_, float* dl, std::int64_t sdl_,
                                std::int64_t n) {
  const std::int64_t sg = kUnit ? 1 : sg_, sl = kUnit ? 1 : sl_, sd = kUnit ? 1 : sd_;
  const std::int64_t sdg = kUnit ? 1 : sdg_, sdl = kUnit ? 1 : sdl_;
  for (std::int64_t j = 0; j < n; ++j) {
    const float gv = g[j * sg], lv = l[j * sl], dv = d[j * sd];
    const float e = exp_fast(-gv);
    const float s = 1.0f / (1.0f + e);  // σ(gate); e·s = σ(−gate)
    if (dg != nullptr) dg[j * sdg] = dv * lv * (s * (1.0f + gv * (e * s)));
    if (dl != nullptr) dl[j * sdl] = dv * (gv * s);
  }
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

/// Backward of gelu: dx = dy ⊙ gelu'(x) (math::gelu_grad). dx may alias x or dy (same view).
inline void gelu_backward(cpu_backend,
                          HostView<const float, 2> x,   // [M, N] pre-activation input
                          HostView<const float, 2> dy,  // [M, N] upstream gradient
                          HostView<float, 2> dx) {      // [M, N] written, or empty
  detail::check_activation_backward_args(x, dy, dx, "gelu_backward");
  if (dx.empty()) return;
  detail::cpu::activation_backward_rows(x, dy, dx, [](float v) { return math::gelu_grad(v); });
}

/// Backward of quick_gelu: dx = dy ⊙ silu'(1.702x). dx may alias x or dy (same view).
inline void quick_gelu_backward(cpu_backend,
                                HostView<const float, 2> x,   // [M, N] pre-activation input
                                HostView<const float, 2> dy,  // [M, N] upstream gradient
                                HostView<float, 2> dx) {      // [M, N] written, or empty
  detail::check_activation_backward_args(x, dy, dx, "quick_gelu_backward");
  if (dx.empty()) return;
  detail::cpu::activation_backward_rows(x, dy, dx, [](float v) { return detail::cpu::silu_grad_fast(1.702f * v); });
}

/// Leaky ReLU with a gain (formula as reference::leaky_relu, the same float expression). y may alias x.
inline void leaky_relu(cpu_backend, HostView<const float, 2> x, HostView<float, 2> y, double slope, double gain) {
  const float g = static_cast<float>(gain), gs = static_cast<float>(gain * slope);
  detail::cpu::activation_map_rows(x, y, "leaky_relu output y", [=](float v) { return v > 0.0f ? g * v : gs * v; });
}

/// Backward of leaky_relu: dx = dy·(x > 0 ? gain : gain·slope). dx may alias x or dy (same view).
inline void leaky_relu_backward(cpu_backend, HostView<const float, 2> x, HostView<const float, 2> dy,
                                HostView<float, 2> dx, double slope, double gain) {
  detail::check_activation_backward_args(x, dy, dx, "leaky_relu_backward");
  if (dx.empty()) return;
  const float g = static_cast<float>(gain), gs = static_cast<float>(gain * slope);
  detail::cpu::activation_backward_rows(x, dy, dx, [=](float v) { return v > 0.0f ? g : gs; });
}

/// Backward of silu: dx = dy ⊙ silu'(x). dx may alias x or dy (same view).
inline void silu_backward(cpu_backend,
                          HostView<const float, 2> x,   // [M, N] pre-activation input
                          HostView<const float, 2> dy,  // [M, N] upstream gradient
                          HostView<float, 2> dx) {      // [M, N] written, or empty
  detail::check_activation_backward_args(x, dy, dx, "silu_backward");
  if (dx.empty()) return;
  detail::cpu::activation_backward_rows(x, dy, dx, [](float v) { return detail::cpu::silu_grad_fast(v); });
}

/// Backward of tanh_act: dx = dy ⊙ (1 − tanh²(x)). dx may alias x or dy (same view).
inline void tanh_act_backward(cpu_backend,
                              HostView<const float, 2> x,   // [M, N] pre-activation input
                              HostView<const float, 2> dy,  // [M, N] upstream gradient
                              HostView<float, 2> dx) {      // [M, N] written, or empty
  detail::check_activation_backward_args(x, dy, dx, "tanh_act_backward");
  if (dx.empty()) return;
  detail::cpu::activation_backward_rows(x, dy, dx, [](float v) {
    const float t = std::tanh(v);
    return 1.0f - t * t;
  });
}

/// Backward of swiglu: dgate = dy ⊙ lin ⊙ silu'(gate), dlin = dy ⊙ silu(gate), either empty to skip.
/// Each element's inputs are read before its outputs are written, so dgate and dlin may alias any
/// input (same view).
inline void swiglu_backward(cpu_backend,
                            HostView<const float, 2> gate,  // [M, I] gated branch (pre-activation)
                            HostView<const float, 2> lin,   // [M, I] linear branch
                            HostView<const float, 2> dy,    // [M, I] upstream gradient
                            HostView<float, 2> dgate,       // [M, I] written, or empty
                            HostView<float, 2> dlin) {      // [M, I] written, or empty
  detail::check_swiglu_backward_args(gate, lin, dy, dgate, dlin);
  if (dgate.empty() && dlin.empty()) return;
  const std::int64_t m = gate.size(0), n = gate.size(1);
  const bool want_gate = !dgate.empty(), want_lin = !dlin.empty();
  const std::int64_t sdg = want_gate ? dgate.stride(1) : 1, sdl = want_lin ? dlin.stride(1) : 1;
  const bool unit = gate.stride(1) == 1 && lin.stride(1) == 1 && dy.stride(1) == 1 && sdg == 1 && sdl == 1;
#pragma omp parallel for schedule(static) if (m * n >= 8192)
  for (std::int64_t i = 0; i < m; ++i) {
    const float* gr = gate.data() + i * gate.stride(0);
    const float* lr = lin.data() + i * lin.stride(0);
    const float* dr = dy.data() + i * dy.stride(0);
    float* dgr = want_gate ? dgate.data() + i * dgate.stride(0) : nullptr;
    float* dlr = want_lin ? dlin.data() + i * dlin.stride(0) : nullptr;
    if (unit)
      detail::cpu::swiglu_backward_row<true>(gr, 1, lr, 1, dr, 1, dgr, 1, dlr, 1, n);
    else
      detail::cpu::swiglu_backward_row<false>(gr, gate.stride(1), lr, lin.stride(1), dr, dy.stride(1), dgr, sdg, dlr,
                                              sdl, n);
  }
}

}  // namespace qlip::ops
