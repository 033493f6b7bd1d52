/// @file layer_norm.cuh
/// @brief LayerNorm on the CUDA backend: the inference and training forwards (one warp per row, two
///        passes over the row, mean then centred variance, in fp32, matching torch's biased
///        variance) and the backward of reference/layer_norm.hpp (dx one warp per row; dgamma and
///        dbeta a column-parallel reduction over rows). Deterministic: fixed per-lane orders and
///        butterfly/shared-memory reductions, no atomics.
#pragma once

#include "bsq.cuh"  // warp_sum
#include "common.cuh"
#include "qlip/reference/layer_norm.hpp"  // detail::check_layer_norm_*_args (shared by every backend)

namespace qlip {
namespace cuda::detail {

/// Columns per block and row lanes per column of the parameter-gradient reductions: 32 columns keep
/// each warp's loads one coalesced 128-byte line per row; the row lanes give a column 16 partial sums,
/// combined in a fixed order.
inline constexpr int kNormGradCols = 32;
inline constexpr int kNormGradRowLanes = 16;

/// One warp per row. mean_out and rstd_out are stored (by lane 0) when non-empty, after they are
/// computed, so the training forward does the same arithmetic as the inference one.
QLIP_KERNEL void layer_norm_kernel(DeviceView<const float, 2> x, DeviceView<const float, 1> gamma,
                                   DeviceView<const float, 1> beta, float eps, DeviceView<float, 2> y,
                                   DeviceView<float, 1> mean_out, DeviceView<float, 1> rstd_out) {
  const std::int64_t rows = x.size(0), D = x.size(1);
  const int lane = threadIdx.x % 32;
  const std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  if (row >= rows) return;
  float sum = 0.0f;
  for (std::int64_t c = lane; c < D; c += 32) sum += x(row, c);
  const float mean = warp_sum(sum) / static_cast<float>(D);
  float sq = 0.0f;
  for (std::int64_t c = lane; c < D; c += 32) {
    const float d = x(row, c) - mean;
    sq += d * d;
  }
  const float rstd = rsqrtf(warp_sum(sq) / static_cast<float>(D) + eps);
  if (lane == 0 && !mean_out.empty()) mean_out(row) = mean;
  if (lane == 0 && !rstd_out.empty()) rstd_out(row) = rstd;
  for (std::int64_t c = lane; c < D; c += 32) y(row, c) = (x(row, c) - mean) * rstd * gamma(c) + beta(c);
}

/// dgamma += Σ_rows dy ⊙ x̂ and dbeta += Σ_rows dy for kNormGradCols columns per block: row lane
/// threadIdx.y sums rows y, y + kNormGradRowLanes, … in order, then row lane 0 adds the partials in
/// lane order. The order depends only on the shape, so the result is reproducible.
QLIP_KERNEL void layer_norm_param_grad_kernel(DeviceView<const float, 2> x, DeviceView<const float, 1> mean,
                                              DeviceView<const float, 1> rstd, DeviceView<const float, 2> dy,
                                              DeviceView<float, 1> dgamma, DeviceView<float, 1> dbeta) {
  __shared__ float part_g[kNormGradRowLanes][kNormGradCols + 1];  // +1: no bank conflicts on the column read
  __shared__ float part_b[kNormGradRowLanes][kNormGradCols + 1];
  const std::int64_t rows = x.size(0), D = x.size(1);
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(kNormGradCols) + threadIdx.x;
  float g = 0.0f, b = 0.0f;
  if (c < D) {
    for (std::int64_t i = threadIdx.y; i < rows; i += kNormGradRowLanes) {
      const float d = dy(i, c);
      g += d * ((x(i, c) - mean(i)) * rstd(i));
      b += d;
    }
  }
  part_g[threadIdx.y][threadIdx.x] = g;
  part_b[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y != 0 || c >= D) return;
  float sum_g = 0.0f, sum_b = 0.0f;
  for (int k = 0; k < kNormGradRowLanes; ++k) {
    sum_g += part_g[k][threadIdx.x];
    sum_b += part_b[k][threadIdx.x];
  }
  if (!dgamma.empty()) dgamma(c) += sum_g;
  if (!dbeta.empty()) dbeta(c) += sum_b;
}

/// dx = rstd·(g − mean(g) − x̂·mean(g ⊙ x̂)), g = dy ⊙ gamma, one warp per row. Each lane reads
/// dy and x at a column before it writes dx there, and only its own columns, so dx may alias dy or x.
QLIP_KERNEL void layer_norm_dx_kernel(DeviceView<const float, 2> x, DeviceView<const float, 1> gamma,
                                      DeviceView<const float, 1> mean, DeviceView<const float, 1> rstd,
                                      DeviceView<const float, 2> dy, DeviceView<float, 2> dx) {
  const std::int64_t rows = x.size(0), D = x.size(1);
  const int lane = threadIdx.x % 32;
  const std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  if (row >= rows) return;  // whole warps exit together: rows are warp-uniform
  const float mu = mean(row), r = rstd(row);
  float sum_g = 0.0f, sum_gx = 0.0f;
  for (std::int64_t c = lane; c < D; c += 32) {
    const float g = dy(row, c) * gamma(c);
    sum_g += g;
    sum_gx += g * ((x(row, c) - mu) * r);
  }
  const float mean_g = warp_sum(sum_g) / static_cast<float>(D);
  const float mean_gx = warp_sum(sum_gx) / static_cast<float>(D);
  for (std::int64_t c = lane; c < D; c += 32) {
    const float g = dy(row, c) * gamma(c);
    const float xhat = (x(row, c) - mu) * r;
    dx(row, c) = r * (g - mean_g - xhat * mean_gx);
  }
}

}  // namespace cuda::detail

namespace ops {

/// y = (x − mean) / sqrt(var + eps) · gamma + beta over the last dim of x [M,D]; y may alias x.
inline void layer_norm(cuda_backend, DeviceView<const float, 2> x, DeviceView<const float, 1> gamma,
                       DeviceView<const float, 1> beta, float eps, DeviceView<float, 2> y,
                       cudaStream_t stream = 0) {
  detail::check_layer_norm_args(x, gamma, beta, y);
  const std::int64_t M = x.size(0);
  if (M == 0) return;
  constexpr int kThreads = 256;
  cuda::detail::layer_norm_kernel<<<cuda::grid_for(M * 32, kThreads), kThreads, 0, stream>>>(x, gamma, beta, eps, y,
                                                                                             {}, {});
  QLIP_CUDA_CHECK_LAUNCH();
}

/// Training forward: y as layer_norm, plus the per-row mean [M] and rstd = 1/sqrt(var + eps) [M]
/// that layer_norm_backward consumes. y must not overlap x (checked: the backward re-reads x).
inline void layer_norm_train(cuda_backend, DeviceView<const float, 2> x, DeviceView<const float, 1> gamma,
                             DeviceView<const float, 1> beta, float eps, DeviceView<float, 2> y,
                             DeviceView<float, 1> mean, DeviceView<float, 1> rstd, cudaStream_t stream = 0) {
  detail::check_layer_norm_train_args(x, gamma, beta, y, mean, rstd);
  const std::int64_t M = x.size(0);
  if (M == 0) return;
  constexpr int kThreads = 256;
  cuda::detail::layer_norm_kernel<<<cuda::grid_for(M * 32, kThreads), kThreads, 0, stream>>>(x, gamma, beta, eps, y,
                                                                                             mean, rstd);
  QLIP_CUDA_CHECK_LAUNCH();
}

/// Backward of layer_norm from layer_norm_train's mean and rstd (contract of
/// reference/layer_norm.hpp): dx [M,D] written, dgamma [D] and dbeta [D] accumulated; an empty view
/// is not wanted and skipped. The parameter gradients run first on the stream, so dx may alias dy
/// or x (same view).
inline void layer_norm_backward(cuda_backend, DeviceView<const float, 2> x, DeviceView<const float, 1> gamma,
                                DeviceView<const float, 1> mean, DeviceView<const float, 1> rstd,
                                DeviceView<const float, 2> dy, DeviceView<float, 2> dx, DeviceView<float, 1> dgamma,
                                DeviceView<float, 1> dbeta, cudaStream_t stream = 0) {
  detail::check_layer_norm_backward_args(x, gamma, mean, rstd, dy, dx, dgamma, dbeta);
  const std::int64_t M = x.size(0), D = x.size(1);
  if (M == 0) return;  // nothing to add, and dx is empty
  if (!dgamma.empty() || !dbeta.empty()) {
    const dim3 block(cuda::detail::kNormGradCols, cuda::detail::kNormGradRowLanes);
    const auto blocks = static_cast<unsigned>((D + cuda::detail::kNormGradCols - 1) / cuda::detail::kNormGradCols);
    cuda::detail::layer_norm_param_grad_kernel<<<blocks, block, 0, stream>>>(x, mean, rstd, dy, dgamma, dbeta);
    QLIP_CUDA_CHECK_LAUNCH();
  }
  if (!dx.empty()) {
    constexpr int kThreads = 256;
    cuda::detail::layer_norm_dx_kernel<<<cuda::grid_for(M * 32, kThreads), kThreads, 0, stream>>>(x, gamma, mean,
                                                                                                  rstd, dy, dx);
    QLIP_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace ops
}  // namespace qlip
