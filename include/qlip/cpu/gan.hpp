/// @file gan.hpp
/// @brief CPU ops of the StyleGAN2 discriminator besides its convolutions (formulas, contracts and
///        checks as reference/gan.hpp). The blur is separable: per (image, channel) plane, a
///        zero-padded float copy, the 4 horizontal taps, then the 4 vertical ones (its backward the
///        same passes transposed), planes split over threads, so any thread count gives the same
///        bits; it differs from the reference's double 16-tap sum by float rounding. The minibatch
///        statistic runs at the epilogue's 4×4 (a few thousand elements), where the reference loop
///        itself is the op.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <cstdint>
#include <vector>

#include "qlip/core/backend.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/gan.hpp"

namespace qlip::ops {

namespace detail_blur {

constexpr float kTaps[4] = {1.0f / 8, 3.0f / 8, 3.0f / 8, 1.0f / 8};

/// One plane's buffers: the padded image P [Hp, Wp] and the horizontal pass R [Hp, Wo].
struct PlaneScratch {
  std::vector<float> padded, rows;
  void size(std::int64_t hp, std::int64_t wp, std::int64_t wo) {
    padded.assign(static_cast<std::size_t>(hp * wp), 0.0f);
    rows.assign(static_cast<std::size_t>(hp * wo), 0.0f);
  }
};

/// y[i, j] = Σ_u f[u]·R[i·d + u, j],  R[r, j] = Σ_v f[v]·P[r, j·d + v]  (P: x zero-padded by p).
inline void blur_plane(HostView<const float, 2> x, HostView<float, 2> y, BlurGeometry g, PlaneScratch& s) {
  const std::int64_t h = x.size(0), w = x.size(1), ho = y.size(0), wo = y.size(1);
  const std::int64_t hp = h + 2 * g.pad, wp = w + 2 * g.pad, d = g.down;
  s.size(hp, wp, wo);
  for (std::int64_t r = 0; r < h; ++r)
    for (std::int64_t c = 0; c < w; ++c) s.padded[static_cast<std::size_t>((r + g.pad) * wp + c + g.pad)] = x(r, c);
  for (std::int64_t r = 0; r < hp; ++r) {
    const float* p = s.padded.data() + r * wp;
    float* o = s.rows.data() + r * wo;
    for (std::int64_t j = 0; j < wo; ++j)
      o[j] = kTaps[0] * p[j * d] + kTaps[1] * p[j * d + 1] + kTaps[2] * p[j * d + 2] + kTaps[3] * p[j * d + 3];
  }
  for (std::int64_t i = 0; i < ho; ++i) {
    const float* r0 = s.rows.data() + (i * d) * wo;
    for (std::int64_t j = 0; j < wo; ++j)
      y(i, j) = kTaps[0] * r0[j] + kTaps[1] * r0[wo + j] + kTaps[2] * r0[2 * wo + j] + kTaps[3] * r0[3 * wo + j];
  }
}

/// The transpose of blur_plane: R[i·d + u, :] += f[u]·dy[i, :], then P[r, j·d + v] += f[v]·R[r, j],
/// dx = the interior of P.
inline void blur_plane_backward(HostView<const float, 2> dy, HostView<float, 2> dx, BlurGeometry g, PlaneScratch& s) {
  const std::int64_t h = dx.size(0), w = dx.size(1), ho = dy.size(0), wo = dy.size(1);
  const std::int64_t hp = h + 2 * g.pad, wp = w + 2 * g.pad, d = g.down;
  s.size(hp, wp, wo);
  for (std::int64_t i = 0; i < ho; ++i)
    for (int u = 0; u < 4; ++u) {
      float* o = s.rows.data() + (i * d + u) * wo;
      for (std::int64_t j = 0; j < wo; ++j) o[j] += kTaps[u] * dy(i, j);
    }
  for (std::int64_t r = 0; r < hp; ++r) {
    const float* q = s.rows.data() + r * wo;
    float* p = s.padded.data() + r * wp;
    for (std::int64_t j = 0; j < wo; ++j)
      for (int v = 0; v < 4; ++v) p[j * d + v] += kTaps[v] * q[j];
  }
  for (std::int64_t r = 0; r < h; ++r)
    for (std::int64_t c = 0; c < w; ++c) dx(r, c) = s.padded[static_cast<std::size_t>((r + g.pad) * wp + c + g.pad)];
}

/// f(plane x, plane y, scratch) for every (image, channel), planes over threads.
template <class U, class V, class F>
void for_each_plane(HostView<U, 4> a, HostView<V, 4> b, F&& f) {
  const std::int64_t planes = a.size(0) * a.size(1);
#pragma omp parallel if (a.numel() + b.numel() >= 16384)
  {
    PlaneScratch scratch;
#pragma omp for schedule(static)
    for (std::int64_t k = 0; k < planes; ++k) {
      const std::int64_t n = k / a.size(1), c = k % a.size(1);
      f(HostView<U, 2>(a.data() + n * a.stride(0) + c * a.stride(1), {a.size(2), a.size(3)}, {a.stride(2), a.stride(3)}),
        HostView<V, 2>(b.data() + n * b.stride(0) + c * b.stride(1), {b.size(2), b.size(3)}, {b.stride(2), b.stride(3)}),
        scratch);
    }
  }
}

}  // namespace detail_blur

/// y = blur(x) ([1,3,3,1] filter, padding and down-sampling g).
inline void blur2d(cpu_backend, HostView<const float, 4> x, HostView<float, 4> y, BlurGeometry g) {
  detail::check_blur2d_args(x.shape(), y.shape(), g, "blur2d");
  detail_blur::for_each_plane(x, y, [g](HostView<const float, 2> xp, HostView<float, 2> yp, detail_blur::PlaneScratch& s) {
    detail_blur::blur_plane(xp, yp, g, s);
  });
}

/// dx = blurᵀ(dy) (=).
inline void blur2d_backward(cpu_backend, HostView<const float, 4> dy, HostView<float, 4> dx, BlurGeometry g) {
  detail::check_blur2d_args(dx.shape(), dy.shape(), g, "blur2d_backward");
  detail_blur::for_each_plane(dy, dx, [g](HostView<const float, 2> dyp, HostView<float, 2> dxp,
                                          detail_blur::PlaneScratch& s) { detail_blur::blur_plane_backward(dyp, dxp, g, s); });
}

inline void minibatch_std(cpu_backend, HostView<const float, 4> x, HostView<float, 4> y, std::int64_t group) {
  reference::minibatch_std<float>(x, y, group);
}
inline void minibatch_std_backward(cpu_backend, HostView<const float, 4> x, HostView<const float, 4> dy,
                                   HostView<float, 4> dx, std::int64_t group) {
  reference::minibatch_std_backward<float>(x, dy, dx, group);
}
inline void minibatch_std_tangent(cpu_backend, HostView<const float, 4> x, HostView<const float, 4> xdot,
                                  HostView<float, 4> ydot, std::int64_t group) {
  reference::minibatch_std_tangent<float>(x, xdot, ydot, group);
}
inline void minibatch_std_backward_tangent(cpu_backend, HostView<const float, 4> x, HostView<const float, 4> xdot,
                                           HostView<const float, 4> dy, HostView<const float, 4> dydot,
                                           HostView<float, 4> dxdot, std::int64_t group) {
  reference::minibatch_std_backward_tangent<float>(x, xdot, dy, dydot, dxdot, group);
}

}  // namespace qlip::ops
