/// @file conv2d.cuh
/// @brief 2-D convolution (NCHW, stride, zero padding) and 2×2 max pooling on the CUDA backend,
///        forward and backward (reference/conv2d.hpp: the same contract; the layers of LPIPS' VGG16
///        and of the stage-2 discriminator).
///
/// Convolution is im2col + cuBLASLt per image: cols [Ci·kh·kw, Ho·Wo] in caller-owned workspace,
/// y[b] = w·cols, then the bias. The backward reuses the same columns: dw += dy[b]·colsᵀ by
/// cuBLASLt (beta = 1), dcols = wᵀ·dy[b], then col2im as a gather (one thread per input pixel
/// sums its (u, v) taps in a fixed order), and db += Σ dy by one thread per channel: deterministic.
#pragma once

#include <cstdint>

#include "common.cuh"
#include "gemm.cuh"
#include "qlip/reference/conv2d.hpp"

namespace qlip {
namespace cuda {

/// Elements of the workspace conv2d and conv2d_backward need: one image's columns, and for the
/// backward their gradient too (2 × Ci·kh·kw × Ho·Wo).
inline std::int64_t conv2d_workspace_elements(const Extents<4>& x, const Extents<4>& w, const Conv2dGeometry& g) {
  const std::int64_t ho = qlip::detail::conv_output_extent(x[2], w[2], g);
  const std::int64_t wo = qlip::detail::conv_output_extent(x[3], w[3], g);
  return 2 * x[1] * w[2] * w[3] * ho * wo;
}

namespace detail {

/// cols[(c·kh + u)·kw + v, i·Wo + j] = x[b, c, i·s + u − p, j·s + v − p] (0 outside the image).
QLIP_KERNEL void im2col_kernel(DeviceView<const float, 4> x, std::int64_t b, std::int64_t kh, std::int64_t kw,
                               Conv2dGeometry g, std::int64_t ho, std::int64_t wo, DeviceView<float, 2> cols) {
  const std::int64_t n = cols.numel(), width = cols.size(1);
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t row = e / width, col = e % width;
    const std::int64_t c = row / (kh * kw), u = (row / kw) % kh, v = row % kw, i = col / wo, j = col % wo;
    const std::int64_t r = i * g.stride + u - g.pad, s = j * g.stride + v - g.pad;
    cols(row, col) = (r >= 0 && r < x.size(2) && s >= 0 && s < x.size(3)) ? x(b, c, r, s) : 0.0f;
  }
}

/// dx[b, c, r, s] = Σ_{u, v} dcols[(c·kh + u)·kw + v, i·Wo + j] over the taps with r = i·s + u − p,
/// s = j·s + v − p inside the output (=), u then v in order.
QLIP_KERNEL void col2im_kernel(DeviceView<const float, 2> dcols, std::int64_t b, std::int64_t kh, std::int64_t kw,
                               Conv2dGeometry g, std::int64_t ho, std::int64_t wo, DeviceView<float, 4> dx) {
  const std::int64_t ci = dx.size(1), h = dx.size(2), wd = dx.size(3), n = ci * h * wd;
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t c = e / (h * wd), r = (e / wd) % h, s = e % wd;
    float acc = 0.0f;
    for (std::int64_t u = 0; u < kh; ++u) {
      const std::int64_t ti = r + g.pad - u;
      if (ti < 0 || ti % g.stride != 0 || ti / g.stride >= ho) continue;
      for (std::int64_t v = 0; v < kw; ++v) {
        const std::int64_t tj = s + g.pad - v;
        if (tj < 0 || tj % g.stride != 0 || tj / g.stride >= wo) continue;
        acc += dcols((c * kh + u) * kw + v, (ti / g.stride) * wo + tj / g.stride);
      }
    }
    dx(b, c, r, s) = acc;
  }
}

/// y[b, o, :, :] += bias[o].
QLIP_KERNEL void conv_bias_kernel(DeviceView<float, 4> y, DeviceView<const float, 1> bias) {
  const std::int64_t n = y.numel(), co = y.size(1), plane = y.size(2) * y.size(3);
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t b = e / (co * plane), o = (e / plane) % co, p = e % plane;
    y(b, o, p / y.size(3), p % y.size(3)) += bias(o);
  }
}

/// db[o] += Σ_{b, i, j} dy[b, o, i, j], one thread per channel, in double, in order.
QLIP_KERNEL void conv_bias_grad_kernel(DeviceView<const float, 4> dy, DeviceView<float, 1> db) {
  const std::int64_t o = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (o >= dy.size(1)) return;
  double acc = 0.0;
  for (std::int64_t b = 0; b < dy.size(0); ++b)
    for (std::int64_t i = 0; i < dy.size(2); ++i)
      for (std::int64_t j = 0; j < dy.size(3); ++j) acc += static_cast<double>(dy(b, o, i, j));
  db(o) = static_cast<float>(static_cast<double>(db(o)) + acc);
}

/// The window position (0..3, row-major) of the first maximum of the 2×2 window at (i, j).
__device__ inline int pool_argmax(const DeviceView<const float, 4>& x, std::int64_t b, std::int64_t c, std::int64_t i,
                                  std::int64_t j) {
  int best = 0;
  for (int k = 1; k < 4; ++k)
    if (x(b, c, 2 * i + k / 2, 2 * j + k % 2) > x(b, c, 2 * i + best / 2, 2 * j + best % 2)) best = k;
  return best;
}

/// Forward (dy empty: y = the window max) or backward (dx at each window's first maximum = dy,
/// the other three 0), one thread per output element; every dx element belongs to at most one
/// window, and the odd trailing row/column of dx is zeroed by max_pool_zero_tail_kernel.
QLIP_KERNEL void max_pool_kernel(DeviceView<const float, 4> x, DeviceView<const float, 4> dy,
                                 DeviceView<float, 4> out) {
  const std::int64_t c_n = x.size(1), ho = x.size(2) / 2, wo = x.size(3) / 2, n = x.size(0) * c_n * ho * wo;
  const bool backward = dy.numel() > 0;
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t j = e % wo, i = (e / wo) % ho, c = (e / (wo * ho)) % c_n, b = e / (wo * ho * c_n);
    const int k = pool_argmax(x, b, c, i, j);
    if (!backward) {
      out(b, c, i, j) = x(b, c, 2 * i + k / 2, 2 * j + k % 2);
      continue;
    }
    for (int q = 0; q < 4; ++q) out(b, c, 2 * i + q / 2, 2 * j + q % 2) = q == k ? dy(b, c, i, j) : 0.0f;
  }
}

/// dx's last row / column when H / W is odd (no window covers them): 0.
QLIP_KERNEL void max_pool_zero_tail_kernel(DeviceView<float, 4> dx) {
  const std::int64_t n = dx.numel(), h = dx.size(2), w = dx.size(3);
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t s = e % w, r = (e / w) % h;
    if (r >= h / 2 * 2 || s >= w / 2 * 2) dx(e / (w * h * dx.size(1)), (e / (w * h)) % dx.size(1), r, s) = 0.0f;
  }
}

/// The columns (first half) and their gradient (second half) of the workspace, checked.
inline DeviceView<float, 2> conv_columns(DeviceView<float, 1> ws, std::int64_t rows, std::int64_t width, int half,
                                         const char* op) {
  QLIP_CHECK(ws.stride(0) == 1 || ws.size(0) <= 1, op, ": the workspace must be contiguous");
  QLIP_CHECK(ws.size(0) >= (half + 1) * rows * width, op, ": the workspace has ", ws.size(0), " elements, needs ",
             (half + 1) * rows * width, " (cuda::conv2d_workspace_elements)");
  return DeviceView<float, 2>(ws.data() + half * rows * width, {rows, width}, {width, 1});
}

}  // namespace detail
}  // namespace cuda

namespace ops {

/// y = conv2d(x, w) + bias on the device (reference::conv2d). workspace: at least
/// cuda::conv2d_workspace_elements(x, w, g) / 2 elements of device memory.
inline void conv2d(cuda_backend be, const cuda::BlasLt& lt, DeviceView<const float, 4> x, DeviceView<const float, 4> w,
                   DeviceView<const float, 1> bias, DeviceView<float, 4> y, Conv2dGeometry g,
                   DeviceView<float, 1> workspace, cudaStream_t stream = 0) {
  detail::check_conv2d_args(cuda::sizes_only(x), cuda::sizes_only(w), cuda::sizes_only(bias), y.shape(), g, "conv2d");
  QLIP_CHECK(w.stride(3) == 1 && w.stride(2) == w.size(3) && w.stride(1) == w.size(2) * w.size(3),
             "conv2d: the weight must be contiguous");
  QLIP_CHECK(y.stride(3) == 1 && y.stride(2) == y.size(3) && y.stride(1) == y.size(2) * y.size(3),
             "conv2d: each output image must be contiguous");
  const std::int64_t k = x.size(1) * w.size(2) * w.size(3), ho = y.size(2), wo = y.size(3), co = w.size(0);
  if (y.numel() == 0) return;
  const DeviceView<float, 2> cols = cuda::detail::conv_columns(workspace, k, ho * wo, 0, "conv2d");
  const DeviceView<const float, 2> w2(w.data(), {co, k}, {w.stride(0), 1});
  constexpr int kThreads = 256;
  for (std::int64_t b = 0; b < x.size(0); ++b) {
    cuda::detail::im2col_kernel<<<cuda::grid_for(cols.numel(), kThreads), kThreads, 0, stream>>>(
        x, b, w.size(2), w.size(3), g, ho, wo, cols);
    QLIP_CUDA_CHECK_LAUNCH();
    const DeviceView<float, 2> yb(y.data() + b * y.stride(0), {co, ho * wo}, {y.stride(1), 1});
    gemm(be, lt, w2, cols, yb, 1.0f, 0.0f, cuda::FloatMath::fp32, stream);
  }
  if (!bias.empty()) {
    cuda::detail::conv_bias_kernel<<<cuda::grid_for(y.numel(), kThreads), kThreads, 0, stream>>>(y, bias);
    QLIP_CUDA_CHECK_LAUNCH();
  }
}

/// Backward of conv2d (reference::conv2d_backward: dx written, dw and db accumulated, empty views
/// skipped). workspace: at least cuda::conv2d_workspace_elements(x, w, g) elements.
inline void conv2d_backward(cuda_backend be, const cuda::BlasLt& lt, DeviceView<const float, 4> x,
                            DeviceView<const float, 4> w, DeviceView<const float, 4> dy, DeviceView<float, 4> dx,
                            DeviceView<float, 4> dw, DeviceView<float, 1> db, Conv2dGeometry g,
                            DeviceView<float, 1> workspace, cudaStream_t stream = 0) {
  detail::check_conv2d_backward_args(cuda::sizes_only(x), cuda::sizes_only(w), cuda::sizes_only(dy),
                                     cuda::sizes_only(dx), cuda::sizes_only(dw), cuda::sizes_only(db), g);
  QLIP_CHECK(w.stride(3) == 1 && w.stride(2) == w.size(3) && w.stride(1) == w.size(2) * w.size(3),
             "conv2d_backward: the weight must be contiguous");
  QLIP_CHECK(dw.empty() || (dw.stride(3) == 1 && dw.stride(2) == dw.size(3) && dw.stride(1) == dw.size(2) * dw.size(3)),
             "conv2d_backward: dw must be contiguous");
  QLIP_CHECK(dy.stride(3) == 1 && dy.stride(2) == dy.size(3) && dy.stride(1) == dy.size(2) * dy.size(3),
             "conv2d_backward: each dy image must be contiguous");
  const std::int64_t k = x.size(1) * w.size(2) * w.size(3), ho = dy.size(2), wo = dy.size(3), co = w.size(0);
  constexpr int kThreads = 256;
  if (!db.empty()) {
    cuda::detail::conv_bias_grad_kernel<<<cuda::grid_for(co, kThreads), kThreads, 0, stream>>>(dy, db);
    QLIP_CUDA_CHECK_LAUNCH();
  }
  if ((dx.empty() && dw.empty()) || dy.numel() == 0) return;
  const DeviceView<float, 2> cols = cuda::detail::conv_columns(workspace, k, ho * wo, 0, "conv2d_backward");
  const DeviceView<float, 2> dcols = cuda::detail::conv_columns(workspace, k, ho * wo, 1, "conv2d_backward");
  const DeviceView<const float, 2> w2(w.data(), {co, k}, {w.stride(0), 1});
  for (std::int64_t b = 0; b < x.size(0); ++b) {
    const DeviceView<const float, 2> dyb(dy.data() + b * dy.stride(0), {co, ho * wo}, {dy.stride(1), 1});
    if (!dw.empty()) {
      cuda::detail::im2col_kernel<<<cuda::grid_for(cols.numel(), kThreads), kThreads, 0, stream>>>(
          x, b, w.size(2), w.size(3), g, ho, wo, cols);
      QLIP_CUDA_CHECK_LAUNCH();
      const DeviceView<float, 2> dw2(dw.data(), {co, k}, {dw.stride(0), 1});
      gemm(be, lt, dyb, DeviceView<const float, 2>(cols).transpose(0, 1), dw2, 1.0f, 1.0f, cuda::FloatMath::fp32,
           stream);
    }
    if (!dx.empty()) {
      gemm(be, lt, w2.transpose(0, 1), dyb, dcols, 1.0f, 0.0f, cuda::FloatMath::fp32, stream);
      cuda::detail::col2im_kernel<<<cuda::grid_for(x.size(1) * x.size(2) * x.size(3), kThreads), kThreads, 0, stream>>>(
          dcols, b, w.size(2), w.size(3), g, ho, wo, dx);
      QLIP_CUDA_CHECK_LAUNCH();
    }
  }
}

/// y = 2×2 max pooling with stride 2 (reference::max_pool2x2: the first maximum of each window).
inline void max_pool2x2(cuda_backend, DeviceView<const float, 4> x, DeviceView<float, 4> y, cudaStream_t stream = 0) {
  detail::check_max_pool2x2_args(cuda::sizes_only(x), y.shape(), "max_pool2x2");
  if (y.numel() == 0) return;
  constexpr int kThreads = 256;
  cuda::detail::max_pool_kernel<<<cuda::grid_for(y.numel(), kThreads), kThreads, 0, stream>>>(x, {}, y);
  QLIP_CUDA_CHECK_LAUNCH();
}

/// dx = dy at each window's first maximum, 0 elsewhere (=).
inline void max_pool2x2_backward(cuda_backend, DeviceView<const float, 4> x, DeviceView<const float, 4> dy,
                                 DeviceView<float, 4> dx, cudaStream_t stream = 0) {
  detail::check_max_pool2x2_args(cuda::sizes_only(x), dy.shape(), "max_pool2x2_backward");
  check_shape(cuda::sizes_only(dx), x.shape(), "max_pool2x2_backward: dx");
  if (dx.numel() == 0) return;
  constexpr int kThreads = 256;
  cuda::detail::max_pool_kernel<<<cuda::grid_for(dy.numel(), kThreads), kThreads, 0, stream>>>(x, dy, dx);
  QLIP_CUDA_CHECK_LAUNCH();
  if (x.size(2) % 2 == 1 || x.size(3) % 2 == 1) {
    cuda::detail::max_pool_zero_tail_kernel<<<cuda::grid_for(dx.numel(), kThreads), kThreads, 0, stream>>>(dx);
    QLIP_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace ops
}  // namespace qlip
