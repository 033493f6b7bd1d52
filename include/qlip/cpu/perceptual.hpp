/// @file perceptual.hpp
/// @brief CPU ops of the LPIPS distance besides its convolutions (formulas, contracts and checks as
///        reference/perceptual.hpp): the reference loops run on one image per OpenMP iteration, so
///        the results are bit-identical to the reference for any thread count. They are a small
///        share of the perceptual loss, whose time is in the VGG16 convolutions (cpu/conv2d.hpp).
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <cstdint>

#include "qlip/core/backend.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/perceptual.hpp"

namespace qlip::ops {

namespace detail_cpu_perceptual {
/// Image b of a [B, ...] view as a [1, ...] view.
template <class T>
HostView<T, 4> image(const HostView<T, 4>& t, std::int64_t b) {
  return t.slice(0, b, b + 1);
}
template <class T>
HostView<T, 1> element(const HostView<T, 1>& t, std::int64_t b) {
  return t.slice(0, b, b + 1);
}
}  // namespace detail_cpu_perceptual

/// y = a[c]·x + t[c]; y may alias x.
inline void channel_affine(cpu_backend, HostView<const float, 4> x, HostView<const float, 1> a,
                           HostView<const float, 1> t, HostView<float, 4> y) {
  detail::check_channel_affine_args(x, a, t, y.shape(), "channel_affine");
  using detail_cpu_perceptual::image;
#pragma omp parallel for schedule(static) if (x.numel() >= 65536)
  for (std::int64_t b = 0; b < x.size(0); ++b) reference::channel_affine<float>(image(x, b), a, t, image(y, b));
}

/// dx = a[c]·dy; dx may alias dy.
inline void channel_affine_backward(cpu_backend, HostView<const float, 4> dy, HostView<const float, 1> a,
                                    HostView<float, 4> dx) {
  detail::check_channel_affine_args(dy, a, a, dx.shape(), "channel_affine_backward");
  using detail_cpu_perceptual::image;
#pragma omp parallel for schedule(static) if (dy.numel() >= 65536)
  for (std::int64_t b = 0; b < dy.size(0); ++b) reference::channel_affine_backward<float>(image(dy, b), a, image(dx, b));
}

/// y = x / (‖x[b, :, h, w]‖ + ε).
inline void channel_normalize(cpu_backend, HostView<const float, 4> x, HostView<float, 4> y) {
  check_shape(y, x.shape(), "channel_normalize: y");
  using detail_cpu_perceptual::image;
#pragma omp parallel for schedule(static) if (x.numel() >= 65536)
  for (std::int64_t b = 0; b < x.size(0); ++b) reference::channel_normalize<float>(image(x, b), image(y, b));
}

/// dx of channel_normalize (=); dx may not alias x or dy.
inline void channel_normalize_backward(cpu_backend, HostView<const float, 4> x, HostView<const float, 4> dy,
                                       HostView<float, 4> dx) {
  check_shape(dy, x.shape(), "channel_normalize_backward: dy");
  check_shape(dx, x.shape(), "channel_normalize_backward: dx");
  using detail_cpu_perceptual::image;
#pragma omp parallel for schedule(static) if (x.numel() >= 65536)
  for (std::int64_t b = 0; b < x.size(0); ++b)
    reference::channel_normalize_backward<float>(image(x, b), image(dy, b), image(dx, b));
}

/// d[b] = (1/HW)·Σ Σ_c lin[c]·(f0 − f1)².
inline void lpips_layer_distance(cpu_backend, HostView<const float, 4> f0, HostView<const float, 4> f1,
                                 HostView<const float, 1> lin, HostView<float, 1> d) {
  detail::check_lpips_layer_args(f0, f1, lin, d.size(0), "lpips_layer_distance");
  using detail_cpu_perceptual::element;
  using detail_cpu_perceptual::image;
#pragma omp parallel for schedule(static) if (f0.numel() >= 65536)
  for (std::int64_t b = 0; b < f0.size(0); ++b)
    reference::lpips_layer_distance<float>(image(f0, b), image(f1, b), lin, element(d, b));
}

/// df0 = dd[b]·2·lin[c]·(f0 − f1)/(HW), df1 = −df0 (each =, or empty: skipped).
inline void lpips_layer_distance_backward(cpu_backend, HostView<const float, 4> f0, HostView<const float, 4> f1,
                                          HostView<const float, 1> lin, HostView<const float, 1> dd,
                                          HostView<float, 4> df0, HostView<float, 4> df1) {
  detail::check_lpips_layer_args(f0, f1, lin, dd.size(0), "lpips_layer_distance_backward");
  if (!df0.empty()) check_shape(df0, f0.shape(), "lpips_layer_distance_backward: df0");
  if (!df1.empty()) check_shape(df1, f0.shape(), "lpips_layer_distance_backward: df1");
  using detail_cpu_perceptual::element;
  using detail_cpu_perceptual::image;
#pragma omp parallel for schedule(static) if (f0.numel() >= 65536)
  for (std::int64_t b = 0; b < f0.size(0); ++b)
    reference::lpips_layer_distance_backward<float>(image(f0, b), image(f1, b), lin, element(dd, b),
                                                    df0.empty() ? df0 : image(df0, b), df1.empty() ? df1 : image(df1, b));
}

}  // namespace qlip::ops
