/// @file rms_norm.cuh
/// @brief RMSNorm on the CUDA backend (Llama, MODEL.md §8.1): the inference and training forwards
///        (one warp per row, fp32) and the backward of reference/rms_norm.hpp (dx one warp per row;
///        dweight a column-parallel reduction over rows). Deterministic: fixed per-lane orders and
///        butterfly/shared-memory reductions, no atomics.
#pragma once

#include "bsq.cuh"  // warp_sum
#include "common.cuh"
#include "qlip/reference/rms_norm.hpp"  // detail::check_rms_norm_*_args (shared by every backend)

namespace qlip {
namespace cuda::detail {

/// Columns per block and row lanes per column of the weight-gradient reduction: 32 columns keep each
/// warp's loads one coalesced 128-byte line per row; the row lanes give a column 16 partial sums,
/// combined in a fixed order.
inline constexpr int kRmsGradCols = 32;
inline constexpr int kRmsGradRowLanes = 16;

/// One warp per row; y = w · (x · rstd) (the order of HF's LlamaRMSNorm and the CPU backend).
/// rstd_out is stored (by lane 0) when non-empty, after it is computed, so the training forward does
/// the same arithmetic as the inference one. Each lane reads x at a column before it writes y there,
/// and only its own columns, so y may alias x.
QLIP_KERNEL void rms_norm_kernel(DeviceView<const float, 2> x, DeviceView<const float, 1> weight, float eps,
                                 DeviceView<float, 2> y, DeviceView<float, 1> rstd_out) {
  const std::int64_t rows = x.size(0), D = x.size(1);
  const int lane = threadIdx.x % 32;
  const std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  if (row >= rows) return;  // whole warps exit together: rows are warp-uniform
  float sq = 0.0f;
  for (std::int64_t c = lane; c < D; c += 32) {
    const float v = x(row, c);
    sq += v * v;
  }
  const float rstd = rsqrtf(warp_sum(sq) / static_cast<float>(D) + eps);
  if (lane == 0 && !rstd_out.empty()) rstd_out(row) = rstd;
  for (std::int64_t c = lane; c < D; c += 32) y(row, c) = weight(c) * (x(row, c) * rstd);
}

/// dweight += Σ_rows dy ⊙ x̂ for kRmsGradCols columns per block: row lane threadIdx.y sums rows
/// y, y + kRmsGradRowLanes, … in order, then row lane 0 adds the partials in lane order. The order
/// depends only on the shape, so the result is reproducible.
QLIP_KERNEL void rms_norm_weight_grad_kernel(DeviceView<const float, 2> x, DeviceView<const float, 1> rstd,
                                             DeviceView<const float, 2> dy, DeviceView<float, 1> dweight) {
  __shared__ float part[kRmsGradRowLanes][kRmsGradCols + 1];  // +1: no bank conflicts on the column read
  const std::int64_t rows = x.size(0), D = x.size(1);
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(kRmsGradCols) + threadIdx.x;
  float acc = 0.0f;
  if (c < D) {
    for (std::int64_t i = threadIdx.y; i < rows; i += kRmsGradRowLanes) acc += dy(i, c) * (x(i, c) * rstd(i));
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || c >= D) return;
  float sum = 0.0f;
  for (int k = 0; k < kRmsGradRowLanes; ++k) sum += part[k][threadIdx.x];
  dweight(c) += sum;
}

/// dx = rstd·(g − x̂·mean(g ⊙ x̂)), g = dy ⊙ w, one warp per row. Each lane reads dy and x at a
/// column before it writes dx there, and only its own columns, so dx may alias dy or x.
QLIP_KERNEL void rms_norm_dx_kernel(DeviceView<const float, 2> x, DeviceView<const float, 1> weight,
                                    DeviceView<const float, 1> rstd, DeviceView<const float, 2> dy,
                                    DeviceView<float, 2> dx) {
  const std::int64_t rows = x.size(0), D = x.size(1);
  const int lane = threadIdx.x % 32;
  const std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  if (row >= rows) return;
  const float r = rstd(row);
  float sum_gx = 0.0f;
  for (std::int64_t c = lane; c < D; c += 32) sum_gx += dy(row, c) * weight(c) * (x(row, c) * r);
  const float mean_gx = warp_sum(sum_gx) / static_cast<float>(D);
  for (std::int64_t c = lane; c < D; c += 32) dx(row, c) = r * (dy(row, c) * weight(c) - (x(row, c) * r) * mean_gx);
}

}  // namespace cuda::detail

namespace ops {

/// y = x / sqrt(mean(x²) + eps) · weight over the last dim of x [M,D]; y may alias x.
inline void rms_norm(cuda_backend, DeviceView<const float, 2> x, DeviceView<const float, 1> weight, float eps,
                     DeviceView<float, 2> y, cudaStream_t stream = 0) {
  detail::check_rms_norm_args(x, weight, y);
  const std::int64_t M = x.size(0);
  if (M == 0) return;
  constexpr int kThreads = 256;
  cuda::detail::rms_norm_kernel<<<cuda::grid_for(M * 32, kThreads), kThreads, 0, stream>>>(x, weight, eps, y, {});
  QLIP_CUDA_CHECK_LAUNCH();
}

/// Training forward: y as rms_norm, plus the per-row rstd = 1/sqrt(mean(x²) + eps) [M] that
/// rms_norm_backward consumes. y must not overlap x (checked: the backward re-reads x).
inline void rms_norm_train(cuda_backend, DeviceView<const float, 2> x, DeviceView<const float, 1> weight, float eps,
                           DeviceView<float, 2> y, DeviceView<float, 1> rstd, cudaStream_t stream = 0) {
  detail::check_rms_norm_train_args(x, weight, y, rstd);
  const std::int64_t M = x.size(0);
  if (M == 0) return;
  constexpr int kThreads = 256;
  cuda::detail::rms_norm_kernel<<<cuda::grid_for(M * 32, kThreads), kThreads, 0, stream>>>(x, weight, eps, y, rstd);
  QLIP_CUDA_CHECK_LAUNCH();
}

/// Backward of rms_norm from rms_norm_train's rstd (contract of reference/rms_norm.hpp): dx [M,D]
/// written, dweight [D] accumulated; an empty view is not wanted and skipped. dweight runs first on
/// the stream, so dx may alias dy or x (same view).
inline void rms_norm_backward(cuda_backend, DeviceView<const float, 2> x, DeviceView<const float, 1> weight,
                              DeviceView<const float, 1> rstd, DeviceView<const float, 2> dy, DeviceView<float, 2> dx,
                              DeviceView<float, 1> dweight, cudaStream_t stream = 0) {
  detail::check_rms_norm_backward_args(x, weight, rstd, dy, dx, dweight);
  const std::int64_t M = x.size(0), D = x.size(1);
  if (M == 0) return;  // nothing to add, and dx is empty
  if (!dweight.empty()) {
    const dim3 block(cuda::detail::kRmsGradCols, cuda::detail::kRmsGradRowLanes);
    const auto blocks = static_cast<unsigned>((D + cuda::detail::kRmsGradCols - 1) / cuda::detail::kRmsGradCols);
    cuda::detail::rms_norm_weight_grad_kernel<<<blocks, block, 0, stream>>>(x, rstd, dy, dweight);
    QLIP_CUDA_CHECK_LAUNCH();
  }
  if (!dx.empty()) {
    constexpr int kThreads = 256;
    cuda::detail::rms_norm_dx_kernel<<<cuda::grid_for(M * 32, kThreads), kThreads, 0, stream>>>(x, weight, rstd, dy,
                                                                                                dx);
    QLIP_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace ops
}  // namespace qlip
