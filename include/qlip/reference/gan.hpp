/// @file gan.hpp
/// @brief Reference ops of the StyleGAN2 discriminator (QLIP_SPEC.md §4.3) besides its convolutions:
///   blur2d: the [1,3,3,1] low-pass filter of its down-sampling layers (upfirdn2d with up = 1),
///     y[b, c, i, j] = Σ_{u,v ∈ 0..3} f[u]·f[v]·x[b, c, i·d + u − p, j·d + v − p],  f = [1,3,3,1]/8,
///     zero outside the image; Ho = ⌊(H + 2p − 4)/d⌋ + 1 (p = 2, d = 1 before a stride-2 3×3 conv,
///     p = 1, d = 2 before a 1×1 skip conv)
///   minibatch_std: the epilogue's statistic (group size G, one channel). Sample n = g·M + m is member
///     g of group m (M = N/G groups), torch's reshape(G, −1, …). Over e = (c, h, w), E = C·H·W:
///     μ_e = mean_g x_{g,e}, δ_{g,e} = x_{g,e} − μ_e, s_e = √(mean_g δ²_{g,e} + 1e-8), σ_m = mean_e s_e;
///     y = [x, σ_m broadcast over H×W] (C + 1 channels)
///
/// Backward contract: dx is written (=). blur2d is linear, so its backward is also the tangent
/// (forward-mode derivative) of its own backward. The minibatch statistic is not: the R1 penalty's
/// parameter gradient (a derivative of the input gradient, §4.3) runs the forward and the backward of
/// every layer in forward mode, and these tangents of the minibatch-std forward and backward are
///   σ̇_m   = (1/E)·Σ_e ṡ_e,  ṡ_e = Σ_g δ_{g,e}·ẋ_{g,e} / (G·s_e)
///   dx_{g,e} = dy_{g,e} + Y_m·δ_{g,e}/(E·G·s_e),  Y_m = Σ over the group's (h, w) of dy[·, C]
///   ḋx_{g,e} = ḋy_{g,e} + Ẏ_m·δ/(E·G·s) + Y_m/(E·G)·(δ̇_{g,e}/s_e − δ_{g,e}·ṡ_e/s_e²)
/// All sums in double, rounded once.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip {

/// Padding and down-sampling factor of a blur (the same on both axes).
struct BlurGeometry {
  int pad = 0;
  int down = 1;
};

namespace detail {

/// The separable taps of the [1,3,3,1] filter, normalised to sum 1 in 2-D.
inline constexpr double kBlurTaps[4] = {1.0 / 8, 3.0 / 8, 3.0 / 8, 1.0 / 8};

inline std::int64_t blur_output_extent(std::int64_t n, const BlurGeometry& g) { return (n + 2 * g.pad - 4) / g.down + 1; }

inline void check_blur2d_args(const Extents<4>& x, const Extents<4>& y, const BlurGeometry& g, const char* op) {
  QLIP_CHECK(g.pad >= 0 && g.down >= 1, op, ": padding ", g.pad, " and down-sampling ", g.down,
             " (padding must be ≥ 0, down-sampling ≥ 1)");
  QLIP_CHECK(x[2] + 2 * g.pad >= 4 && x[3] + 2 * g.pad >= 4, op, ": the 4x4 filter does not fit the padded image ",
             x[2] + 2 * g.pad, "x", x[3] + 2 * g.pad);
  const Extents<4> want{x[0], x[1], blur_output_extent(x[2], g), blur_output_extent(x[3], g)};
  QLIP_CHECK(y == want, op, ": output has shape ", shape_string<4>(y), ", expected ", shape_string<4>(want));
}

/// Checks x[N, C, H, W] against y[N, C + 1, H, W] and the group size (N must be a multiple of
/// min(group, N)); returns the effective group size.
inline std::int64_t check_minibatch_std_args(const Extents<4>& x, const Extents<4>& y, std::int64_t group,
                                             const char* op) {
  QLIP_CHECK(group >= 1, op, ": group size ", group, " (must be ≥ 1)");
  const std::int64_t g = std::min(group, x[0]);
  QLIP_CHECK(x[0] % g == 0, op, ": a batch of ", x[0], " is not a multiple of the group size ", g,
             " (the discriminator's minibatch-std groups need it)");
  const Extents<4> want{x[0], x[1] + 1, x[2], x[3]};
  QLIP_CHECK(y == want, op, ": output has shape ", shape_string<4>(y), ", expected ", shape_string<4>(want));
  return g;
}

/// The statistics of one minibatch-std group m: δ and s per element and σ (in double).
template <class V>
struct MinibatchStdGroup {
  std::int64_t G = 0, M = 0, E = 0, C = 0, HW = 0;
  std::vector<double> delta;  // [G, E]
  std::vector<double> s;      // [E]
  double sigma = 0.0;

  MinibatchStdGroup(const V& x, std::int64_t group, std::int64_t m) {
    const std::int64_t n = x.size(0);
    G = group;
    M = n / group;
    C = x.size(1);
    HW = x.size(2) * x.size(3);
    E = C * HW;
    delta.assign(static_cast<std::size_t>(G * E), 0.0);
    s.assign(static_cast<std::size_t>(E), 0.0);
    for (std::int64_t e = 0; e < E; ++e) {
      double mu = 0.0;
      for (std::int64_t g = 0; g < G; ++g) mu += at(x, g, e, m);
      mu /= static_cast<double>(G);
      double var = 0.0;
      for (std::int64_t g = 0; g < G; ++g) {
        const double d = at(x, g, e, m) - mu;
        delta[static_cast<std::size_t>(g * E + e)] = d;
        var += d * d;
      }
      s[static_cast<std::size_t>(e)] = std::sqrt(var / static_cast<double>(G) + 1e-8);
      sigma += s[static_cast<std::size_t>(e)];
    }
    sigma /= static_cast<double>(E);
  }
  /// x of member g at element e of group m, in double.
  template <class W>
  double at(const W& t, std::int64_t g, std::int64_t e, std::int64_t m) const {
    return static_cast<double>(t(g * M + m, e / HW, (e % HW) / t.size(3), e % t.size(3)));
  }
  double d(std::int64_t g, std::int64_t e) const { return delta[static_cast<std::size_t>(g * E + e)]; }
  /// ṡ_e for the input tangent xdot.
  template <class W>
  std::vector<double> s_dot(const W& xdot, std::int64_t m) const {
    std::vector<double> out(static_cast<std::size_t>(E), 0.0);
    for (std::int64_t e = 0; e < E; ++e) {
      double acc = 0.0;
      for (std::int64_t g = 0; g < G; ++g) acc += d(g, e) * at(xdot, g, e, m);
      out[static_cast<std::size_t>(e)] = acc / (static_cast<double>(G) * s[static_cast<std::size_t>(e)]);
    }
    return out;
  }
  /// Y_m: the gradient reaching σ_m (the statistic channel of the group's members, summed).
  template <class W>
  double channel_sum(const W& dy, std::int64_t m) const {
    double acc = 0.0;
    for (std::int64_t g = 0; g < G; ++g)
      for (std::int64_t i = 0; i < dy.size(2); ++i)
        for (std::int64_t j = 0; j < dy.size(3); ++j) acc += static_cast<double>(dy(g * M + m, C, i, j));
    return acc;
  }
};

}  // namespace detail

namespace reference {

/// y = blur(x) (file comment), x [B, C, H, W] → y [B, C, Ho, Wo] written.
template <class T>
void blur2d(HostView<const T, 4> x, HostView<T, 4> y, BlurGeometry g) {
  detail::check_blur2d_args(x.shape(), y.shape(), g, "blur2d");
  const std::int64_t h = x.size(2), w = x.size(3);
  for (std::int64_t b = 0; b < y.size(0); ++b)
    for (std::int64_t c = 0; c < y.size(1); ++c)
      for (std::int64_t i = 0; i < y.size(2); ++i)
        for (std::int64_t j = 0; j < y.size(3); ++j) {
          double acc = 0.0;
          for (int u = 0; u < 4; ++u) {
            const std::int64_t r = i * g.down + u - g.pad;
            if (r < 0 || r >= h) continue;
            for (int v = 0; v < 4; ++v) {
              const std::int64_t s = j * g.down + v - g.pad;
              if (s < 0 || s >= w) continue;
              acc += detail::kBlurTaps[u] * detail::kBlurTaps[v] * static_cast<double>(x(b, c, r, s));
            }
          }
          y(b, c, i, j) = static_cast<T>(acc);
        }
}

/// dx = blurᵀ(dy) (=), dy [B, C, Ho, Wo] → dx [B, C, H, W].
template <class T>
void blur2d_backward(HostView<const T, 4> dy, HostView<T, 4> dx, BlurGeometry g) {
  detail::check_blur2d_args(dx.shape(), dy.shape(), g, "blur2d_backward");
  for (std::int64_t b = 0; b < dx.size(0); ++b)
    for (std::int64_t c = 0; c < dx.size(1); ++c)
      for (std::int64_t r = 0; r < dx.size(2); ++r)
        for (std::int64_t s = 0; s < dx.size(3); ++s) {
          double acc = 0.0;
          for (int u = 0; u < 4; ++u) {
            const std::int64_t ti = r + g.pad - u;  // = i·down
            if (ti < 0 || ti % g.down != 0 || ti / g.down >= dy.size(2)) continue;
            for (int v = 0; v < 4; ++v) {
              const std::int64_t tj = s + g.pad - v;
              if (tj < 0 || tj % g.down != 0 || tj / g.down >= dy.size(3)) continue;
              acc += detail::kBlurTaps[u] * detail::kBlurTaps[v] * static_cast<double>(dy(b, c, ti / g.down, tj / g.down));
            }
          }
          dx(b, c, r, s) = static_cast<T>(acc);
        }
}

/// y = [x, σ] (file comment), x [N, C, H, W] → y [N, C + 1, H, W] written.
template <class T>
void minibatch_std(HostView<const T, 4> x, HostView<T, 4> y, std::int64_t group) {
  const std::int64_t g = detail::check_minibatch_std_args(x.shape(), y.shape(), group, "minibatch_std");
  const std::int64_t n = x.size(0), c = x.size(1);
  for (std::int64_t m = 0; m < n / g; ++m) {
    const detail::MinibatchStdGroup<HostView<const T, 4>> st(x, g, m);
    for (std::int64_t k = 0; k < g; ++k) {
      const std::int64_t b = k * (n / g) + m;
      for (std::int64_t ch = 0; ch < c; ++ch)
        for (std::int64_t i = 0; i < x.size(2); ++i)
          for (std::int64_t j = 0; j < x.size(3); ++j) y(b, ch, i, j) = x(b, ch, i, j);
      for (std::int64_t i = 0; i < x.size(2); ++i)
        for (std::int64_t j = 0; j < x.size(3); ++j) y(b, c, i, j) = static_cast<T>(st.sigma);
    }
  }
}

/// dx of minibatch_std (=): dx_{g,e} = dy_{g,e} + Y_m·δ_{g,e}/(E·G·s_e).
template <class T>
void minibatch_std_backward(HostView<const T, 4> x, HostView<const T, 4> dy, HostView<T, 4> dx, std::int64_t group) {
  const std::int64_t g = detail::check_minibatch_std_args(x.shape(), dy.shape(), group, "minibatch_std_backward");
  check_shape(dx, x.shape(), "minibatch_std_backward: dx");
  const std::int64_t n = x.size(0);
  for (std::int64_t m = 0; m < n / g; ++m) {
    const detail::MinibatchStdGroup<HostView<const T, 4>> st(x, g, m);
    const double coef = st.channel_sum(dy, m) / static_cast<double>(st.E * st.G);
    for (std::int64_t k = 0; k < g; ++k)
      for (std::int64_t e = 0; e < st.E; ++e) {
        const std::int64_t b = k * st.M + m, ch = e / st.HW, i = (e % st.HW) / x.size(3), j = e % x.size(3);
        dx(b, ch, i, j) =
            static_cast<T>(static_cast<double>(dy(b, ch, i, j)) + coef * st.d(k, e) / st.s[static_cast<std::size_t>(e)]);
      }
  }
}

/// The forward tangent: ydot = [xdot, σ̇] for the input tangent xdot (written).
template <class T>
void minibatch_std_tangent(HostView<const T, 4> x, HostView<const T, 4> xdot, HostView<T, 4> ydot, std::int64_t group) {
  const std::int64_t g = detail::check_minibatch_std_args(x.shape(), ydot.shape(), group, "minibatch_std_tangent");
  check_shape(xdot, x.shape(), "minibatch_std_tangent: xdot");
  const std::int64_t n = x.size(0), c = x.size(1);
  for (std::int64_t m = 0; m < n / g; ++m) {
    const detail::MinibatchStdGroup<HostView<const T, 4>> st(x, g, m);
    const std::vector<double> sd = st.s_dot(xdot, m);
    double sigma_dot = 0.0;
    for (double v : sd) sigma_dot += v;
    sigma_dot /= static_cast<double>(st.E);
    for (std::int64_t k = 0; k < g; ++k) {
      const std::int64_t b = k * st.M + m;
      for (std::int64_t ch = 0; ch < c; ++ch)
        for (std::int64_t i = 0; i < x.size(2); ++i)
          for (std::int64_t j = 0; j < x.size(3); ++j) ydot(b, ch, i, j) = xdot(b, ch, i, j);
      for (std::int64_t i = 0; i < x.size(2); ++i)
        for (std::int64_t j = 0; j < x.size(3); ++j) ydot(b, c, i, j) = static_cast<T>(sigma_dot);
    }
  }
}

/// The tangent of the backward: ḋx for the input tangent xdot, the upstream gradient dy and its
/// tangent dydot (file comment); written.
template <class T>
void minibatch_std_backward_tangent(HostView<const T, 4> x, HostView<const T, 4> xdot, HostView<const T, 4> dy,
                                    HostView<const T, 4> dydot, HostView<T, 4> dxdot, std::int64_t group) {
  const std::int64_t g =
      detail::check_minibatch_std_args(x.shape(), dy.shape(), group, "minibatch_std_backward_tangent");
  check_shape(xdot, x.shape(), "minibatch_std_backward_tangent: xdot");
  check_shape(dydot, dy.shape(), "minibatch_std_backward_tangent: dydot");
  check_shape(dxdot, x.shape(), "minibatch_std_backward_tangent: dxdot");
  const std::int64_t n = x.size(0);
  for (std::int64_t m = 0; m < n / g; ++m) {
    const detail::MinibatchStdGroup<HostView<const T, 4>> st(x, g, m);
    const std::vector<double> sd = st.s_dot(xdot, m);
    const double eg = static_cast<double>(st.E * st.G);
    const double y_sum = st.channel_sum(dy, m), y_dot = st.channel_sum(dydot, m);
    for (std::int64_t e = 0; e < st.E; ++e) {
      double mu_dot = 0.0;
      for (std::int64_t k = 0; k < g; ++k) mu_dot += st.at(xdot, k, e, m);
      mu_dot /= static_cast<double>(g);
      const double s = st.s[static_cast<std::size_t>(e)], s_dot = sd[static_cast<std::size_t>(e)];
      for (std::int64_t k = 0; k < g; ++k) {
        const std::int64_t b = k * st.M + m, ch = e / st.HW, i = (e % st.HW) / x.size(3), j = e % x.size(3);
        const double delta = st.d(k, e), delta_dot = st.at(xdot, k, e, m) - mu_dot;
        const double v = static_cast<double>(dydot(b, ch, i, j)) + y_dot * delta / (eg * s) +
                         y_sum / eg * (delta_dot / s - delta * s_dot / (s * s));
        dxdot(b, ch, i, j) = static_cast<T>(v);
      }
    }
  }
}

}  // namespace reference
}  // namespace qlip
