/// @file activation.hpp
/// @brief Reference element-wise activations: GELU (erf), quick-GELU, SiLU, SwiGLU gate, tanh, and
///        their backwards.
///
/// For T = float each forward applies the shared scalar formula of core/math.hpp element by element,
/// so every backend evaluates the same expression; these loops fix the iteration and view semantics
/// only. For T = double (what finite differences differentiate) the same formulas run in double.
///
/// Backward contract: the input gradients (dx; dgate and dlin) are written (=); an empty
/// (default-constructed) view is not wanted and is skipped. Each is computed from the pre-activation
/// input(s) in double and rounded once:
///   gelu'(x)       = Φ(x) + x·φ(x)
///   quick_gelu'(x) = σ(z)·(1 + z·σ(−z)),  z = 1.702x     (the SiLU derivative at z)
///   silu'(x)       = σ(x)·(1 + x·σ(−x))                  (σ(−x) = 1 − σ(x), without cancellation)
///   tanh'(x)       = 1 − tanh²(x)
///   swiglu: dgate = dy ⊙ lin ⊙ silu'(gate),  dlin = dy ⊙ silu(gate)
/// Formulas of the activations: MODEL.md §2.3 (GELU, quick-GELU, SwiGLU), §2.7 (tanh).
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "qlip/core/error.hpp"
#include "qlip/core/math.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::detail {
/// y(i, j) = f(x(i, j)) over a 2-D view; y may alias x (same view).
template <class T, class F>
void activation_map_2d(HostView<const T, 2> x, HostView<T, 2> y, const char* what, F f) {
  check_shape(y, {x.size(0), x.size(1)}, what);
  for (std::int64_t i = 0; i < x.size(0); ++i)
    for (std::int64_t j = 0; j < x.size(1); ++j) y(i, j) = f(x(i, j));
}

/// The quick-GELU slope as the float models use it (1.702 rounded to float, as in math::quick_gelu).
inline constexpr double kQuickGeluAlpha = static_cast<double>(1.702f);

/// Logistic sigmoid in double, finite for large |x| (the form of math::sigmoid).
inline double sigmoid_f64(double x) {
  if (x >= 0.0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

/// Scalar forwards at precision T: math:: itself for float (bit-identical to the backends), the same
/// formula in double otherwise.
template <class T>
T gelu_at(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return math::gelu(v);
  } else {
    return 0.5 * v * (1.0 + std::erf(v * 0.70710678118654752440));
  }
}
template <class T>
T quick_gelu_at(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return math::quick_gelu(v);
  } else {
    return v * sigmoid_f64(kQuickGeluAlpha * v);
  }
}
template <class T>
T silu_at(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return math::silu(v);
  } else {
    return v * sigmoid_f64(v);
  }
}

/// Derivatives in double (formulas in the file comment).
inline double gelu_grad_f64(double x) {
  const double cdf = 0.5 * (1.0 + std::erf(x * 0.70710678118654752440));
  const double pdf = 0.39894228040143267794 * std::exp(-0.5 * x * x);
  return cdf + x * pdf;
}
inline double silu_grad_f64(double x) { return sigmoid_f64(x) * (1.0 + x * sigmoid_f64(-x)); }
inline double quick_gelu_grad_f64(double x) { return silu_grad_f64(kQuickGeluAlpha * x); }
inline double tanh_grad_f64(double x) {
  const double t = std::tanh(x);
  return 1.0 - t * t;
}

/// Checks an element-wise backward: dy like x, dx like x or empty; messages start with `op`.
template <class T, class M>
void check_activation_backward_args(const TensorView<const T, 2, M>& x, const TensorView<const T, 2, M>& dy,
                                    const TensorView<T, 2, M>& dx, const char* op) {
  QLIP_CHECK(dy.shape() == x.shape(), op, ": dy has shape ", shape_string<2>(dy.shape()), ", expected ",
             shape_string<2>(x.shape()), " (the shape of x)");
  QLIP_CHECK(dx.empty() || dx.shape() == x.shape(), op, ": dx has shape ", shape_string<2>(dx.shape()),
             ", expected ", shape_string<2>(x.shape()), " (the shape of x)");
}

/// Checks the SwiGLU backward: lin and dy like gate; dgate and dlin like gate or empty.
template <class T, class M>
void check_swiglu_backward_args(const TensorView<const T, 2, M>& gate, const TensorView<const T, 2, M>& lin,
                                const TensorView<const T, 2, M>& dy, const TensorView<T, 2, M>& dgate,
                                const TensorView<T, 2, M>& dlin) {
  const std::int64_t m = gate.size(0), n = gate.size(1);
  check_shape(lin, {m, n}, "swiglu_backward: lin");
  check_shape(dy, {m, n}, "swiglu_backward: dy");
  if (!dgate.empty()) check_shape(dgate, {m, n}, "swiglu_backward: dgate");
  if (!dlin.empty()) check_shape(dlin, {m, n}, "swiglu_backward: dlin");
}

/// dx(i, j) = dy(i, j)·f'(x(i, j)) with f' in double; dx may alias x or dy (same view).
template <class T, class G>
void activation_backward_2d(HostView<const T, 2> x, HostView<const T, 2> dy, HostView<T, 2> dx, const char* op,
                            G grad) {
  check_activation_backward_args(x, dy, dx, op);
  if (dx.empty()) return;
  for (std::int64_t i = 0; i < x.size(0); ++i)
    for (std::int64_t j = 0; j < x.size(1); ++j)
      dx(i, j) = static_cast<T>(static_cast<double>(dy(i, j)) * grad(static_cast<double>(x(i, j))));
}
}  // namespace qlip::detail

namespace qlip::reference {

/// Exact (erf) GELU, nn.GELU() / HF "gelu". y may alias x.
/// @tparam T float (the oracle) or double (finite differences)
template <class T>
void gelu(HostView<const T, 2> x, HostView<T, 2> y) {  // [M, N] -> [M, N]
  detail::activation_map_2d<T>(x, y, "gelu output y", [](T v) { return detail::gelu_at<T>(v); });
}
inline void gelu(HostView<const float, 2> x, HostView<float, 2> y) { gelu<float>(x, y); }

/// quick-GELU x·σ(1.702x), HF "quick_gelu". y may alias x.
/// @tparam T float (the oracle) or double (finite differences)
template <class T>
void quick_gelu(HostView<const T, 2> x, HostView<T, 2> y) {  // [M, N] -> [M, N]
  detail::activation_map_2d<T>(x, y, "quick_gelu output y", [](T v) { return detail::quick_gelu_at<T>(v); });
}
inline void quick_gelu(HostView<const float, 2> x, HostView<float, 2> y) { quick_gelu<float>(x, y); }

/// SiLU x·σ(x). y may alias x.
/// @tparam T float (the oracle) or double (finite differences)
template <class T>
void silu(HostView<const T, 2> x, HostView<T, 2> y) {  // [M, N] -> [M, N]
  detail::activation_map_2d<T>(x, y, "silu output y", [](T v) { return detail::silu_at<T>(v); });
}
inline void silu(HostView<const float, 2> x, HostView<float, 2> y) { silu<float>(x, y); }

/// tanh (the pixel decoder head, MODEL.md §2.7). y may alias x.
/// @tparam T float (the oracle) or double (finite differences)
template <class T>
void tanh_act(HostView<const T, 2> x, HostView<T, 2> y) {  // [M, N] -> [M, N]
  detail::activation_map_2d<T>(x, y, "tanh_act output y", [](T v) { return std::tanh(v); });
}
inline void tanh_act(HostView<const float, 2> x, HostView<float, 2> y) { tanh_act<float>(x, y); }

/// Leaky ReLU with a gain, y = x > 0 ? gain·x : (gain·slope)·x, in T (both products rounded once
/// for float, so every backend evaluates the same expression). ReLU is slope 0, gain 1 (VGG16);
/// the StyleGAN2 discriminator uses slope 0.2, gain √2 (QLIP_SPEC.md §4.3). y may alias x.
/// @tparam T float (the oracle) or double (finite differences)
template <class T>
void leaky_relu(HostView<const T, 2> x, HostView<T, 2> y, double slope, double gain) {  // [M, N] -> [M, N]
  const T g = static_cast<T>(gain), gs = static_cast<T>(gain * slope);
  detail::activation_map_2d<T>(x, y, "leaky_relu output y", [&](T v) { return v > T(0) ? g * v : gs * v; });
}
inline void leaky_relu(HostView<const float, 2> x, HostView<float, 2> y, double slope, double gain) {
  leaky_relu<float>(x, y, slope, gain);
}

/// SwiGLU gate, y = silu(gate) ⊙ lin (QLIPSwiGLU: w1 is the gated branch, w2 the linear one).
/// y may alias gate or lin (same view).
/// @tparam T float (the oracle) or double (finite differences)
template <class T>
void swiglu(HostView<const T, 2> gate,  // [M, I]
            HostView<const T, 2> lin,   // [M, I]
            HostView<T, 2> y) {         // [M, I]
  check_shape(lin, {gate.size(0), gate.size(1)}, "swiglu linear branch lin");
  check_shape(y, {gate.size(0), gate.size(1)}, "swiglu output y");
  for (std::int64_t i = 0; i < gate.size(0); ++i)
    for (std::int64_t j = 0; j < gate.size(1); ++j) y(i, j) = detail::silu_at<T>(gate(i, j)) * lin(i, j);
}
inline void swiglu(HostView<const float, 2> gate, HostView<const float, 2> lin, HostView<float, 2> y) {
  swiglu<float>(gate, lin, y);
}

/// Backward of gelu: dx = dy ⊙ gelu'(x). dx may alias x or dy (same view).
/// @tparam T float or double
template <class T>
void gelu_backward(HostView<const T, 2> x,   // [M, N] pre-activation input
                   HostView<const T, 2> dy,  // [M, N] upstream gradient
                   HostView<T, 2> dx) {      // [M, N] written, or empty
  detail::activation_backward_2d<T>(x, dy, dx, "gelu_backward", detail::gelu_grad_f64);
}

/// Backward of quick_gelu: dx = dy ⊙ quick_gelu'(x). dx may alias x or dy (same view).
/// @tparam T float or double
template <class T>
void quick_gelu_backward(HostView<const T, 2> x,   // [M, N] pre-activation input
                         HostView<const T, 2> dy,  // [M, N] upstream gradient
                         HostView<T, 2> dx) {      // [M, N] written, or empty
  detail::activation_backward_2d<T>(x, dy, dx, "quick_gelu_backward", detail::quick_gelu_grad_f64);
}

/// Backward of silu: dx = dy ⊙ silu'(x). dx may alias x or dy (same view).
/// @tparam T float or double
template <class T>
void silu_backward(HostView<const T, 2> x,   // [M, N] pre-activation input
                   HostView<const T, 2> dy,  // [M, N] upstream gradient
                   HostView<T, 2> dx) {      // [M, N] written, or empty
  detail::activation_backward_2d<T>(x, dy, dx, "silu_backward", detail::silu_grad_f64);
}

/// Backward of tanh_act: dx = dy ⊙ (1 − tanh²(x)). dx may alias x or dy (same view).
/// @tparam T float or double
template <class T>
void tanh_act_backward(HostView<const T, 2> x,   // [M, N] pre-activation input
                       HostView<const T, 2> dy,  // [M, N] upstream gradient
                       HostView<T, 2> dx) {      // [M, N] written, or empty
  detail::activation_backward_2d<T>(x, dy, dx, "tanh_act_backward", detail::tanh_grad_f64);
}

/// Backward of leaky_relu: dx = dy·(x > 0 ? gain : gain·slope) (=). The derivative at 0 is taken
/// as the negative side's, as PyTorch does. dx may alias x or dy (same view).
/// @tparam T float or double
template <class T>
void leaky_relu_backward(HostView<const T, 2> x,   // [M, N] pre-activation input
                         HostView<const T, 2> dy,  // [M, N] upstream gradient
                         HostView<T, 2> dx,        // [M, N] written, or empty
                         double slope, double gain) {
  detail::check_activation_backward_args(x, dy, dx, "leaky_relu_backward");
  if (dx.empty()) return;
  const T g = static_cast<T>(gain), gs = static_cast<T>(gain * slope);
  for (std::int64_t i = 0; i < x.size(0); ++i)
    for (std::int64_t j = 0; j < x.size(1); ++j) {
      const T v = x(i, j), d = dy(i, j);
      dx(i, j) = v > T(0) ? g * d : gs * d;
    }
}

/// Backward of swiglu: dgate = dy ⊙ lin ⊙ silu'(gate), dlin = dy ⊙ silu(gate). Each element's
/// inputs are read before its outputs are written, so dgate and dlin may alias any input (same view).
/// @tparam T float or double
template <class T>
void swiglu_backward(HostView<const T, 2> gate,  // [M, I] gated branch (pre-activation)
                     HostView<const T, 2> lin,   // [M, I] linear branch
                     HostView<const T, 2> dy,    // [M, I] upstream gradient
                     HostView<T, 2> dgate,       // [M, I] written, or empty
                     HostView<T, 2> dlin) {      // [M, I] written, or empty
  detail::check_swiglu_backward_args(gate, lin, dy, dgate, dlin);
  for (std::int64_t i = 0; i < gate.size(0); ++i)
    for (std::int64_t j = 0; j < gate.size(1); ++j) {
      const double g = static_cast<double>(gate(i, j)), l = static_cast<double>(lin(i, j));
      const double d = static_cast<double>(dy(i, j));
      if (!dgate.empty()) dgate(i, j) = static_cast<T>(d * l * detail::silu_grad_f64(g));
      if (!dlin.empty()) dlin(i, j) = static_cast<T>(d * g * detail::sigmoid_f64(g));
    }
}

}  // namespace qlip::reference
