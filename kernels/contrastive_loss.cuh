/// @file contrastive_loss.cuh
/// @brief The CLIP contrastive loss of stage 1 on the CUDA backend, forward and backward
///        (reference/contrastive_loss.hpp: symmetric cross-entropy over s·I·Tᵀ with the diagonal as
///        targets, over a local block of rows of a gathered batch; accuracies as by-products).
///
/// The similarities I·Tᵀ come from cuBLASLt (kernels/gemm.cuh) into caller-owned workspace; s =
/// exp(logit_scale) is read on the device (the parameter lives there). One block per local row (and
/// one per local column) finds the line's max, first argmax and log-sum-exp by fixed-tree
/// reductions. The forward copies the per-line terms to the host and sums them in order. The
/// backward writes s·∂L/∂S line by line (rows, then columns: no element has two writers in one
/// kernel), then d_image = (s·G)·T and d_text = (s·G)ᵀ·I by cuBLASLt, and d_logit_scale += Σ (s·G) ⊙
/// (I·Tᵀ) by one fixed-order reduction: deterministic throughout.
#pragma once

#include <cstdint>
#include <vector>

#include "common.cuh"
#include "gemm.cuh"
#include "qlip/reference/contrastive_loss.hpp"

namespace qlip {
namespace cuda {

/// Caller-owned device workspace for a batch of B rows.
class ContrastiveWorkspace {
 public:
  ContrastiveWorkspace() = default;
  explicit ContrastiveWorkspace(std::int64_t batch)
      : batch_(batch), sim_(batch * batch), grad_(batch * batch), line_loss_(2 * batch), line_hit_(2 * batch) {}
  std::int64_t batch() const { return batch_; }
  DeviceView<float, 2> sim() const { return sim_.view<2>({batch_, batch_}); }    ///< I·Tᵀ
  DeviceView<float, 2> grad() const { return grad_.view<2>({batch_, batch_}); }  ///< s·∂L/∂S
  float* line_loss() const { return line_loss_.data(); }
  int* line_hit() const { return line_hit_.data(); }

 private:
  std::int64_t batch_ = 0;
  DeviceBuffer<float> sim_, grad_, line_loss_;
  DeviceBuffer<int> line_hit_;
};

namespace detail {

inline constexpr int kContrastiveThreads = 256;

/// Max (with its first index) and then the sum of exp(x − max) of line `line` of s·sim, by the
/// whole block: rows (kColumn = false) read sim[line, k], columns sim[k, line].
struct LineStats {
  float max, lse;
  std::int64_t argmax;
};
template <bool kColumn>
__device__ inline LineStats line_stats(const DeviceView<const float, 2>& sim, std::int64_t line, float s) {
  __shared__ float best[kContrastiveThreads];
  __shared__ std::int64_t best_at[kContrastiveThreads];
  const std::int64_t n = sim.size(0);
  const auto at = [&](std::int64_t k) { return s * (kColumn ? sim(k, line) : sim(line, k)); };
  float mx = -INFINITY;
  std::int64_t am = n;  // past the end: loses every tie
  for (std::int64_t k = threadIdx.x; k < n; k += blockDim.x) {
    const float x = at(k);
    if (x > mx) {  // strictly greater: the first index wins within a thread's ascending walk
      mx = x;
      am = k;
    }
  }
  best[threadIdx.x] = mx;
  best_at[threadIdx.x] = am;
  __syncthreads();
  for (int stride = kContrastiveThreads / 2; stride > 0; stride >>= 1) {
    if (static_cast<int>(threadIdx.x) < stride) {
      const float o = best[threadIdx.x + stride];
      const std::int64_t oa = best_at[threadIdx.x + stride];
      if (o > best[threadIdx.x] || (o == best[threadIdx.x] && oa < best_at[threadIdx.x])) {
        best[threadIdx.x] = o;
        best_at[threadIdx.x] = oa;
      }
    }
    __syncthreads();
  }
  const float line_max = best[0];
  const std::int64_t line_argmax = best_at[0];
  __syncthreads();
  float sum = 0.0f;
  for (std::int64_t k = threadIdx.x; k < n; k += blockDim.x) sum += expf(at(k) - line_max);
  best[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = kContrastiveThreads / 2; stride > 0; stride >>= 1) {
    if (static_cast<int>(threadIdx.x) < stride) best[threadIdx.x] += best[threadIdx.x + stride];
    __syncthreads();
  }
  const float total = best[0];
  __syncthreads();
  return {line_max, line_max + logf(total), line_argmax};
}

/// Forward terms of local line i (block i of b rows, then b columns): lse − diagonal and the hit.
QLIP_KERNEL void contrastive_lines_kernel(DeviceView<const float, 2> sim, DeviceView<const float, 1> logit_scale,
                                          std::int64_t offset, std::int64_t count, float* line_loss, int* line_hit) {
  const std::int64_t idx = blockIdx.x;
  const bool column = idx >= count;
  const std::int64_t g = offset + (column ? idx - count : idx);
  const float s = expf(logit_scale(0));
  const LineStats st = column ? line_stats<true>(sim, g, s) : line_stats<false>(sim, g, s);
  if (threadIdx.x == 0) {
    line_loss[idx] = st.lse - s * sim(g, g);
    line_hit[idx] = st.argmax == g ? 1 : 0;
  }
}

/// Backward: grad[line] (+)= s·w·(softmax − onehot) along local rows (kColumn = false, which also
/// zeroes every other element first) or local columns.
template <bool kColumn>
QLIP_KERNEL void contrastive_grad_kernel(DeviceView<const float, 2> sim, DeviceView<const float, 1> logit_scale,
                                         std::int64_t offset, float w, DeviceView<float, 2> grad) {
  const std::int64_t g = offset + blockIdx.x, n = sim.size(0);
  const float s = expf(logit_scale(0));
  const LineStats st = line_stats<kColumn>(sim, g, s);
  for (std::int64_t k = threadIdx.x; k < n; k += blockDim.x) {
    const float x = s * (kColumn ? sim(k, g) : sim(g, k));
    const float v = s * w * (expf(x - st.lse) - (k == g ? 1.0f : 0.0f));
    if constexpr (kColumn)
      grad(k, g) += v;
    else
      grad(g, k) = v;
  }
}

/// Zeroes the rows of grad outside [offset, offset + count) (the row kernel writes the others).
QLIP_KERNEL void contrastive_zero_rows_kernel(DeviceView<float, 2> grad, std::int64_t offset, std::int64_t count) {
  const std::int64_t n = grad.numel(), cols = grad.size(1);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / cols;
    if (r < offset || r >= offset + count) grad(r, i % cols) = 0.0f;
  }
}

/// d_logit_scale[0] += Σ grad ⊙ sim (= Σ ∂L/∂S ⊙ S), one block, fixed tree, in double.
QLIP_KERNEL void contrastive_scale_grad_kernel(DeviceView<const float, 2> grad, DeviceView<const float, 2> sim,
                                               DeviceView<float, 1> d_logit_scale) {
  __shared__ double partial[kContrastiveThreads];
  const std::int64_t n = grad.numel(), cols = grad.size(1);
  double acc = 0.0;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x)
    acc += static_cast<double>(grad(i / cols, i % cols)) * static_cast<double>(sim(i / cols, i % cols));
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = kContrastiveThreads / 2; stride > 0; stride >>= 1) {
    if (static_cast<int>(threadIdx.x) < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) d_logit_scale(0) = static_cast<float>(static_cast<double>(d_logit_scale(0)) + partial[0]);
}

inline void check_contrastive_workspace(const ContrastiveWorkspace& ws, std::int64_t batch, const char* op) {
  QLIP_CHECK(ws.batch() == batch, op, ": the workspace is for a batch of ", ws.batch(), ", the features have ", batch,
             " rows (ContrastiveWorkspace(B))");
}

}  // namespace detail
}  // namespace cuda

namespace ops {

/// The contrastive loss of the local rows on the device (reference::contrastive_loss);
/// synchronises `stream` (the result is a host value).
inline ContrastiveLossResult contrastive_loss(cuda_backend be, const cuda::BlasLt& lt, DeviceView<const float, 2> image,
                                              DeviceView<const float, 2> text, DeviceView<const float, 1> logit_scale,
                                              ContrastiveRows rows, const cuda::ContrastiveWorkspace& ws,
                                              cudaStream_t stream = 0) {
  const std::int64_t b = detail::check_contrastive_loss_args(cuda::sizes_only(image), cuda::sizes_only(text),
                                                             cuda::sizes_only(logit_scale), rows, "contrastive_loss");
  cuda::detail::check_contrastive_workspace(ws, image.size(0), "contrastive_loss");
  gemm(be, lt, image, text.transpose(0, 1), ws.sim(), 1.0f, 0.0f, cuda::FloatMath::fp32, stream);
  cuda::detail::
      contrastive_lines_kernel<<<static_cast<unsigned>(2 * b), cuda::detail::kContrastiveThreads, 0, stream>>>(
          ws.sim(), logit_scale, rows.offset, b, ws.line_loss(), ws.line_hit());
  QLIP_CUDA_CHECK_LAUNCH();
  std::vector<float> loss(static_cast<std::size_t>(2 * b));
  std::vector<int> hit(static_cast<std::size_t>(2 * b));
  QLIP_CUDA_CHECK(
      cudaMemcpyAsync(loss.data(), ws.line_loss(), sizeof(float) * loss.size(), cudaMemcpyDeviceToHost, stream));
  QLIP_CUDA_CHECK(cudaMemcpyAsync(hit.data(), ws.line_hit(), sizeof(int) * hit.size(), cudaMemcpyDeviceToHost, stream));
  QLIP_CUDA_CHECK(cudaStreamSynchronize(stream));
  double row_sum = 0.0, col_sum = 0.0;
  std::int64_t row_hits = 0, col_hits = 0;
  for (std::int64_t i = 0; i < b; ++i) {
    row_sum += loss[i];
    col_sum += loss[b + i];
    row_hits += hit[i];
    col_hits += hit[b + i];
  }
  ContrastiveLossResult r;
  r.loss = 0.5 * (row_sum + col_sum) / static_cast<double>(b);
  r.image_to_text_accuracy = static_cast<double>(row_hits) / static_cast<double>(b);
  r.text_to_image_accuracy = static_cast<double>(col_hits) / static_cast<double>(b);
  return r;
}

/// Backward of contrastive_loss on the device (reference::contrastive_loss_backward: d_image and
/// d_text written, d_logit_scale accumulated, empty views skipped).
inline void contrastive_loss_backward(cuda_backend be, const cuda::BlasLt& lt, DeviceView<const float, 2> image,
                                      DeviceView<const float, 2> text, DeviceView<const float, 1> logit_scale,
                                      double dloss, DeviceView<float, 2> d_image, DeviceView<float, 2> d_text,
                                      DeviceView<float, 1> d_logit_scale, ContrastiveRows rows,
                                      const cuda::ContrastiveWorkspace& ws, cudaStream_t stream = 0) {
  const std::int64_t b = detail::check_contrastive_loss_backward_args(
      cuda::sizes_only(image), cuda::sizes_only(text), cuda::sizes_only(logit_scale), rows, cuda::sizes_only(d_image),
      cuda::sizes_only(d_text), cuda::sizes_only(d_logit_scale));
  cuda::detail::check_contrastive_workspace(ws, image.size(0), "contrastive_loss_backward");
  const std::int64_t n = image.size(0);
  gemm(be, lt, image, text.transpose(0, 1), ws.sim(), 1.0f, 0.0f, cuda::FloatMath::fp32, stream);
  const float w = static_cast<float>(dloss / (2.0 * static_cast<double>(b)));
  constexpr int kThreads = cuda::detail::kContrastiveThreads;
  cuda::detail::contrastive_zero_rows_kernel<<<cuda::grid_for(n * n, kThreads), kThreads, 0, stream>>>(ws.grad(),
                                                                                                       rows.offset, b);
  QLIP_CUDA_CHECK_LAUNCH();
  cuda::detail::contrastive_grad_kernel<false>
      <<<static_cast<unsigned>(b), kThreads, 0, stream>>>(ws.sim(), logit_scale, rows.offset, w, ws.grad());
  QLIP_CUDA_CHECK_LAUNCH();
  cuda::detail::contrastive_grad_kernel<true>
      <<<static_cast<unsigned>(b), kThreads, 0, stream>>>(ws.sim(), logit_scale, rows.offset, w, ws.grad());
  QLIP_CUDA_CHECK_LAUNCH();
  const DeviceView<const float, 2> g = ws.grad();
  if (!d_image.empty()) gemm(be, lt, g, text, d_image, 1.0f, 0.0f, cuda::FloatMath::fp32, stream);
  if (!d_text.empty()) gemm(be, lt, g.transpose(0, 1), image, d_text, 1.0f, 0.0f, cuda::FloatMath::fp32, stream);
  if (!d_logit_scale.empty()) {
    cuda::detail::contrastive_scale_grad_kernel<<<1, kThreads, 0, stream>>>(g, ws.sim(), d_logit_scale);
    QLIP_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace ops
}  // namespace qlip
