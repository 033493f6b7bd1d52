/// @file activation.hpp
/// @brief Reference element-wise activations: GELU (erf), quick-GELU, SiLU, SwiGLU gate, tanh.
///
/// Each applies the shared scalar formula of core/math.hpp element by element, so every backend
/// evaluates the same expression; these loops fix the iteration and view semantics only.
#pragma once

#include <cmath>
#include <cstdint>

#include "qlip/core/error.hpp"
#include "qlip/core/math.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::detail {
/// y(i, j) = f(x(i, j)) over a 2-D view; y may alias x (same view).
template <class F>
void activation_map_2d(HostView<const float, 2> x, HostView<float, 2> y, const char* what, F f) {
  check_shape(y, {x.size(0), x.size(1)}, what);
  for (std::int64_t i = 0; i < x.size(0); ++i)
    for (std::int64_t j = 0; j < x.size(1); ++j) y(i, j) = f(x(i, j));
}
}  // namespace qlip::detail

namespace qlip::reference {

/// Exact (erf) GELU, nn.GELU() / HF "gelu". y may alias x.
inline void gelu(HostView<const float, 2> x, HostView<float, 2> y) {  // [M, N] -> [M, N]
  detail::activation_map_2d(x, y, "gelu output y", [](float v) { return math::gelu(v); });
}

/// quick-GELU x·σ(1.702x), HF "quick_gelu". y may alias x.
inline void quick_gelu(HostView<const float, 2> x, HostView<float, 2> y) {  // [M, N] -> [M, N]
  detail::activation_map_2d(x, y, "quick_gelu output y", [](float v) { return math::quick_gelu(v); });
}

/// SiLU x·σ(x). y may alias x.
inline void silu(HostView<const float, 2> x, HostView<float, 2> y) {  // [M, N] -> [M, N]
  detail::activation_map_2d(x, y, "silu output y", [](float v) { return math::silu(v); });
}

/// tanh (the pixel decoder head, MODEL.md §2.7). y may alias x.
inline void tanh_act(HostView<const float, 2> x, HostView<float, 2> y) {  // [M, N] -> [M, N]
  detail::activation_map_2d(x, y, "tanh_act output y", [](float v) { return std::tanh(v); });
}

/// SwiGLU gate, y = silu(gate) ⊙ lin (QLIPSwiGLU: w1 is the gated branch, w2 the linear one).
/// y may alias gate or lin (same view).
inline void swiglu(HostView<const float, 2> gate,  // [M, I]
                   HostView<const float, 2> lin,   // [M, I]
                   HostView<float, 2> y) {         // [M, I]
  check_shape(lin, {gate.size(0), gate.size(1)}, "swiglu linear branch lin");
  check_shape(y, {gate.size(0), gate.size(1)}, "swiglu output y");
  for (std::int64_t i = 0; i < gate.size(0); ++i)
    for (std::int64_t j = 0; j < gate.size(1); ++j) y(i, j) = math::silu(gate(i, j)) * lin(i, j);
}

}  // namespace qlip::reference
