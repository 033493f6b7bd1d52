/// @file optimizer.cuh
/// @brief The optimiser steps on the CUDA backend over the flat parameter buffers: AdamW and LAMB,
///        each one fused pass per step over every segment (LAMB: a norm pass, a per-segment trust
///        ratio, an update pass), element formulas shared with the CPU backend and the reference
///        (reference/optimizer.hpp: detail::adamw_element, lamb_moments, lamb_direction).
///
/// Blocks are dealt out segment by segment (kOptimizerChunk elements per block); a block finds its
/// segment by a binary search over the per-segment first-block table. The table, each segment's
/// scalars and LAMB's partial norms live in caller-owned device workspace (OptimizerWorkspace), so a
/// step allocates nothing. LAMB's norms are summed in double, per block in a fixed tree and then
/// per segment in block order: the result does not depend on timing (deterministic), and differs
/// from the reference only by that summation order and by float elements.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common.cuh"
#include "qlip/reference/optimizer.hpp"

namespace qlip {
namespace cuda {

/// Elements of one segment handled by one block (a multiple of the block size).
inline constexpr std::int64_t kOptimizerChunk = 4096;
inline constexpr int kOptimizerThreads = 256;

/// What one segment needs on the device.
struct OptimizerSegmentJob {
  std::int64_t offset = 0, numel = 0;
  std::int64_t first_block = 0;  ///< index of the segment's first block in the launch
  qlip::detail::AdamWScalars<float> adamw{};
  qlip::detail::LambScalars<float> lamb{};
  double lr = 0.0;
};

/// Blocks a segment of n elements takes.
inline std::int64_t optimizer_blocks(std::int64_t n) {
  return (n + kOptimizerChunk - 1) / kOptimizerChunk;
}

/// Caller-owned device workspace of a step over up to `max_segments` segments of `max_blocks`
/// blocks in all (optimizer_blocks summed over the segments): sized once, reused every step.
class OptimizerWorkspace {
 public:
  OptimizerWorkspace() = default;
  OptimizerWorkspace(std::int64_t max_segments, std::int64_t max_blocks)
      : jobs_(max_segments), partials_(2 * max_blocks), scales_(max_segments), max_blocks_(max_blocks) {}
  /// A workspace that fits exactly these segments.
  static OptimizerWorkspace for_segments(std::span<const OptimizerSegment> segments) {
    std::int64_t blocks = 0;
    for (const OptimizerSegment& s : segments) blocks += optimizer_blocks(s.numel);
    return OptimizerWorkspace(static_cast<std::int64_t>(segments.size()), blocks);
  }
  OptimizerSegmentJob* jobs() const { return jobs_.data(); }
  double* partials() const { return partials_.data(); }
  double* scales() const { return scales_.data(); }
  std::int64_t max_segments() const { return jobs_.size(); }
  std::int64_t max_blocks() const { return max_blocks_; }

 private:
  DeviceBuffer<OptimizerSegmentJob> jobs_;
  DeviceBuffer<double> partials_;  ///< LAMB: ‖p‖² and ‖r‖² per block
  DeviceBuffer<double> scales_;    ///< LAMB: lr · trust per segment
  std::int64_t max_blocks_ = 0;
};

namespace detail {

/// The segment whose blocks include `block` (jobs sorted by first_block).
__device__ inline std::int64_t segment_of_block(const OptimizerSegmentJob* jobs, std::int64_t n_jobs,
                                                std::int64_t block) {
  std::int64_t lo = 0, hi = n_jobs - 1;
  while (lo < hi) {
    const std::int64_t mid = (lo + hi + 1) / 2;
    if (jobs[mid].first_block <= block)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

/// One past the last element of the chunk that starts at `begin` in `job`'s segment.
__device__ inline std::int64_t chunk_end(std::int64_t begin, const OptimizerSegmentJob& job) {
  const std::int64_t segment_end = job.offset + job.numel;
  return begin + kOptimizerChunk < segment_end ? begin + kOptimizerChunk : segment_end;
}

/// Block-wide sum of one double per thread in a fixed tree (shared memory), valid in thread 0.
template <int kThreads>
__device__ inline double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (static_cast<int>(threadIdx.x) < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  return shared[0];
}

QLIP_KERNEL void adamw_kernel(float* param, const float* grad, float* exp_avg, float* exp_avg_sq,
                              const OptimizerSegmentJob* jobs, std::int64_t n_jobs) {
  const std::int64_t block = blockIdx.x;
  const OptimizerSegmentJob& job = jobs[segment_of_block(jobs, n_jobs, block)];
  const std::int64_t begin = job.offset + (block - job.first_block) * kOptimizerChunk;
  const std::int64_t end = chunk_end(begin, job);
  const qlip::detail::AdamWScalars<float>& c = job.adamw;
  for (std::int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    float p = param[i], m = exp_avg[i], v = exp_avg_sq[i];
    qlip::detail::adamw_element<float>(p, grad[i] * c.grad_scale, m, v, c);
    param[i] = p;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
  }
}

/// LAMB pass 1: the moments, and per block ‖p‖² and ‖r‖² (r from the stored moments, as the
/// update pass will see them).
QLIP_KERNEL void lamb_moments_kernel(const float* param, const float* grad, float* exp_avg, float* exp_avg_sq,
                                     const OptimizerSegmentJob* jobs, std::int64_t n_jobs, double* partials) {
  __shared__ double shared[kOptimizerThreads];
  const std::int64_t block = blockIdx.x;
  const OptimizerSegmentJob& job = jobs[segment_of_block(jobs, n_jobs, block)];
  const std::int64_t begin = job.offset + (block - job.first_block) * kOptimizerChunk;
  const std::int64_t end = chunk_end(begin, job);
  const qlip::detail::LambScalars<float>& c = job.lamb;
  double p_sq = 0.0, r_sq = 0.0;
  for (std::int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    float m = exp_avg[i], v = exp_avg_sq[i];
    qlip::detail::lamb_moments<float>(grad[i] * c.grad_scale, m, v, c);
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    const float p = param[i], r = qlip::detail::lamb_direction<float>(p, m, v, c);
    p_sq += static_cast<double>(p) * p;
    r_sq += static_cast<double>(r) * r;
  }
  p_sq = block_sum<kOptimizerThreads>(p_sq, shared);
  __syncthreads();
  r_sq = block_sum<kOptimizerThreads>(r_sq, shared);
  if (threadIdx.x == 0) {
    partials[2 * block] = p_sq;
    partials[2 * block + 1] = r_sq;
  }
}

/// LAMB pass 2: one thread per segment sums its blocks' partials in block order → lr · trust.
QLIP_KERNEL void lamb_trust_kernel(const OptimizerSegmentJob* jobs, std::int64_t n_jobs, std::int64_t n_blocks,
                                   const double* partials, double* scales) {
  const std::int64_t s = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (s >= n_jobs) return;
  const std::int64_t end = s + 1 < n_jobs ? jobs[s + 1].first_block : n_blocks;
  double p_sq = 0.0, r_sq = 0.0;
  for (std::int64_t b = jobs[s].first_block; b < end; ++b) {
    p_sq += partials[2 * b];
    r_sq += partials[2 * b + 1];
  }
  const double trust = (p_sq > 0.0 && r_sq > 0.0) ? sqrt(p_sq) / sqrt(r_sq) : 1.0;
  scales[s] = jobs[s].lr * trust;
}

/// LAMB pass 3: p ← p − lr·trust·r.
QLIP_KERNEL void lamb_update_kernel(float* param, const float* exp_avg, const float* exp_avg_sq,
                                    const OptimizerSegmentJob* jobs, std::int64_t n_jobs, const double* scales) {
  const std::int64_t block = blockIdx.x;
  const std::int64_t s = segment_of_block(jobs, n_jobs, block);
  const OptimizerSegmentJob& job = jobs[s];
  const std::int64_t begin = job.offset + (block - job.first_block) * kOptimizerChunk;
  const std::int64_t end = chunk_end(begin, job);
  const float step_scale = static_cast<float>(scales[s]);
  for (std::int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float p = param[i];
    param[i] = p - step_scale * qlip::detail::lamb_direction<float>(p, exp_avg[i], exp_avg_sq[i], job.lamb);
  }
}

/// The jobs of a step on the host (scalars rounded once from double, as on the CPU), checked
/// against the workspace, then copied into it on `stream`. Returns the number of blocks.
inline std::int64_t upload_optimizer_jobs(const char* op, std::span<const OptimizerSegment> segments,
                                          const AdamHyperParams& hp, const OptimizerWorkspace& ws,
                                          cudaStream_t stream) {
  std::vector<OptimizerSegmentJob> jobs;
  jobs.reserve(segments.size());
  std::int64_t blocks = 0;
  for (const OptimizerSegment& s : segments) {
    OptimizerSegmentJob j;
    j.offset = s.offset;
    j.numel = s.numel;
    j.first_block = blocks;
    j.adamw = qlip::detail::adamw_scalars<float>(s, hp);
    j.lamb = qlip::detail::lamb_scalars<float>(s, hp);
    j.lr = s.lr;
    jobs.push_back(j);
    blocks += optimizer_blocks(s.numel);
  }
  QLIP_CHECK(static_cast<std::int64_t>(jobs.size()) <= ws.max_segments() && blocks <= ws.max_blocks(), op,
             ": the workspace holds ", ws.max_segments(), " segments of ", ws.max_blocks(), " blocks, the step needs ",
             jobs.size(), " of ", blocks, " (OptimizerWorkspace::for_segments sizes one)");
  QLIP_CUDA_CHECK(cudaMemcpyAsync(ws.jobs(), jobs.data(), sizeof(OptimizerSegmentJob) * jobs.size(),
                                  cudaMemcpyHostToDevice, stream));
  // The host vector must outlive the copy: pageable memory makes it synchronous with the host, but
  // say so explicitly rather than rely on it.
  QLIP_CUDA_CHECK(cudaStreamSynchronize(stream));
  return blocks;
}

/// What a step launches: its segments and their blocks (0 and 0 for no segments).
struct OptimizerLaunch {
  std::int64_t segments = 0, blocks = 0;
};

/// The shared start of a step: the argument checks, then the jobs into the workspace.
template <class Grad>
OptimizerLaunch begin_optimizer_step(const char* op, DeviceView<float, 1> param, Grad grad,
                                     DeviceView<float, 1> exp_avg, DeviceView<float, 1> exp_avg_sq,
                                     std::span<const OptimizerSegment> segments, const AdamHyperParams& hp,
                                     const OptimizerWorkspace& ws, cudaStream_t stream) {
  qlip::detail::check_optimizer_args(op, param, grad, exp_avg, exp_avg_sq, segments, hp);
  if (segments.empty()) return {};
  return {static_cast<std::int64_t>(segments.size()), upload_optimizer_jobs(op, segments, hp, ws, stream)};
}

}  // namespace detail
}  // namespace cuda

namespace ops {

/// One AdamW step on the device (torch.optim.AdamW, foreach=False; formulas and checks as
/// reference::adamw_step), every segment in one launch. The buffers are device memory; the
/// segments and hyper-parameters are host values.
inline void adamw_step(cuda_backend, DeviceView<float, 1> param, DeviceView<const float, 1> grad,
                       DeviceView<float, 1> exp_avg, DeviceView<float, 1> exp_avg_sq,
                       std::span<const OptimizerSegment> segments, const AdamHyperParams& hp,
                       const cuda::OptimizerWorkspace& ws, cudaStream_t stream = 0) {
  const cuda::detail::OptimizerLaunch run =
      cuda::detail::begin_optimizer_step("adamw_step", param, grad, exp_avg, exp_avg_sq, segments, hp, ws, stream);
  if (run.segments == 0) return;
  cuda::detail::adamw_kernel<<<static_cast<unsigned>(run.blocks), cuda::kOptimizerThreads, 0, stream>>>(
      param.data(), grad.data(), exp_avg.data(), exp_avg_sq.data(), ws.jobs(), run.segments);
  QLIP_CUDA_CHECK_LAUNCH();
}

/// One LAMB step on the device (You et al. 2019 with bias correction; formulas and checks as
/// reference::lamb_step): moments and per-block norms, per-segment trust ratios, update.
inline void lamb_step(cuda_backend, DeviceView<float, 1> param, DeviceView<const float, 1> grad,
                      DeviceView<float, 1> exp_avg, DeviceView<float, 1> exp_avg_sq,
                      std::span<const OptimizerSegment> segments, const AdamHyperParams& hp,
                      const cuda::OptimizerWorkspace& ws, cudaStream_t stream = 0) {
  const cuda::detail::OptimizerLaunch run =
      cuda::detail::begin_optimizer_step("lamb_step", param, grad, exp_avg, exp_avg_sq, segments, hp, ws, stream);
  if (run.segments == 0) return;
  const std::int64_t n_jobs = run.segments, blocks = run.blocks;
  const unsigned grid = static_cast<unsigned>(blocks);
  cuda::detail::lamb_moments_kernel<<<grid, cuda::kOptimizerThreads, 0, stream>>>(
      param.data(), grad.data(), exp_avg.data(), exp_avg_sq.data(), ws.jobs(), n_jobs, ws.partials());
  QLIP_CUDA_CHECK_LAUNCH();
  constexpr int kTrustThreads = 128;
  cuda::detail::lamb_trust_kernel<<<cuda::grid_for(n_jobs, kTrustThreads), kTrustThreads, 0, stream>>>(
      ws.jobs(), n_jobs, blocks, ws.partials(), ws.scales());
  QLIP_CUDA_CHECK_LAUNCH();
  cuda::detail::lamb_update_kernel<<<grid, cuda::kOptimizerThreads, 0, stream>>>(
      param.data(), exp_avg.data(), exp_avg_sq.data(), ws.jobs(), n_jobs, ws.scales());
  QLIP_CUDA_CHECK_LAUNCH();
}

}  // namespace ops
}  // namespace qlip
