/// @file bsq.cuh
/// @brief Fused BSQ on the CUDA backend (MODEL.md §2.6, §3.1, §3.4): per token, L2-normalise the L-dim
///        projection, take signs, emit the ±1/√L codes, the bits and the integer index (dim 0 = MSB).
///        One warp per token; L ≤ 32 so each lane owns one dimension.
#pragma once

#include "common.cuh"
#include "qlip/core/math.hpp"

namespace qlip {
namespace cuda::detail {

/// Warp-wide sum (all lanes receive the total). Deterministic: a fixed butterfly order.
__device__ inline float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

QLIP_KERNEL void bsq_kernel(DeviceView<const float, 2> h, DeviceView<float, 2> u, DeviceView<std::uint8_t, 2> bits,
                            DeviceView<float, 2> codes, DeviceView<std::uint32_t, 1> index, float scale, float eps) {
  const std::int64_t rows = h.size(0);
  const int L = static_cast<int>(h.size(1));
  const int lane = threadIdx.x % 32;
  const std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  if (row >= rows) return;  // whole warps exit together: rows are warp-uniform
  const float v = lane < L ? h(row, lane) : 0.0f;
  const float norm = sqrtf(warp_sum(v * v));
  const float un = v / fmaxf(norm, eps);  // F.normalize semantics
  const bool bit = math::bsq_bit(un);
  // Ballot gathers every lane's bit; dimension 0 must become the most significant bit.
  const std::uint32_t ballot = __ballot_sync(0xffffffffu, lane < L && bit);
  if (lane < L) {
    u(row, lane) = un;
    bits(row, lane) = bit ? 1 : 0;
    codes(row, lane) = math::bsq_code(bit, scale);
  }
  if (lane == 0) index(row) = __brev(ballot) >> (32 - L);
}

}  // namespace cuda::detail

namespace ops {

/// Device BSQ: h [M,L] (pre-normalisation projections) → u [M,L], bits [M,L], codes [M,L] = ±scale,
/// index [M] (uint32, integer, dim 0 = MSB). L must be in 1..32.
inline void bsq_encode(cuda_backend, DeviceView<const float, 2> h, DeviceView<float, 2> u,
                       DeviceView<std::uint8_t, 2> bits, DeviceView<float, 2> codes,
                       DeviceView<std::uint32_t, 1> index, float scale, cudaStream_t stream = 0) {
  const std::int64_t M = h.size(0), L = h.size(1);
  QLIP_CHECK(L >= 1 && L <= 32, "bsq_encode: code length ", L, " must be 1..32");
  check_shape(u, {M, L}, "bsq_encode u");
  check_shape(bits, {M, L}, "bsq_encode bits");
  check_shape(codes, {M, L}, "bsq_encode codes");
  check_shape(index, {M}, "bsq_encode index");
  if (M == 0) return;
  constexpr int kThreads = 256;  // 8 tokens per block
  cuda::detail::bsq_kernel<<<cuda::grid_for(M * 32, kThreads), kThreads, 0, stream>>>(h, u, bits, codes, index,
                                                                                      scale, 1e-12f);
  QLIP_CUDA_CHECK_LAUNCH();
}

}  // namespace ops
}  // namespace qlip
