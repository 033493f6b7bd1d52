/// @file perceptual.hpp
/// @brief Reference ops of the LPIPS distance (QLIP_SPEC.md §4.3; Zhang et al. 2018, the `lpips`
///        package's v0.1) besides its convolutions:
///   channel_affine:        y[b, c, h, w] = a[c]·x[b, c, h, w] + t[c]   (the input scaling layer, with
///                          the map from the model's pixel space folded in)
///   channel_normalize:     y = x / (‖x[b, :, h, w]‖₂ + ε), ε = 1e-10 (lpips.normalize_tensor)
///   lpips_layer_distance:  d[b] = (1/HW)·Σ_{h,w} Σ_c lin[c]·(f0 − f1)[b, c, h, w]²
///                          (the 1×1 "lin" head without bias, then the spatial mean)
///
/// Backward contract: input gradients are written (=), an empty view is skipped; sums in double,
/// rounded once. With n = ‖x‖, d = n + ε:
///   channel_normalize: dx_k = dy_k/d − x_k·(Σ_c dy_c·x_c)/(d²·n)   (0 where n = 0, i.e. x = 0)
///   lpips_layer_distance: df0 = dd[b]·2·lin[c]·(f0 − f1)/(HW), df1 = −df0
#pragma once

#include <cmath>
#include <cstdint>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip {

/// lpips.normalize_tensor's ε.
inline constexpr double kLpipsNormEps = 1e-10;

namespace detail {

template <class T, class M>
void check_channel_affine_args(const TensorView<const T, 4, M>& x, const TensorView<const T, 1, M>& a,
                               const TensorView<const T, 1, M>& t, const Extents<4>& y, const char* op) {
  QLIP_CHECK(a.size(0) == x.size(1) && t.size(0) == x.size(1), op, ": scale has ", a.size(0), " and shift ",
             t.size(0), " elements, expected one per channel of x ", shape_string<4>(x.shape()));
  QLIP_CHECK(y == x.shape(), op, ": output has shape ", shape_string<4>(y), ", expected ", shape_string<4>(x.shape()));
}

template <class T, class M>
void check_lpips_layer_args(const TensorView<const T, 4, M>& f0, const TensorView<const T, 4, M>& f1,
                            const TensorView<const T, 1, M>& lin, std::int64_t d, const char* op) {
  QLIP_CHECK(f1.shape() == f0.shape(), op, ": features have shapes ", shape_string<4>(f0.shape()), " and ",
             shape_string<4>(f1.shape()));
  QLIP_CHECK(lin.size(0) == f0.size(1), op, ": the linear head has ", lin.size(0), " weights, the features ",
             f0.size(1), " channels");
  QLIP_CHECK(f0.size(2) * f0.size(3) > 0, op, ": features ", shape_string<4>(f0.shape()),
             " are empty: the spatial mean of nothing is undefined");
  QLIP_CHECK(d == f0.size(0), op, ": distance has ", d, " elements, expected one per image (", f0.size(0), ")");
}

}  // namespace detail

namespace reference {

/// y = a[c]·x + t[c] per channel; y may alias x (same view).
template <class T>
void channel_affine(HostView<const T, 4> x, HostView<const T, 1> a, HostView<const T, 1> t, HostView<T, 4> y) {
  detail::check_channel_affine_args(x, a, t, y.shape(), "channel_affine");
  for (std::int64_t b = 0; b < x.size(0); ++b)
    for (std::int64_t c = 0; c < x.size(1); ++c)
      for (std::int64_t i = 0; i < x.size(2); ++i)
        for (std::int64_t j = 0; j < x.size(3); ++j)
          y(b, c, i, j) = static_cast<T>(static_cast<double>(a(c)) * static_cast<double>(x(b, c, i, j)) +
                                         static_cast<double>(t(c)));
}

/// dx = a[c]·dy (=); dx may alias dy.
template <class T>
void channel_affine_backward(HostView<const T, 4> dy, HostView<const T, 1> a, HostView<T, 4> dx) {
  detail::check_channel_affine_args(dy, a, a, dx.shape(), "channel_affine_backward");
  for (std::int64_t b = 0; b < dy.size(0); ++b)
    for (std::int64_t c = 0; c < dy.size(1); ++c)
      for (std::int64_t i = 0; i < dy.size(2); ++i)
        for (std::int64_t j = 0; j < dy.size(3); ++j)
          dx(b, c, i, j) = static_cast<T>(static_cast<double>(a(c)) * static_cast<double>(dy(b, c, i, j)));
}

/// y = x / (‖x[b, :, h, w]‖ + ε) over the channels of each pixel.
template <class T>
void channel_normalize(HostView<const T, 4> x, HostView<T, 4> y) {
  check_shape(y, x.shape(), "channel_normalize: y");
  for (std::int64_t b = 0; b < x.size(0); ++b)
    for (std::int64_t i = 0; i < x.size(2); ++i)
      for (std::int64_t j = 0; j < x.size(3); ++j) {
        double s = 0.0;
        for (std::int64_t c = 0; c < x.size(1); ++c) s += static_cast<double>(x(b, c, i, j)) * static_cast<double>(x(b, c, i, j));
        const double d = std::sqrt(s) + kLpipsNormEps;
        for (std::int64_t c = 0; c < x.size(1); ++c) y(b, c, i, j) = static_cast<T>(static_cast<double>(x(b, c, i, j)) / d);
      }
}

/// dx of channel_normalize (formula in the file comment); dx may not alias x or dy.
template <class T>
void channel_normalize_backward(HostView<const T, 4> x, HostView<const T, 4> dy, HostView<T, 4> dx) {
  check_shape(dy, x.shape(), "channel_normalize_backward: dy");
  check_shape(dx, x.shape(), "channel_normalize_backward: dx");
  for (std::int64_t b = 0; b < x.size(0); ++b)
    for (std::int64_t i = 0; i < x.size(2); ++i)
      for (std::int64_t j = 0; j < x.size(3); ++j) {
        double s = 0.0, dot = 0.0;
        for (std::int64_t c = 0; c < x.size(1); ++c) {
          const double v = static_cast<double>(x(b, c, i, j));
          s += v * v;
          dot += static_cast<double>(dy(b, c, i, j)) * v;
        }
        const double n = std::sqrt(s), d = n + kLpipsNormEps;
        const double k = n > 0.0 ? dot / (d * d * n) : 0.0;
        for (std::int64_t c = 0; c < x.size(1); ++c)
          dx(b, c, i, j) = static_cast<T>(static_cast<double>(dy(b, c, i, j)) / d - static_cast<double>(x(b, c, i, j)) * k);
      }
}

/// d[b] = (1/HW)·Σ Σ_c lin[c]·(f0 − f1)² (written).
template <class T>
void lpips_layer_distance(HostView<const T, 4> f0, HostView<const T, 4> f1, HostView<const T, 1> lin, HostView<T, 1> d) {
  detail::check_lpips_layer_args(f0, f1, lin, d.size(0), "lpips_layer_distance");
  const double hw = static_cast<double>(f0.size(2) * f0.size(3));
  for (std::int64_t b = 0; b < f0.size(0); ++b) {
    double acc = 0.0;
    for (std::int64_t c = 0; c < f0.size(1); ++c)
      for (std::int64_t i = 0; i < f0.size(2); ++i)
        for (std::int64_t j = 0; j < f0.size(3); ++j) {
          const double e = static_cast<double>(f0(b, c, i, j)) - static_cast<double>(f1(b, c, i, j));
          acc += static_cast<double>(lin(c)) * e * e;
        }
    d(b) = static_cast<T>(acc / hw);
  }
}

/// df0 = dd[b]·2·lin[c]·(f0 − f1)/(HW), df1 = −df0 (each =, or empty: skipped).
template <class T>
void lpips_layer_distance_backward(HostView<const T, 4> f0, HostView<const T, 4> f1, HostView<const T, 1> lin,
                                   HostView<const T, 1> dd, HostView<T, 4> df0, HostView<T, 4> df1) {
  detail::check_lpips_layer_args(f0, f1, lin, dd.size(0), "lpips_layer_distance_backward");
  if (!df0.empty()) check_shape(df0, f0.shape(), "lpips_layer_distance_backward: df0");
  if (!df1.empty()) check_shape(df1, f0.shape(), "lpips_layer_distance_backward: df1");
  const double hw = static_cast<double>(f0.size(2) * f0.size(3));
  for (std::int64_t b = 0; b < f0.size(0); ++b)
    for (std::int64_t c = 0; c < f0.size(1); ++c)
      for (std::int64_t i = 0; i < f0.size(2); ++i)
        for (std::int64_t j = 0; j < f0.size(3); ++j) {
          const double g = static_cast<double>(dd(b)) * 2.0 * static_cast<double>(lin(c)) *
                           (static_cast<double>(f0(b, c, i, j)) - static_cast<double>(f1(b, c, i, j))) / hw;
          if (!df0.empty()) df0(b, c, i, j) = static_cast<T>(g);
          if (!df1.empty()) df1(b, c, i, j) = static_cast<T>(-g);
        }
}

}  // namespace reference
}  // namespace qlip
