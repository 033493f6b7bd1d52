/// @file conv2d.hpp
/// @brief CPU 2-D convolution and 2×2 max pooling (formulas, contracts and checks as
///        reference/conv2d.hpp), as im2col + one GEMM per image:
///   col[(c·kh + u)·kw + v, i·Wo + j] = x[b, c, i·s + u − p, j·s + v − p]   (0 outside)
///   y[b] = w[Co, Ci·kh·kw] · col + bias        dcol = wᵀ · dy[b], dx[b] = col2im(dcol)
///   dw += Σ_b dy[b] · colᵀ,  db += Σ_b Σ_ij dy[b]
///
/// Threads take whole images (one serial Eigen GEMM each, in one parallel region); with fewer
/// images than threads the images run in turn and Eigen threads each product instead. The weight
/// gradient is summed per thread and the partial sums are added in thread order, so results depend
/// on the thread count only through that order. Workspace (the column buffers and the partial weight
/// gradients) comes from the caller's Arena: conv2d_workspace_bytes sizes it.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/cpu/gemm.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/reference/conv2d.hpp"

namespace qlip {
namespace detail::cpu {

/// The shapes of one convolution.
struct ConvPlan {
  std::int64_t batch, ci, h, w, co, kh, kw, ho, wo;
  std::int64_t k() const { return ci * kh * kw; }
  std::int64_t pixels() const { return ho * wo; }
  /// Threads over images: all of them when there are at least as many images, else 1 (the GEMM
  /// threads itself).
  int threads() const {
    const int t = qlip::num_threads();
    return batch >= t ? t : 1;
  }
};

inline ConvPlan conv_plan(const Extents<4>& x, const Extents<4>& w, const Conv2dGeometry& g) {
  return {x[0], x[1], x[2], x[3], w[0], w[2], w[3], conv_output_extent(x[2], w[2], g), conv_output_extent(x[3], w[3], g)};
}

/// The output columns j whose input column j·stride + v − pad lies inside [0, w): [lo, hi).
struct ColumnRange {
  std::int64_t lo, hi;
};
inline ColumnRange valid_columns(std::int64_t v, std::int64_t w, std::int64_t wo, const Conv2dGeometry& g) {
  const std::int64_t first = g.pad - v, last = w - 1 + g.pad - v;  // bounds of j·stride
  const std::int64_t lo = first > 0 ? (first + g.stride - 1) / g.stride : 0;
  const std::int64_t hi = last < 0 ? 0 : std::min(wo, last / g.stride + 1);
  return {std::min(lo, hi), hi};
}

/// Fills col [K, Ho·Wo] (row-major) from image b of x (any strides). Per kernel tap, the in-range
/// columns of a row are found once, so the inner loop is a plain (for stride 1: contiguous) copy.
inline void im2col(const HostView<const float, 4>& x, std::int64_t b, const ConvPlan& p, const Conv2dGeometry& g,
                   float* col) {
  const float* xb = x.data() + b * x.stride(0);
  const std::int64_t sc = x.stride(1), sr = x.stride(2), ss = x.stride(3);
  for (std::int64_t c = 0; c < p.ci; ++c)
    for (std::int64_t u = 0; u < p.kh; ++u)
      for (std::int64_t v = 0; v < p.kw; ++v) {
        float* row = col + ((c * p.kh + u) * p.kw + v) * p.pixels();
        const ColumnRange cols = valid_columns(v, p.w, p.wo, g);
        for (std::int64_t i = 0; i < p.ho; ++i) {
          const std::int64_t r = i * g.stride + u - g.pad;
          float* out = row + i * p.wo;
          if (r < 0 || r >= p.h) {
            std::fill(out, out + p.wo, 0.0f);
            continue;
          }
          std::fill(out, out + cols.lo, 0.0f);
          std::fill(out + cols.hi, out + p.wo, 0.0f);
          if (cols.hi <= cols.lo) continue;
          // Column j reads input column s = j·stride + v − pad.
          const float* src = xb + c * sc + r * sr + (cols.lo * g.stride + v - g.pad) * ss;
          if (g.stride == 1 && ss == 1) {
            std::copy(src, src + (cols.hi - cols.lo), out + cols.lo);
          } else {
            const std::int64_t step = g.stride * ss;
            for (std::int64_t j = 0; j < cols.hi - cols.lo; ++j) out[cols.lo + j] = src[j * step];
          }
        }
      }
}

/// dx[b] = col2im(dcol): every column entry added back to the pixel it was read from (=). dx's H, W
/// are contiguous (the caller checks).
inline void col2im(const float* dcol, std::int64_t b, const ConvPlan& p, const Conv2dGeometry& g,
                   const HostView<float, 4>& dx) {
  float* xb = dx.data() + b * dx.stride(0);
  const std::int64_t sc = dx.stride(1);
  for (std::int64_t c = 0; c < p.ci; ++c) std::fill(xb + c * sc, xb + c * sc + p.h * p.w, 0.0f);
  for (std::int64_t c = 0; c < p.ci; ++c)
    for (std::int64_t u = 0; u < p.kh; ++u)
      for (std::int64_t v = 0; v < p.kw; ++v) {
        const float* row = dcol + ((c * p.kh + u) * p.kw + v) * p.pixels();
        const ColumnRange cols = valid_columns(v, p.w, p.wo, g);
        for (std::int64_t i = 0; i < p.ho; ++i) {
          const std::int64_t r = i * g.stride + u - g.pad;
          if (r < 0 || r >= p.h) continue;
          if (cols.hi <= cols.lo) continue;
          float* dst = xb + c * sc + r * p.w + (cols.lo * g.stride + v - g.pad);  // column j adds to s = j·stride + v − pad
          const float* in = row + i * p.wo + cols.lo;
          for (std::int64_t j = 0; j < cols.hi - cols.lo; ++j) dst[j * g.stride] += in[j];
        }
      }
}

/// Image b of a [B, C, H, W] tensor as the [C, H·W] matrix (needs contiguous H, W).
template <class T>
HostView<T, 2> image_matrix(const HostView<T, 4>& t, std::int64_t b) {
  return HostView<T, 2>(t.data() + b * t.stride(0), {t.size(1), t.size(2) * t.size(3)}, {t.stride(1), 1});
}

/// Whether H and W of t are contiguous (so an image is a [C, H·W] matrix with a row stride).
template <class T>
bool spatially_contiguous(const HostView<T, 4>& t) {
  return t.stride(3) == 1 && t.stride(2) == t.size(3);
}

}  // namespace detail::cpu

namespace ops {

/// Arena bytes conv2d and conv2d_backward need for these shapes with the current thread count.
inline std::size_t conv2d_workspace_bytes(cpu_backend, const Extents<4>& x, const Extents<4>& w, Conv2dGeometry g) {
  const detail::cpu::ConvPlan p = detail::cpu::conv_plan(x, w, g);
  const std::size_t per_thread = static_cast<std::size_t>(2 * p.k() * p.pixels() + p.co * p.k());
  return static_cast<std::size_t>(p.threads()) * (per_thread * sizeof(float) + 2 * kHostAlignment);
}

/// y = conv2d(x, w) + bias (reference::conv2d). H, W of x and y must be contiguous.
/// @param ws scratch, conv2d_workspace_bytes of it
inline void conv2d(cpu_backend, Arena& ws, HostView<const float, 4> x, HostView<const float, 4> w,
                   HostView<const float, 1> bias, HostView<float, 4> y, Conv2dGeometry g) {
  detail::check_conv2d_args(x, w, bias, y.shape(), g, "conv2d");
  QLIP_CHECK(detail::cpu::spatially_contiguous(y) && w.is_contiguous(), "conv2d: the CPU op needs contiguous H, W "
             "of y and a contiguous weight");
  const detail::cpu::ConvPlan p = detail::cpu::conv_plan(x.shape(), w.shape(), g);
  const HostView<const float, 2> w2(w.data(), {p.co, p.k()});
  const int threads = p.threads();
  ArenaScope scope(ws);
  float* cols = ws.allocate<float>(threads * p.k() * p.pixels());
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (std::int64_t b = 0; b < p.batch; ++b) {
    float* col = cols + omp_get_thread_num() * p.k() * p.pixels();
    detail::cpu::im2col(x, b, p, g, col);
    const HostView<float, 2> yb = detail::cpu::image_matrix(y, b);
    detail::cpu::gemm_unchecked(w2, HostView<const float, 2>(col, {p.k(), p.pixels()}), yb, 1.0f, 0.0f);
    if (!bias.empty())
      for (std::int64_t o = 0; o < p.co; ++o) {
        float* row = yb.data() + o * yb.stride(0);
        const float bo = bias(o);
        for (std::int64_t j = 0; j < p.pixels(); ++j) row[j] += bo;
      }
  }
}

/// Backward of conv2d (reference::conv2d_backward): dx (=), dw (+=), db (+=); empty views skipped.
/// H, W of dy and dx must be contiguous, w and dw contiguous.
inline void conv2d_backward(cpu_backend, Arena& ws, HostView<const float, 4> x, HostView<const float, 4> w,
                            HostView<const float, 4> dy, HostView<float, 4> dx, HostView<float, 4> dw,
                            HostView<float, 1> db, Conv2dGeometry g) {
  detail::check_conv2d_backward_args(x, w, dy, dx, dw, db, g);
  QLIP_CHECK(detail::cpu::spatially_contiguous(dy) && (dx.empty() || detail::cpu::spatially_contiguous(dx)) &&
                 w.is_contiguous() && (dw.empty() || dw.is_contiguous()),
             "conv2d_backward: the CPU op needs contiguous H, W of dy and dx and contiguous w and dw");
  const detail::cpu::ConvPlan p = detail::cpu::conv_plan(x.shape(), w.shape(), g);
  const HostView<const float, 2> w2(w.data(), {p.co, p.k()});
  const int threads = p.threads();
  const std::int64_t col_n = p.k() * p.pixels(), dw_n = p.co * p.k();
  ArenaScope scope(ws);
  float* cols = ws.allocate<float>(threads * col_n);
  float* dcols = dx.empty() ? nullptr : ws.allocate<float>(threads * col_n);
  float* dws = dw.empty() ? nullptr : ws.allocate<float>(threads * dw_n);
  if (dws) std::fill(dws, dws + threads * dw_n, 0.0f);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const int t = omp_get_thread_num();
    const HostView<const float, 2> dyb = detail::cpu::image_matrix(dy, b);
    float* col = cols + t * col_n;
    if (dws) {
      detail::cpu::im2col(x, b, p, g, col);
      const HostView<const float, 2> colv(col, {p.k(), p.pixels()});
      detail::cpu::gemm_unchecked(dyb, colv.transpose(0, 1), HostView<float, 2>(dws + t * dw_n, {p.co, p.k()}), 1.0f,
                                  1.0f);
    }
    if (dcols) {
      float* dcol = dcols + t * col_n;
      detail::cpu::gemm_unchecked(w2.transpose(0, 1), dyb, HostView<float, 2>(dcol, {p.k(), p.pixels()}), 1.0f, 0.0f);
      detail::cpu::col2im(dcol, b, p, g, dx);
    }
  }
  if (dws) {
    float* out = dw.data();
    for (int t = 0; t < threads; ++t) {
      const float* part = dws + t * dw_n;
      for (std::int64_t i = 0; i < dw_n; ++i) out[i] += part[i];
    }
  }
  if (!db.empty())
#pragma omp parallel for schedule(static) if (dy.numel() >= 65536)
    for (std::int64_t o = 0; o < p.co; ++o) {
      // Eight interleaved double partial sums: one chain of dependent adds would be latency-bound.
      double lane[8] = {};
      for (std::int64_t b = 0; b < p.batch; ++b) {
        const float* row = dy.data() + b * dy.stride(0) + o * dy.stride(1);
        std::int64_t j = 0;
        for (; j + 8 <= p.pixels(); j += 8)
          for (int l = 0; l < 8; ++l) lane[l] += static_cast<double>(row[j + l]);
        for (; j < p.pixels(); ++j) lane[j % 8] += static_cast<double>(row[j]);
      }
      double acc = 0.0;
      for (double v : lane) acc += v;
      db(o) += static_cast<float>(acc);
    }
}

/// 2×2 max pooling, stride 2 (reference::max_pool2x2; ties go to the first maximum).
inline void max_pool2x2(cpu_backend, HostView<const float, 4> x, HostView<float, 4> y) {
  detail::check_max_pool2x2_args(x, y.shape(), "max_pool2x2");
  const std::int64_t planes = y.size(0) * y.size(1);
#pragma omp parallel for schedule(static) if (x.numel() >= 65536)
  for (std::int64_t pc = 0; pc < planes; ++pc) {
    const std::int64_t b = pc / y.size(1), c = pc % y.size(1);
    for (std::int64_t i = 0; i < y.size(2); ++i)
      for (std::int64_t j = 0; j < y.size(3); ++j) {
        const int k = detail::max_pool2x2_argmax(x, b, c, i, j);
        y(b, c, i, j) = x(b, c, 2 * i + k / 2, 2 * j + k % 2);
      }
  }
}

/// dx = dy at each window's first maximum, 0 elsewhere (=).
inline void max_pool2x2_backward(cpu_backend, HostView<const float, 4> x, HostView<const float, 4> dy,
                                 HostView<float, 4> dx) {
  detail::check_max_pool2x2_args(x, dy.shape(), "max_pool2x2_backward");
  check_shape(dx, x.shape(), "max_pool2x2_backward: dx");
  const std::int64_t planes = dy.size(0) * dy.size(1);
#pragma omp parallel for schedule(static) if (x.numel() >= 65536)
  for (std::int64_t pc = 0; pc < planes; ++pc) {
    const std::int64_t b = pc / dy.size(1), c = pc % dy.size(1);
    for (std::int64_t r = 0; r < x.size(2); ++r)
      for (std::int64_t s = 0; s < x.size(3); ++s) dx(b, c, r, s) = 0.0f;
    for (std::int64_t i = 0; i < dy.size(2); ++i)
      for (std::int64_t j = 0; j < dy.size(3); ++j) {
        const int k = detail::max_pool2x2_argmax(x, b, c, i, j);
        dx(b, c, 2 * i + k / 2, 2 * j + k % 2) = dy(b, c, i, j);
      }
  }
}

}  // namespace ops
}  // namespace qlip
