/// @file l2_norm.cuh
/// @brief Row-wise L2 normalisation y = x / max(‖x‖₂, eps) (F.normalize) and its backward on the CUDA
///        backend (reference/l2_norm.hpp: the same clamp rule), one warp per row, sums in double.
#pragma once

#include <cstdint>

#include "common.cuh"
#include "qlip/reference/l2_norm.hpp"
#include "rowwise.cuh"

namespace qlip {
namespace cuda::detail {

QLIP_KERNEL void l2_normalize_kernel(DeviceView<const float, 2> x, DeviceView<float, 2> y, float eps) {
  const std::int64_t row = warp_row(x.size(0));
  if (row < 0) return;
  const int lane = threadIdx.x % 32;
  double sq = 0.0;
  for (std::int64_t c = lane; c < x.size(1); c += 32) sq += static_cast<double>(x(row, c)) * x(row, c);
  const double n = fmax(sqrt(warp_sum_f64(sq)), static_cast<double>(eps));
  for (std::int64_t c = lane; c < x.size(1); c += 32) y(row, c) = static_cast<float>(x(row, c) / n);
}

QLIP_KERNEL void l2_normalize_backward_kernel(DeviceView<const float, 2> x, DeviceView<const float, 2> dy,
                                              DeviceView<float, 2> dx, float eps) {
  const std::int64_t row = warp_row(x.size(0));
  if (row < 0) return;
  const int lane = threadIdx.x % 32;
  double sq = 0.0, dot = 0.0;
  for (std::int64_t c = lane; c < x.size(1); c += 32) {
    sq += static_cast<double>(x(row, c)) * x(row, c);
    dot += static_cast<double>(x(row, c)) * dy(row, c);
  }
  sq = warp_sum_f64(sq);
  dot = warp_sum_f64(dot);
  const double n = sqrt(sq);
  if (n > static_cast<double>(eps)) {
    const double proj = dot / sq;
    for (std::int64_t c = lane; c < x.size(1); c += 32)
      dx(row, c) = static_cast<float>((static_cast<double>(dy(row, c)) - static_cast<double>(x(row, c)) * proj) / n);
  } else {
    for (std::int64_t c = lane; c < x.size(1); c += 32)
      dx(row, c) = static_cast<float>(static_cast<double>(dy(row, c)) / static_cast<double>(eps));
  }
}

}  // namespace cuda::detail

namespace ops {

/// Each row divided by max(its L2 norm, eps); y may alias x.
inline void l2_normalize_rows(cuda_backend, DeviceView<const float, 2> x, DeviceView<float, 2> y, float eps = 1e-12f,
                              cudaStream_t stream = 0) {
  detail::check_l2_normalize_rows_args(cuda::sizes_only(x), cuda::sizes_only(y));
  if (x.size(0) == 0) return;
  cuda::detail::l2_normalize_kernel<<<cuda::detail::row_blocks(x.size(0)), cuda::detail::kRowThreads, 0, stream>>>(x, y,
                                                                                                                   eps);
  QLIP_CUDA_CHECK_LAUNCH();
}

/// Backward of l2_normalize_rows (dx written, an empty dx skipped); dx may alias dy or x.
inline void l2_normalize_rows_backward(cuda_backend, DeviceView<const float, 2> x, DeviceView<const float, 2> dy,
                                       DeviceView<float, 2> dx, float eps = 1e-12f, cudaStream_t stream = 0) {
  detail::check_l2_normalize_rows_backward_args(cuda::sizes_only(x), cuda::sizes_only(dy), cuda::sizes_only(dx));
  if (dx.empty() || x.size(0) == 0) return;
  cuda::detail::
      l2_normalize_backward_kernel<<<cuda::detail::row_blocks(x.size(0)), cuda::detail::kRowThreads, 0, stream>>>(
          x, dy, dx, eps);
  QLIP_CUDA_CHECK_LAUNCH();
}

}  // namespace ops
}  // namespace qlip
