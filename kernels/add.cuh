/// @file add.cuh
/// @brief Element-wise accumulation on the CUDA backend (reference/add.hpp): y += x (residuals,
///        gradient sums) and y += a·x (the product and sum in double, rounded once).
#pragma once

#include <cstdint>

#include "common.cuh"
#include "qlip/reference/add.hpp"

namespace qlip {
namespace cuda::detail {

QLIP_KERNEL void axpy_kernel(double a, bool unit, DeviceView<const float, 2> x, DeviceView<float, 2> y) {
  const std::int64_t n = x.numel(), cols = x.size(1);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / cols, c = i % cols;
    y(r, c) =
        unit ? y(r, c) + x(r, c) : static_cast<float>(static_cast<double>(y(r, c)) + a * static_cast<double>(x(r, c)));
  }
}

inline void launch_axpy(double a, bool unit, DeviceView<const float, 2> x, DeviceView<float, 2> y,
                        cudaStream_t stream) {
  qlip::detail::check_add_args(sizes_only(x), sizes_only(y));
  if (x.numel() == 0) return;
  constexpr int kThreads = 256;
  axpy_kernel<<<grid_for(x.numel(), kThreads), kThreads, 0, stream>>>(a, unit, x, y);
  QLIP_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda::detail

namespace ops {

/// y += x element by element (one float rounding per element); y must not overlap x.
inline void add_inplace(cuda_backend, DeviceView<const float, 2> x, DeviceView<float, 2> y, cudaStream_t stream = 0) {
  cuda::detail::launch_axpy(1.0, true, x, y, stream);
}

/// y += a·x element by element, in double and rounded once; y must not overlap x.
inline void axpy(cuda_backend, double a, DeviceView<const float, 2> x, DeviceView<float, 2> y,
                 cudaStream_t stream = 0) {
  cuda::detail::launch_axpy(a, false, x, y, stream);
}

}  // namespace ops
}  // namespace qlip
