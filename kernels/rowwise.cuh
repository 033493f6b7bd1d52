/// @file rowwise.cuh
/// @brief Warp-per-row reductions shared by the row-wise kernels (l2_norm.cuh, softmax.cuh,
///        mse_loss.cuh): double sums and maxima over a row in a fixed per-lane order and a fixed
///        butterfly, so the results do not depend on timing.
#pragma once

#include <cstdint>

#include "common.cuh"

namespace qlip::cuda::detail {

/// Warp-wide sum of doubles (every lane receives it), a fixed butterfly.
__device__ inline double warp_sum_f64(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

/// Warp-wide maximum of doubles (every lane receives it).
__device__ inline double warp_max_f64(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

/// The row this warp owns (one warp per row over a 1-D grid), or −1 past the last row.
__device__ inline std::int64_t warp_row(std::int64_t rows) {
  const std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  return row < rows ? row : -1;
}

/// Threads per block of the warp-per-row kernels and the grid for `rows` rows.
inline constexpr int kRowThreads = 256;
inline unsigned row_blocks(std::int64_t rows) {
  return grid_for(rows * 32, kRowThreads);
}

}  // namespace qlip::cuda::detail
