/// @file conv2d.hpp
/// @brief Reference 2-D convolution and 2×2 max pooling on NCHW tensors, the layers of the
///        perceptual network (LPIPS' VGG16, QLIP_SPEC.md §4.3) and of the GAN discriminator:
///   y[b, o, i, j] = bias[o] + Σ_{c, u, v} w[o, c, u, v] · x[b, c, i·s + u − p, j·s + v − p]
///   (zero outside the image; torch.nn.functional.conv2d with stride s, padding p, dilation 1)
///   max_pool2x2: y[b, c, i, j] = max over x[b, c, 2i..2i+1, 2j..2j+1] (torch's max_pool2d(2, 2);
///   odd trailing rows/columns are dropped, as floor mode does)
///
/// Backward contract: dx is written (=); dw and db are accumulated (+=), like every parameter
/// gradient; an empty view is not wanted and is skipped. The pooling backward routes each output
/// gradient to the first maximum of its window in row-major order (torch's choice for ties).
#pragma once

#include <cstdint>
#include <limits>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip {

/// Stride and zero padding of a convolution (the same on both axes).
struct Conv2dGeometry {
  int stride = 1;
  int pad = 0;
};

namespace detail {

/// Output extent of a convolution along one axis: ⌊(n + 2p − k) / s⌋ + 1.
inline std::int64_t conv_output_extent(std::int64_t n, std::int64_t k, const Conv2dGeometry& g) {
  return (n + 2 * g.pad - k) / g.stride + 1;
}

/// Checks x[B, Ci, H, W], w[Co, Ci, kh, kw], bias [Co] or empty, y[B, Co, Ho, Wo] and the geometry;
/// `op` names the calling op in every message.
template <class T, class M>
void check_conv2d_args(const TensorView<const T, 4, M>& x, const TensorView<const T, 4, M>& w,
                       const TensorView<const T, 1, M>& bias, const Extents<4>& y, const Conv2dGeometry& g,
                       const char* op) {
  QLIP_CHECK(g.stride >= 1 && g.pad >= 0, op, ": stride ", g.stride, " and padding ", g.pad,
             " (stride must be ≥ 1, padding ≥ 0)");
  QLIP_CHECK(w.size(1) == x.size(1), op, ": weight ", shape_string<4>(w.shape()), " takes ", w.size(1),
             " input channels, x ", shape_string<4>(x.shape()), " has ", x.size(1));
  QLIP_CHECK(w.size(2) >= 1 && w.size(3) >= 1 && x.size(2) + 2 * g.pad >= w.size(2) && x.size(3) + 2 * g.pad >= w.size(3),
             op, ": kernel ", w.size(2), "x", w.size(3), " does not fit the padded image ", x.size(2) + 2 * g.pad, "x",
             x.size(3) + 2 * g.pad);
  QLIP_CHECK(bias.empty() || bias.size(0) == w.size(0), op, ": bias has ", bias.size(0), " elements, expected ",
             w.size(0), " (one per output channel)");
  const Extents<4> want{x.size(0), w.size(0), conv_output_extent(x.size(2), w.size(2), g),
                        conv_output_extent(x.size(3), w.size(3), g)};
  QLIP_CHECK(y == want, op, ": output has shape ", shape_string<4>(y), ", expected ", shape_string<4>(want));
}

/// Checks the backward's arguments: dy of the forward output's shape, dx/dw/db empty or shaped as
/// x/w/[Co].
template <class T, class M>
void check_conv2d_backward_args(const TensorView<const T, 4, M>& x, const TensorView<const T, 4, M>& w,
                                const TensorView<const T, 4, M>& dy, const TensorView<T, 4, M>& dx,
                                const TensorView<T, 4, M>& dw, const TensorView<T, 1, M>& db,
                                const Conv2dGeometry& g) {
  check_conv2d_args(x, w, TensorView<const T, 1, M>(), dy.shape(), g, "conv2d_backward");
  if (!dx.empty()) check_shape(dx, x.shape(), "conv2d_backward: dx");
  if (!dw.empty()) check_shape(dw, w.shape(), "conv2d_backward: dw");
  if (!db.empty()) check_shape(db, Extents<1>{w.size(0)}, "conv2d_backward: db");
}

/// Checks x[B, C, H, W] (H, W ≥ 2) against y[B, C, H/2, W/2].
template <class T, class M>
void check_max_pool2x2_args(const TensorView<const T, 4, M>& x, const Extents<4>& y, const char* op) {
  QLIP_CHECK(x.size(2) >= 2 && x.size(3) >= 2, op, ": input ", shape_string<4>(x.shape()),
             " is smaller than the 2x2 window");
  const Extents<4> want{x.size(0), x.size(1), x.size(2) / 2, x.size(3) / 2};
  QLIP_CHECK(y == want, op, ": output has shape ", shape_string<4>(y), ", expected ", shape_string<4>(want));
}

/// The window position (0..3, row-major) of the first maximum of the 2×2 window at output (i, j).
template <class V>
int max_pool2x2_argmax(const V& x, std::int64_t b, std::int64_t c, std::int64_t i, std::int64_t j) {
  int best = 0;
  auto at = [&](int k) { return x(b, c, 2 * i + k / 2, 2 * j + k % 2); };
  for (int k = 1; k < 4; ++k)
    if (at(k) > at(best)) best = k;
  return best;
}

}  // namespace detail

namespace reference {

/// y = conv2d(x, w) + bias, accumulated in double and rounded once per element.
/// @param x    [B, Ci, H, W]
/// @param w    [Co, Ci, kh, kw]
/// @param bias [Co], or empty for none
/// @param y    [B, Co, Ho, Wo] written; may not alias x
template <class T>
void conv2d(HostView<const T, 4> x, HostView<const T, 4> w, HostView<const T, 1> bias, HostView<T, 4> y,
            Conv2dGeometry g) {
  detail::check_conv2d_args(x, w, bias, y.shape(), g, "conv2d");
  const std::int64_t ci = x.size(1), h = x.size(2), wd = x.size(3), kh = w.size(2), kw = w.size(3);
  for (std::int64_t b = 0; b < y.size(0); ++b)
    for (std::int64_t o = 0; o < y.size(1); ++o)
      for (std::int64_t i = 0; i < y.size(2); ++i)
        for (std::int64_t j = 0; j < y.size(3); ++j) {
          double acc = bias.empty() ? 0.0 : static_cast<double>(bias(o));
          for (std::int64_t c = 0; c < ci; ++c)
            for (std::int64_t u = 0; u < kh; ++u) {
              const std::int64_t r = i * g.stride + u - g.pad;
              if (r < 0 || r >= h) continue;
              for (std::int64_t v = 0; v < kw; ++v) {
                const std::int64_t s = j * g.stride + v - g.pad;
                if (s < 0 || s >= wd) continue;
                acc += static_cast<double>(w(o, c, u, v)) * static_cast<double>(x(b, c, r, s));
              }
            }
          y(b, o, i, j) = static_cast<T>(acc);
        }
}

/// Backward of conv2d for the upstream gradient dy [B, Co, Ho, Wo]:
///   dx[b, c, r, s] = Σ_{o, u, v: r = i·s + u − p, s = j·s + v − p} w[o, c, u, v] · dy[b, o, i, j]  (=)
///   dw[o, c, u, v] += Σ_{b, i, j} dy[b, o, i, j] · x[b, c, i·s + u − p, j·s + v − p]
///   db[o] += Σ_{b, i, j} dy[b, o, i, j]
/// Each sum in double, rounded once.
template <class T>
void conv2d_backward(HostView<const T, 4> x, HostView<const T, 4> w, HostView<const T, 4> dy, HostView<T, 4> dx,
                     HostView<T, 4> dw, HostView<T, 1> db, Conv2dGeometry g) {
  detail::check_conv2d_backward_args(x, w, dy, dx, dw, db, g);
  const std::int64_t n = x.size(0), ci = x.size(1), h = x.size(2), wd = x.size(3);
  const std::int64_t co = w.size(0), kh = w.size(2), kw = w.size(3), ho = dy.size(2), wo = dy.size(3);
  if (!dx.empty())
    for (std::int64_t b = 0; b < n; ++b)
      for (std::int64_t c = 0; c < ci; ++c)
        for (std::int64_t r = 0; r < h; ++r)
          for (std::int64_t s = 0; s < wd; ++s) {
            double acc = 0.0;
            for (std::int64_t u = 0; u < kh; ++u) {
              const std::int64_t ti = r + g.pad - u;  // = i·stride
              if (ti < 0 || ti % g.stride != 0 || ti / g.stride >= ho) continue;
              for (std::int64_t v = 0; v < kw; ++v) {
                const std::int64_t tj = s + g.pad - v;
                if (tj < 0 || tj % g.stride != 0 || tj / g.stride >= wo) continue;
                for (std::int64_t o = 0; o < co; ++o)
                  acc += static_cast<double>(w(o, c, u, v)) * static_cast<double>(dy(b, o, ti / g.stride, tj / g.stride));
              }
            }
            dx(b, c, r, s) = static_cast<T>(acc);
          }
  if (!dw.empty())
    for (std::int64_t o = 0; o < co; ++o)
      for (std::int64_t c = 0; c < ci; ++c)
        for (std::int64_t u = 0; u < kh; ++u)
          for (std::int64_t v = 0; v < kw; ++v) {
            double acc = 0.0;
            for (std::int64_t b = 0; b < n; ++b)
              for (std::int64_t i = 0; i < ho; ++i) {
                const std::int64_t r = i * g.stride + u - g.pad;
                if (r < 0 || r >= h) continue;
                for (std::int64_t j = 0; j < wo; ++j) {
                  const std::int64_t s = j * g.stride + v - g.pad;
                  if (s < 0 || s >= wd) continue;
                  acc += static_cast<double>(dy(b, o, i, j)) * static_cast<double>(x(b, c, r, s));
                }
              }
            dw(o, c, u, v) = static_cast<T>(static_cast<double>(dw(o, c, u, v)) + acc);
          }
  if (!db.empty())
    for (std::int64_t o = 0; o < co; ++o) {
      double acc = 0.0;
      for (std::int64_t b = 0; b < n; ++b)
        for (std::int64_t i = 0; i < ho; ++i)
          for (std::int64_t j = 0; j < wo; ++j) acc += static_cast<double>(dy(b, o, i, j));
      db(o) = static_cast<T>(static_cast<double>(db(o)) + acc);
    }
}

/// y = 2×2 max pooling with stride 2.
/// @param x [B, C, H, W]
/// @param y [B, C, H/2, W/2] written
template <class T>
void max_pool2x2(HostView<const T, 4> x, HostView<T, 4> y) {
  detail::check_max_pool2x2_args(x, y.shape(), "max_pool2x2");
  for (std::int64_t b = 0; b < y.size(0); ++b)
    for (std::int64_t c = 0; c < y.size(1); ++c)
      for (std::int64_t i = 0; i < y.size(2); ++i)
        for (std::int64_t j = 0; j < y.size(3); ++j) {
          const int k = detail::max_pool2x2_argmax(x, b, c, i, j);
          y(b, c, i, j) = x(b, c, 2 * i + k / 2, 2 * j + k % 2);
        }
}

/// dx = dy at each window's first maximum, 0 elsewhere (=).
/// @param x  [B, C, H, W] the forward input
/// @param dy [B, C, H/2, W/2]
/// @param dx [B, C, H, W] written
template <class T>
void max_pool2x2_backward(HostView<const T, 4> x, HostView<const T, 4> dy, HostView<T, 4> dx) {
  detail::check_max_pool2x2_args(x, dy.shape(), "max_pool2x2_backward");
  check_shape(dx, x.shape(), "max_pool2x2_backward: dx");
  for (std::int64_t b = 0; b < x.size(0); ++b)
    for (std::int64_t c = 0; c < x.size(1); ++c)
      for (std::int64_t r = 0; r < x.size(2); ++r)
        for (std::int64_t s = 0; s < x.size(3); ++s) dx(b, c, r, s) = T(0);
  for (std::int64_t b = 0; b < dy.size(0); ++b)
    for (std::int64_t c = 0; c < dy.size(1); ++c)
      for (std::int64_t i = 0; i < dy.size(2); ++i)
        for (std::int64_t j = 0; j < dy.size(3); ++j) {
          const int k = detail::max_pool2x2_argmax(x, b, c, i, j);
          dx(b, c, 2 * i + k / 2, 2 * j + k % 2) = dy(b, c, i, j);
        }
}

}  // namespace reference
}  // namespace qlip
