/// @file softmax.cuh
/// @brief Row-wise softmax and its backward on the CUDA backend (reference/softmax.hpp), one warp per
///        row, max and sums in double.
#pragma once

#include <cstdint>

#include "common.cuh"
#include "qlip/reference/softmax.hpp"
#include "rowwise.cuh"

namespace qlip {
namespace cuda::detail {

QLIP_KERNEL void softmax_rows_kernel(DeviceView<const float, 2> x, DeviceView<float, 2> y) {
  const std::int64_t row = warp_row(x.size(0));
  if (row < 0) return;
  const int lane = threadIdx.x % 32;
  double mx = -INFINITY;
  for (std::int64_t c = lane; c < x.size(1); c += 32) mx = fmax(mx, static_cast<double>(x(row, c)));
  mx = warp_max_f64(mx);
  double sum = 0.0;
  for (std::int64_t c = lane; c < x.size(1); c += 32) sum += exp(static_cast<double>(x(row, c)) - mx);
  sum = warp_sum_f64(sum);
  for (std::int64_t c = lane; c < x.size(1); c += 32)
    y(row, c) = static_cast<float>(exp(static_cast<double>(x(row, c)) - mx) / sum);
}

QLIP_KERNEL void softmax_rows_backward_kernel(DeviceView<const float, 2> y, DeviceView<const float, 2> dy,
                                              DeviceView<float, 2> dx) {
  const std::int64_t row = warp_row(y.size(0));
  if (row < 0) return;
  const int lane = threadIdx.x % 32;
  double dot = 0.0;
  for (std::int64_t c = lane; c < y.size(1); c += 32) dot += static_cast<double>(y(row, c)) * dy(row, c);
  dot = warp_sum_f64(dot);
  for (std::int64_t c = lane; c < y.size(1); c += 32)
    dx(row, c) = static_cast<float>(static_cast<double>(y(row, c)) * (static_cast<double>(dy(row, c)) - dot));
}

}  // namespace cuda::detail

namespace ops {

/// y = softmax(x) along each row; y may alias x.
inline void softmax_rows(cuda_backend, DeviceView<const float, 2> x, DeviceView<float, 2> y, cudaStream_t stream = 0) {
  detail::check_softmax_rows_args(cuda::sizes_only(x), cuda::sizes_only(y));
  if (x.size(0) == 0 || x.size(1) == 0) return;
  cuda::detail::softmax_rows_kernel<<<cuda::detail::row_blocks(x.size(0)), cuda::detail::kRowThreads, 0, stream>>>(x,
                                                                                                                   y);
  QLIP_CUDA_CHECK_LAUNCH();
}

/// Backward of softmax_rows from its output y (dx written, an empty dx skipped); dx may alias y or dy.
inline void softmax_rows_backward(cuda_backend, DeviceView<const float, 2> y, DeviceView<const float, 2> dy,
                                  DeviceView<float, 2> dx, cudaStream_t stream = 0) {
  detail::check_softmax_rows_backward_args(cuda::sizes_only(y), cuda::sizes_only(dy), cuda::sizes_only(dx));
  if (dx.empty() || y.size(0) == 0) return;
  cuda::detail::
      softmax_rows_backward_kernel<<<cuda::detail::row_blocks(y.size(0)), cuda::detail::kRowThreads, 0, stream>>>(y, dy,
                                                                                                                  dx);
  QLIP_CUDA_CHECK_LAUNCH();
}

}  // namespace ops
}  // namespace qlip
