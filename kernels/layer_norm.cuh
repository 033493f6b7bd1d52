/// @file layer_norm.cuh
/// @brief LayerNorm on the CUDA backend: one warp per row, two passes over the row (mean, then
///        centred variance) in fp32, matching torch's biased variance. Deterministic (fixed
///        per-lane order + butterfly reduction).
#pragma once

#include "bsq.cuh"  // warp_sum
#include "common.cuh"
#include "qlip/reference/layer_norm.hpp"  // detail::check_layer_norm_args (shared by every backend)

namespace qlip {
namespace cuda::detail {

QLIP_KERNEL void layer_norm_kernel(DeviceView<const float, 2> x, DeviceView<const float, 1> gamma,
                                   DeviceView<const float, 1> beta, float eps, DeviceView<float, 2> y) {
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
  for (std::int64_t c = lane; c < D; c += 32) y(row, c) = (x(row, c) - mean) * rstd * gamma(c) + beta(c);
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
  cuda::detail::layer_norm_kernel<<<cuda::grid_for(M * 32, kThreads), kThreads, 0, stream>>>(x, gamma, beta, eps, y);
  QLIP_CUDA_CHECK_LAUNCH();
}

}  // namespace ops
}  // namespace qlip
