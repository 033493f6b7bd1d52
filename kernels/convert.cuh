/// @file convert.cuh
/// @brief fp32 ↔ bf16 conversion on the CUDA backend (the mixed-precision copies: bf16 weights and
///        activations from fp32 masters, fp32 results back), with core/dtype.hpp's rounding (to
///        nearest even, the same bits as the host conversion).
#pragma once

#include <cstdint>

#include "common.cuh"
#include "qlip/core/dtype.hpp"

namespace qlip {
namespace cuda::detail {

QLIP_KERNEL void to_bf16_kernel(DeviceView<const float, 1> src, DeviceView<bf16, 1> dst) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < src.size(0);
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    dst(i) = bf16(src(i));
}

QLIP_KERNEL void from_bf16_kernel(DeviceView<const bf16, 1> src, DeviceView<float, 1> dst) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < src.size(0);
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    dst(i) = static_cast<float>(src(i));
}

}  // namespace cuda::detail

namespace ops {

/// dst[i] = bf16(src[i]), rounded to nearest even, on the device.
inline void convert(cuda_backend, DeviceView<const float, 1> src, DeviceView<bf16, 1> dst, cudaStream_t stream = 0) {
  check_shape(cuda::sizes_only(dst), src.shape(), "convert: dst");
  if (src.size(0) == 0) return;
  constexpr int kThreads = 256;
  cuda::detail::to_bf16_kernel<<<cuda::grid_for(src.size(0), kThreads), kThreads, 0, stream>>>(src, dst);
  QLIP_CUDA_CHECK_LAUNCH();
}

/// dst[i] = float(src[i]) (exact), on the device.
inline void convert(cuda_backend, DeviceView<const bf16, 1> src, DeviceView<float, 1> dst, cudaStream_t stream = 0) {
  check_shape(cuda::sizes_only(dst), src.shape(), "convert: dst");
  if (src.size(0) == 0) return;
  constexpr int kThreads = 256;
  cuda::detail::from_bf16_kernel<<<cuda::grid_for(src.size(0), kThreads), kThreads, 0, stream>>>(src, dst);
  QLIP_CUDA_CHECK_LAUNCH();
}

}  // namespace ops
}  // namespace qlip
