/// @file elementwise.cuh
/// @brief Element-wise activations on the CUDA backend (GELU, quick-GELU, SiLU, tanh, SwiGLU).
///        The formulas are qlip::math's, shared with the CPU backend and the reference, so the
///        backends can differ only by the device's erf/exp rounding (a few ulp).
#pragma once

#include "common.cuh"
#include "qlip/core/math.hpp"

namespace qlip {
enum class Activation { gelu, quick_gelu, silu, tanh };

namespace cuda::detail {

/// Applies act to every element of a [M,N] strided view; grid-stride loop over int64 indices.
template <Activation A>
QLIP_KERNEL void activation_kernel(DeviceView<const float, 2> x, DeviceView<float, 2> y) {
  const std::int64_t n = x.numel(), cols = x.size(1);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / cols, c = i % cols;
    const float v = x(r, c);
    float out;
    if constexpr (A == Activation::gelu) out = math::gelu(v);
    else if constexpr (A == Activation::quick_gelu) out = math::quick_gelu(v);
    else if constexpr (A == Activation::silu) out = math::silu(v);
    else out = tanhf(v);
    y(r, c) = out;
  }
}

QLIP_KERNEL void swiglu_kernel(DeviceView<const float, 2> gate, DeviceView<const float, 2> lin,
                               DeviceView<float, 2> y) {
  const std::int64_t n = gate.numel(), cols = gate.size(1);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / cols, c = i % cols;
    y(r, c) = math::silu(gate(r, c)) * lin(r, c);
  }
}

}  // namespace cuda::detail

namespace ops {

/// y = act(x) on the device; y may alias x.
template <Activation A>
void activation(cuda_backend, DeviceView<const float, 2> x, DeviceView<float, 2> y, cudaStream_t stream = 0) {
  QLIP_CHECK(x.shape() == y.shape(), "activation: x ", shape_string<2>(x.shape()), " vs y ",
             shape_string<2>(y.shape()));
  if (x.numel() == 0) return;
  constexpr int kThreads = 256;
  cuda::detail::activation_kernel<A><<<cuda::grid_for(x.numel(), kThreads), kThreads, 0, stream>>>(x, y);
  QLIP_CUDA_CHECK_LAUNCH();
}

/// y = silu(gate) ⊙ lin (QLIP SwiGLU, MODEL.md §2.3: w1 is the gated branch).
inline void swiglu(cuda_backend, DeviceView<const float, 2> gate, DeviceView<const float, 2> lin,
                   DeviceView<float, 2> y, cudaStream_t stream = 0) {
  QLIP_CHECK(gate.shape() == lin.shape() && gate.shape() == y.shape(), "swiglu: shapes differ: gate ",
             shape_string<2>(gate.shape()), ", lin ", shape_string<2>(lin.shape()), ", y ",
             shape_string<2>(y.shape()));
  if (gate.numel() == 0) return;
  constexpr int kThreads = 256;
  cuda::detail::swiglu_kernel<<<cuda::grid_for(gate.numel(), kThreads), kThreads, 0, stream>>>(gate, lin, y);
  QLIP_CUDA_CHECK_LAUNCH();
}

}  // namespace ops
}  // namespace qlip
