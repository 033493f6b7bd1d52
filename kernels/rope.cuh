/// @file rope.cuh
/// @brief Rotary position embeddings on the CUDA backend, in place, forward and backward
///        (reference/rope.hpp): the interleaved 2-D EVA-02 rotation of the vision towers and the
///        half-split Llama rotation, from the same cos/sin tables (built once on the host by
///        reference/rope.hpp and copied to the device).
///
/// One thread per rotated pair. The backward is the transposed rotation (sin negated), so both
/// directions share one kernel per convention with the sign as a template parameter. The half-split
/// positions are checked on the host (each in [0, P)) before any launch, so the launcher takes the
/// host positions beside the device copy the kernel reads.
#pragma once

#include <cstdint>

#include "common.cuh"
#include "qlip/reference/rope.hpp"

namespace qlip {
namespace cuda::detail {

/// Forward (kBackward = false) or its transpose. Pair (d, d+1) of token first_token + p.
template <bool kBackward>
QLIP_KERNEL void rope_interleaved_kernel(DeviceView<float, 4> x, DeviceView<const float, 2> cos,
                                         DeviceView<const float, 2> sin, std::int64_t first_token) {
  const std::int64_t p_n = cos.size(0), h_n = x.size(2), pairs = x.size(3) / 2;
  const std::int64_t n = x.size(0) * p_n * h_n * pairs;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t m = i % pairs, h = (i / pairs) % h_n, p = (i / (pairs * h_n)) % p_n, b = i / (pairs * h_n * p_n);
    const std::int64_t d = 2 * m, t = first_token + p;
    const float x0 = x(b, t, h, d), x1 = x(b, t, h, d + 1);
    if constexpr (kBackward) {
      x(b, t, h, d) = x0 * cos(p, d) + x1 * sin(p, d + 1);
      x(b, t, h, d + 1) = x1 * cos(p, d + 1) - x0 * sin(p, d);
    } else {
      x(b, t, h, d) = x0 * cos(p, d) - x1 * sin(p, d);
      x(b, t, h, d + 1) = x1 * cos(p, d + 1) + x0 * sin(p, d + 1);
    }
  }
}

/// Forward or its transpose; pair (i, i + Dh/2) of token t on table row positions[t].
template <bool kBackward>
QLIP_KERNEL void rope_half_kernel(DeviceView<float, 4> x, DeviceView<const float, 2> cos,
                                  DeviceView<const float, 2> sin, DeviceView<const std::int64_t, 1> positions) {
  const std::int64_t t_n = x.size(1), h_n = x.size(2), half = x.size(3) / 2;
  const std::int64_t n = x.size(0) * t_n * h_n * half;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t k = i % half, h = (i / half) % h_n, t = (i / (half * h_n)) % t_n, b = i / (half * h_n * t_n);
    const std::int64_t p = positions(t);
    const float x0 = x(b, t, h, k), x1 = x(b, t, h, k + half), c = cos(p, k), s = sin(p, k);
    if constexpr (kBackward) {
      x(b, t, h, k) = x0 * c + x1 * s;
      x(b, t, h, k + half) = x1 * c - x0 * s;
    } else {
      x(b, t, h, k) = x0 * c - x1 * s;
      x(b, t, h, k + half) = x1 * c + x0 * s;
    }
  }
}

template <bool kBackward>
void launch_rope_interleaved(DeviceView<float, 4> x, DeviceView<const float, 2> cos, DeviceView<const float, 2> sin,
                             std::int64_t first_token, const char* op, cudaStream_t stream) {
  qlip::detail::check_apply_rope_interleaved_args(sizes_only(x), sizes_only(cos), sizes_only(sin), first_token, op);
  const std::int64_t n = x.size(0) * cos.size(0) * x.size(2) * (x.size(3) / 2);
  if (n == 0) return;
  constexpr int kThreads = 256;
  rope_interleaved_kernel<kBackward><<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, cos, sin, first_token);
  QLIP_CUDA_CHECK_LAUNCH();
}

template <bool kBackward>
void launch_rope_half(DeviceView<float, 4> x, DeviceView<const float, 2> cos, DeviceView<const float, 2> sin,
                      const std::int64_t* positions_host, DeviceView<const std::int64_t, 1> positions, const char* op,
                      cudaStream_t stream) {
  qlip::detail::check_apply_rope_half_args(sizes_only(x), sizes_only(cos), sizes_only(sin), positions_host, op);
  QLIP_CHECK(positions.size(0) == x.size(1), op, ": the device positions have ", positions.size(0),
             " entries, the sequence ", x.size(1));
  const std::int64_t n = x.size(0) * x.size(1) * x.size(2) * (x.size(3) / 2);
  if (n == 0) return;
  constexpr int kThreads = 256;
  rope_half_kernel<kBackward><<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, cos, sin, positions);
  QLIP_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda::detail

namespace ops {

/// Interleaved (EVA-02) rotation in place on the device: tokens first_token..first_token+P−1 use
/// table rows 0..P−1, the others are untouched (reference::apply_rope_interleaved).
inline void apply_rope_interleaved(cuda_backend, DeviceView<float, 4> x, DeviceView<const float, 2> cos,
                                   DeviceView<const float, 2> sin, std::int64_t first_token, cudaStream_t stream = 0) {
  cuda::detail::launch_rope_interleaved<false>(x, cos, sin, first_token, "apply_rope_interleaved", stream);
}
/// Its backward, in place on the gradient (dy in, dx out).
inline void apply_rope_interleaved_backward(cuda_backend, DeviceView<float, 4> dx, DeviceView<const float, 2> cos,
                                            DeviceView<const float, 2> sin, std::int64_t first_token,
                                            cudaStream_t stream = 0) {
  cuda::detail::launch_rope_interleaved<true>(dx, cos, sin, first_token, "apply_rope_interleaved_backward", stream);
}

/// Half-split (Llama) rotation in place on the device; token t uses table row positions[t]
/// (reference::apply_rope_half). positions_host: the T positions on the host (checked);
/// positions: the same on the device.
inline void apply_rope_half(cuda_backend, DeviceView<float, 4> x, DeviceView<const float, 2> cos,
                            DeviceView<const float, 2> sin, const std::int64_t* positions_host,
                            DeviceView<const std::int64_t, 1> positions, cudaStream_t stream = 0) {
  cuda::detail::launch_rope_half<false>(x, cos, sin, positions_host, positions, "apply_rope_half", stream);
}
/// Its backward, in place on the gradient (dy in, dx out).
inline void apply_rope_half_backward(cuda_backend, DeviceView<float, 4> dx, DeviceView<const float, 2> cos,
                                     DeviceView<const float, 2> sin, const std::int64_t* positions_host,
                                     DeviceView<const std::int64_t, 1> positions, cudaStream_t stream = 0) {
  cuda::detail::launch_rope_half<true>(dx, cos, sin, positions_host, positions, "apply_rope_half_backward", stream);
}

}  // namespace ops
}  // namespace qlip
