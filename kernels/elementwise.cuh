/// @file elementwise.cuh
/// @brief Element-wise activations on the CUDA backend (GELU, quick-GELU, SiLU, tanh, SwiGLU) and
///        their backwards (contract of reference/activation.hpp: dx, dgate, dlin written; an empty
///        view skipped). The formulas are qlip::math's, shared with the CPU backend and the
///        reference, so the backends can differ only by the device's erf/exp rounding (a few ulp)
///        and, in the backwards, by fp32 against the reference's double (no reduction is involved).
#pragma once

#include "common.cuh"
#include "qlip/core/math.hpp"
#include "qlip/reference/activation.hpp"  // detail::check_*_backward_args (shared by every backend)

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

/// act'(v) in fp32 through the shared qlip::math derivatives.
template <Activation A>
__device__ inline float activation_grad(float v) {
  if constexpr (A == Activation::gelu) return math::gelu_grad(v);
  else if constexpr (A == Activation::quick_gelu) return math::quick_gelu_grad(v);
  else if constexpr (A == Activation::silu) return math::silu_grad(v);
  else return math::tanh_grad(v);
}

/// dx = dy ⊙ act'(x) over a [M,N] strided view. Each element is read before it is written, by the
/// same thread, so dx may alias x or dy.
template <Activation A>
QLIP_KERNEL void activation_backward_kernel(DeviceView<const float, 2> x, DeviceView<const float, 2> dy,
                                            DeviceView<float, 2> dx) {
  const std::int64_t n = x.numel(), cols = x.size(1);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / cols, c = i % cols;
    dx(r, c) = dy(r, c) * activation_grad<A>(x(r, c));
  }
}

/// dgate = dy ⊙ lin ⊙ silu'(gate), dlin = dy ⊙ silu(gate); the empty one is skipped. All three inputs
/// of an element are read before either output is written, so the outputs may alias any input.
QLIP_KERNEL void swiglu_backward_kernel(DeviceView<const float, 2> gate, DeviceView<const float, 2> lin,
                                        DeviceView<const float, 2> dy, DeviceView<float, 2> dgate,
                                        DeviceView<float, 2> dlin) {
  const std::int64_t n = gate.numel(), cols = gate.size(1);
  const bool want_gate = !dgate.empty(), want_lin = !dlin.empty();
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / cols, c = i % cols;
    const float g = gate(r, c), l = lin(r, c), d = dy(r, c);
    if (want_gate) dgate(r, c) = d * l * math::silu_grad(g);
    if (want_lin) dlin(r, c) = d * math::silu(g);
  }
}

/// The op name the shared backward checks put in their messages (the reference's names).
template <Activation A>
constexpr const char* activation_backward_name() {
  if constexpr (A == Activation::gelu) return "gelu_backward";
  else if constexpr (A == Activation::quick_gelu) return "quick_gelu_backward";
  else if constexpr (A == Activation::silu) return "silu_backward";
  else return "tanh_act_backward";
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

/// dx = dy ⊙ act'(x) on the device (=); an empty dx is not wanted. dx may alias x or dy (same view).
template <Activation A>
void activation_backward(cuda_backend, DeviceView<const float, 2> x, DeviceView<const float, 2> dy,
                         DeviceView<float, 2> dx, cudaStream_t stream = 0) {
  detail::check_activation_backward_args(x, dy, dx, cuda::detail::activation_backward_name<A>());
  if (dx.empty()) return;  // not wanted, or no elements
  constexpr int kThreads = 256;
  cuda::detail::activation_backward_kernel<A><<<cuda::grid_for(x.numel(), kThreads), kThreads, 0, stream>>>(x, dy,
                                                                                                           dx);
  QLIP_CUDA_CHECK_LAUNCH();
}

/// Backward of gelu: dx = dy ⊙ (Φ(x) + x·φ(x)).
inline void gelu_backward(cuda_backend b, DeviceView<const float, 2> x, DeviceView<const float, 2> dy,
                          DeviceView<float, 2> dx, cudaStream_t stream = 0) {
  activation_backward<Activation::gelu>(b, x, dy, dx, stream);
}

/// Backward of quick-GELU: dx = dy ⊙ silu'(1.702x).
inline void quick_gelu_backward(cuda_backend b, DeviceView<const float, 2> x, DeviceView<const float, 2> dy,
                                DeviceView<float, 2> dx, cudaStream_t stream = 0) {
  activation_backward<Activation::quick_gelu>(b, x, dy, dx, stream);
}

/// Backward of SiLU: dx = dy ⊙ σ(x)·(1 + x·σ(−x)).
inline void silu_backward(cuda_backend b, DeviceView<const float, 2> x, DeviceView<const float, 2> dy,
                          DeviceView<float, 2> dx, cudaStream_t stream = 0) {
  activation_backward<Activation::silu>(b, x, dy, dx, stream);
}

/// Backward of tanh: dx = dy ⊙ (1 − tanh²(x)) (the reference's tanh_act_backward).
inline void tanh_act_backward(cuda_backend b, DeviceView<const float, 2> x, DeviceView<const float, 2> dy,
                              DeviceView<float, 2> dx, cudaStream_t stream = 0) {
  activation_backward<Activation::tanh>(b, x, dy, dx, stream);
}

/// Backward of swiglu: dgate = dy ⊙ lin ⊙ silu'(gate), dlin = dy ⊙ silu(gate), each written (=) or,
/// when empty, skipped. The outputs may alias any input (same view).
inline void swiglu_backward(cuda_backend, DeviceView<const float, 2> gate, DeviceView<const float, 2> lin,
                            DeviceView<const float, 2> dy, DeviceView<float, 2> dgate, DeviceView<float, 2> dlin,
                            cudaStream_t stream = 0) {
  detail::check_swiglu_backward_args(gate, lin, dy, dgate, dlin);
  if (gate.numel() == 0 || (dgate.empty() && dlin.empty())) return;
  constexpr int kThreads = 256;
  cuda::detail::swiglu_backward_kernel<<<cuda::grid_for(gate.numel(), kThreads), kThreads, 0, stream>>>(gate, lin, dy,
                                                                                                       dgate, dlin);
  QLIP_CUDA_CHECK_LAUNCH();
}

}  // namespace ops
}  // namespace qlip
