/// @file cross_entropy.cuh
/// @brief Token cross-entropy on the CUDA backend, forward and backward (reference/cross_entropy.hpp:
///        the mean over rows with a target of logsumexp(z_i) − z_i[t_i]; negative targets mask).
///
/// One block per row: the row's max and Σ exp(z − max) in float by fixed-tree block reductions
/// (deterministic). The forward writes each row's loss into caller-owned device workspace, copies
/// it to the host and sums it in double in row order there (the loss is a host scalar the trainer
/// logs), so the result does not depend on timing. Targets are checked on the host before any
/// launch (each < V), so the launchers take the host targets beside the device copy the kernels read.
#pragma once

#include <cstdint>
#include <vector>

#include "common.cuh"
#include "qlip/reference/cross_entropy.hpp"

namespace qlip {
namespace cuda::detail {

inline constexpr int kCrossEntropyThreads = 256;

/// Block-wide reduction of one float per thread in a fixed tree; every thread receives the result.
template <class Op>
__device__ inline float block_reduce(float v, float* shared, Op op) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int stride = kCrossEntropyThreads / 2; stride > 0; stride >>= 1) {
    if (static_cast<int>(threadIdx.x) < stride)
      shared[threadIdx.x] = op(shared[threadIdx.x], shared[threadIdx.x + stride]);
    __syncthreads();
  }
  const float r = shared[0];
  __syncthreads();  // shared is reused by the next reduction
  return r;
}

/// logsumexp of row i (all threads of the block receive it).
__device__ inline float row_logsumexp(const DeviceView<const float, 2>& z, std::int64_t i, float* shared) {
  float mx = -INFINITY;
  for (std::int64_t j = threadIdx.x; j < z.size(1); j += blockDim.x) mx = fmaxf(mx, z(i, j));
  mx = block_reduce(mx, shared, [](float a, float b) { return fmaxf(a, b); });
  float sum = 0.0f;
  for (std::int64_t j = threadIdx.x; j < z.size(1); j += blockDim.x) sum += expf(z(i, j) - mx);
  sum = block_reduce(sum, shared, [](float a, float b) { return a + b; });
  return mx + logf(sum);
}

QLIP_KERNEL void cross_entropy_rows_kernel(DeviceView<const float, 2> logits, DeviceView<const std::int32_t, 1> targets,
                                           DeviceView<float, 1> row_loss) {
  __shared__ float shared[kCrossEntropyThreads];
  const std::int64_t i = blockIdx.x;
  const std::int32_t t = targets(i);
  if (t < 0) {  // block-uniform: the whole block leaves together
    if (threadIdx.x == 0) row_loss(i) = 0.0f;
    return;
  }
  const float lse = row_logsumexp(logits, i, shared);
  if (threadIdx.x == 0) row_loss(i) = lse - logits(i, t);
}

QLIP_KERNEL void cross_entropy_backward_kernel(DeviceView<const float, 2> logits,
                                               DeviceView<const std::int32_t, 1> targets, float k,
                                               DeviceView<float, 2> dlogits) {
  __shared__ float shared[kCrossEntropyThreads];
  const std::int64_t i = blockIdx.x;
  const std::int32_t t = targets(i);
  if (t < 0) {
    for (std::int64_t j = threadIdx.x; j < logits.size(1); j += blockDim.x) dlogits(i, j) = 0.0f;
    return;
  }
  const float lse = row_logsumexp(logits, i, shared);
  for (std::int64_t j = threadIdx.x; j < logits.size(1); j += blockDim.x)
    dlogits(i, j) = k * (expf(logits(i, j) - lse) - (j == t ? 1.0f : 0.0f));
}

/// Device targets must mirror the host ones in length.
inline void check_device_targets(HostView<const std::int32_t, 1> host, const DeviceView<const std::int32_t, 1>& dev,
                                 const char* op) {
  QLIP_CHECK(dev.size(0) == host.size(0), op, ": the device targets have ", dev.size(0), " entries, the host targets ",
             host.size(0));
}

}  // namespace cuda::detail

namespace ops {

/// L and C of reference::cross_entropy on the device (synchronises `stream`: the loss is returned
/// to the host).
/// @param logits       [N, V] device
/// @param targets_host [N] host (checked: each < V; negatives mask)
/// @param targets      [N] the same targets on the device
/// @param row_loss     [N] device workspace (each row's loss)
inline CrossEntropyResult cross_entropy(cuda_backend, DeviceView<const float, 2> logits,
                                        HostView<const std::int32_t, 1> targets_host,
                                        DeviceView<const std::int32_t, 1> targets, DeviceView<float, 1> row_loss,
                                        cudaStream_t stream = 0) {
  detail::check_cross_entropy_args(cuda::sizes_only(logits), targets_host, "cross_entropy");
  cuda::detail::check_device_targets(targets_host, targets, "cross_entropy");
  check_shape(row_loss, {logits.size(0)}, "cross_entropy: row_loss");
  QLIP_CHECK(row_loss.stride(0) == 1 || row_loss.size(0) <= 1, "cross_entropy: row_loss must be contiguous");
  CrossEntropyResult r;
  r.count = detail::cross_entropy_count(targets_host);
  if (r.count == 0) return r;
  const std::int64_t n = logits.size(0);
  cuda::detail::cross_entropy_rows_kernel<<<static_cast<unsigned>(n), cuda::detail::kCrossEntropyThreads, 0, stream>>>(
      logits, targets, row_loss);
  QLIP_CUDA_CHECK_LAUNCH();
  std::vector<float> rows(static_cast<std::size_t>(n));
  QLIP_CUDA_CHECK(
      cudaMemcpyAsync(rows.data(), row_loss.data(), sizeof(float) * rows.size(), cudaMemcpyDeviceToHost, stream));
  QLIP_CUDA_CHECK(cudaStreamSynchronize(stream));
  double sum = 0.0;
  for (float v : rows) sum += static_cast<double>(v);
  r.loss = sum / static_cast<double>(r.count);
  return r;
}

/// dlogits = dloss·(softmax − onehot)/C on rows with a target, 0 elsewhere (=), on the device.
inline void cross_entropy_backward(cuda_backend, DeviceView<const float, 2> logits,
                                   HostView<const std::int32_t, 1> targets_host,
                                   DeviceView<const std::int32_t, 1> targets, double dloss,
                                   DeviceView<float, 2> dlogits, cudaStream_t stream = 0) {
  detail::check_cross_entropy_backward_args(cuda::sizes_only(logits), targets_host, cuda::sizes_only(dlogits));
  cuda::detail::check_device_targets(targets_host, targets, "cross_entropy_backward");
  if (dlogits.empty() || logits.size(0) == 0) return;
  const std::int64_t c = detail::cross_entropy_count(targets_host);
  const float k = c > 0 ? static_cast<float>(dloss / static_cast<double>(c)) : 0.0f;
  cuda::detail::cross_entropy_backward_kernel<<<static_cast<unsigned>(logits.size(0)),
                                                cuda::detail::kCrossEntropyThreads, 0, stream>>>(logits, targets, k,
                                                                                                 dlogits);
  QLIP_CUDA_CHECK_LAUNCH();
}

}  // namespace ops
}  // namespace qlip
