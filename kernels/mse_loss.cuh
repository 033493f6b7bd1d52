/// @file mse_loss.cuh
/// @brief The reconstruction loss L = mean((x̂ − x)²) and its backward on the CUDA backend
///        (reference/mse_loss.hpp). The forward sums each row in double (one warp per row, fixed
///        order) into caller-owned workspace and adds the rows on the host in order, so it is
///        deterministic; the backward is element-wise.
#pragma once

#include <cstdint>
#include <vector>

#include "common.cuh"
#include "qlip/reference/mse_loss.hpp"
#include "rowwise.cuh"

namespace qlip {
namespace cuda::detail {

QLIP_KERNEL void mse_rows_kernel(DeviceView<const float, 2> x_hat, DeviceView<const float, 2> x, double* row_sums) {
  const std::int64_t row = warp_row(x.size(0));
  if (row < 0) return;
  const int lane = threadIdx.x % 32;
  double sum = 0.0;
  for (std::int64_t c = lane; c < x.size(1); c += 32) {
    const double d = static_cast<double>(x_hat(row, c)) - static_cast<double>(x(row, c));
    sum += d * d;
  }
  sum = warp_sum_f64(sum);
  if (lane == 0) row_sums[row] = sum;
}

QLIP_KERNEL void mse_backward_kernel(DeviceView<const float, 2> x_hat, DeviceView<const float, 2> x, double k,
                                     DeviceView<float, 2> dx_hat) {
  const std::int64_t n = x.numel(), cols = x.size(1);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / cols, c = i % cols;
    dx_hat(r, c) = static_cast<float>(k * (static_cast<double>(x_hat(r, c)) - static_cast<double>(x(r, c))));
  }
}

}  // namespace cuda::detail

namespace ops {

/// L = (1/N)·Σ (x̂ − x)² on the device; row_sums [M] is caller-owned device workspace. Synchronises
/// `stream` (the loss is a host value).
inline double mse_loss(cuda_backend, DeviceView<const float, 2> x_hat, DeviceView<const float, 2> x,
                       DeviceView<double, 1> row_sums, cudaStream_t stream = 0) {
  detail::check_mse_loss_args(cuda::sizes_only(x_hat), cuda::sizes_only(x), "mse_loss");
  check_shape(cuda::sizes_only(row_sums), {x.size(0)}, "mse_loss: row_sums");
  QLIP_CHECK(row_sums.stride(0) == 1 || row_sums.size(0) <= 1, "mse_loss: row_sums must be contiguous");
  cuda::detail::mse_rows_kernel<<<cuda::detail::row_blocks(x.size(0)), cuda::detail::kRowThreads, 0, stream>>>(
      x_hat, x, row_sums.data());
  QLIP_CUDA_CHECK_LAUNCH();
  std::vector<double> rows(static_cast<std::size_t>(x.size(0)));
  QLIP_CUDA_CHECK(
      cudaMemcpyAsync(rows.data(), row_sums.data(), sizeof(double) * rows.size(), cudaMemcpyDeviceToHost, stream));
  QLIP_CUDA_CHECK(cudaStreamSynchronize(stream));
  double sum = 0.0;
  for (double r : rows) sum += r;
  return sum / static_cast<double>(x.numel());
}

/// dx̂ = dloss·2(x̂ − x)/N (=) on the device; an empty dx_hat is skipped.
inline void mse_loss_backward(cuda_backend, DeviceView<const float, 2> x_hat, DeviceView<const float, 2> x,
                              double dloss, DeviceView<float, 2> dx_hat, cudaStream_t stream = 0) {
  detail::check_mse_loss_backward_args(cuda::sizes_only(x_hat), cuda::sizes_only(x), cuda::sizes_only(dx_hat));
  if (dx_hat.empty()) return;
  constexpr int kThreads = 256;
  cuda::detail::mse_backward_kernel<<<cuda::grid_for(x.numel(), kThreads), kThreads, 0, stream>>>(
      x_hat, x, 2.0 * dloss / static_cast<double>(x.numel()), dx_hat);
  QLIP_CUDA_CHECK_LAUNCH();
}

}  // namespace ops
}  // namespace qlip
