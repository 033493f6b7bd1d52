/// @file attention.cuh
/// @brief Scaled-dot-product attention on the CUDA backend in the flash style (reference/attention.hpp:
///        the same masks, GQA, the causal alignment to the end of the keys for KV-cache decoding):
///        forward, training forward (also the per-row log-sum-exp) and backward, head dim a template
///        parameter (32 or 64), fp32.
///
/// Forward: one block per (batch, query head, tile of kRows queries), one thread per query row. K/V
/// tiles of kCols keys are staged in shared memory and read by every thread at the same address
/// (broadcast); each thread keeps its pre-scaled q row and its output accumulator in registers and
/// folds the keys in with the online softmax (running max and sum, the accumulator rescaled when the
/// max grows), so the T×S scores are never stored.
///
/// Backward (FlashAttention-2's recomputation, split so that no two threads add into one element,
/// hence deterministic without atomics): D_i = dout_i·out_i per row into caller-owned workspace;
/// then one kernel where each thread owns a key row and sums dk and dv over the query heads of its
/// kv group and every query, and one where each thread owns a query row and sums dq over the keys.
/// Both recompute P = exp(scale·q·k − lse) from the training forward's lse.
///
/// This is the plain-FMA form (no tensor cores yet): the contract and the tiling are the ones a
/// tensor-core version keeps.
#pragma once

#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "qlip/reference/attention.hpp"

namespace qlip {
namespace cuda::detail {

inline constexpr int kAttentionRows = 64;     ///< queries per forward block (one per thread)
inline constexpr int kAttentionCols = 64;     ///< keys per shared-memory tile in the forward
inline constexpr int kAttentionBwdTile = 32;  ///< keys (dk/dv) or queries (dq) per backward block and tile

__device__ inline std::int64_t imin(std::int64_t a, std::int64_t b) {
  return a < b ? a : b;
}
__device__ inline std::int64_t imax(std::int64_t a, std::int64_t b) {
  return a > b ? a : b;
}

/// Keys [0, limit) are visible to query i (reference/attention.hpp's alignment of the causal mask).
__device__ inline std::int64_t visible_keys(std::int64_t i, std::int64_t t, std::int64_t s, bool causal) {
  return causal ? i + s - t + 1 : s;
}

/// Keys [j0, j0 + kKeys) of kv head g into shared memory, zeros past the end, by the whole block.
template <int kKeys, int kDh>
__device__ inline void load_kv_tile(const DeviceView<const float, 4>& k, const DeviceView<const float, 4>& v,
                                    std::int64_t b, std::int64_t g, std::int64_t j0, float (*ks)[kDh],
                                    float (*vs)[kDh]) {
  const std::int64_t s_n = k.size(1);
  for (int e = threadIdx.x; e < kKeys * kDh; e += blockDim.x) {
    const int jj = e / kDh, d = e % kDh;
    const std::int64_t j = j0 + jj;
    ks[jj][d] = j < s_n ? k(b, j, g, d) : 0.0f;
    vs[jj][d] = j < s_n ? v(b, j, g, d) : 0.0f;
  }
}

template <int kDh, bool kCausal>
QLIP_KERNEL void attention_forward_kernel(DeviceView<const float, 4> q, DeviceView<const float, 4> k,
                                          DeviceView<const float, 4> v, DeviceView<float, 4> out,
                                          DeviceView<float, 3> lse, float scale) {
  __shared__ float ks[kAttentionCols][kDh];
  __shared__ float vs[kAttentionCols][kDh];
  const std::int64_t b = blockIdx.z, h = blockIdx.y;
  const std::int64_t t_n = q.size(1), s_n = k.size(1), g = h / (q.size(2) / k.size(2));
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * kAttentionRows;
  const std::int64_t i = first + threadIdx.x;
  const bool active = i < t_n;
  float qr[kDh], acc[kDh];
  for (int d = 0; d < kDh; ++d) {
    qr[d] = active ? scale * q(b, i, h, d) : 0.0f;
    acc[d] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const std::int64_t last = imin(first + kAttentionRows, t_n) - 1;
  const std::int64_t block_keys = visible_keys(last, t_n, s_n, kCausal);  // the block's last row sees the most
  const std::int64_t limit = active ? visible_keys(i, t_n, s_n, kCausal) : 0;
  for (std::int64_t j0 = 0; j0 < block_keys; j0 += kAttentionCols) {
    load_kv_tile<kAttentionCols, kDh>(k, v, b, g, j0, ks, vs);
    __syncthreads();
    const std::int64_t here = imin(kAttentionCols, limit - j0);
    for (int jj = 0; jj < here; ++jj) {
      float score = 0.0f;
      for (int d = 0; d < kDh; ++d) score = fmaf(qr[d], ks[jj][d], score);
      if (score > m) {  // a new running max: rescale what was summed under the old one
        const float correction = expf(m - score);
        l *= correction;
        for (int d = 0; d < kDh; ++d) acc[d] *= correction;
        m = score;
      }
      const float p = expf(score - m);
      l += p;
      for (int d = 0; d < kDh; ++d) acc[d] = fmaf(p, vs[jj][d], acc[d]);
    }
    __syncthreads();
  }
  if (!active) return;
  const float inv = 1.0f / l;
  for (int d = 0; d < kDh; ++d) out(b, i, h, d) = acc[d] * inv;
  if (lse.numel() > 0) lse(b, h, i) = m + logf(l);
}

/// D[b, h, i] = Σ_d dout·out, one thread per row.
QLIP_KERNEL void attention_row_dot_kernel(DeviceView<const float, 4> out, DeviceView<const float, 4> dout,
                                          DeviceView<float, 3> row_dot) {
  const std::int64_t rows = out.size(0) * out.size(1) * out.size(2), t_n = out.size(1), h_n = out.size(2);
  for (std::int64_t r = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; r < rows;
       r += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t h = r % h_n, i = (r / h_n) % t_n, b = r / (h_n * t_n);
    float acc = 0.0f;
    for (std::int64_t d = 0; d < out.size(3); ++d) acc = fmaf(dout(b, i, h, d), out(b, i, h, d), acc);
    row_dot(b, h, i) = acc;
  }
}

/// dk, dv for the key rows of one block (one per thread), summed over the group's query heads and
/// every visible query: dv_j = Σ P_ij·dout_i, dk_j = scale·Σ dS_ij·q_i.
template <int kDh, bool kCausal>
QLIP_KERNEL void attention_dkdv_kernel(DeviceView<const float, 4> q, DeviceView<const float, 4> k,
                                       DeviceView<const float, 4> v, DeviceView<const float, 3> lse,
                                       DeviceView<const float, 4> dout, DeviceView<const float, 3> row_dot,
                                       DeviceView<float, 4> dk, DeviceView<float, 4> dv, float scale) {
  constexpr int kTile = kAttentionBwdTile;
  __shared__ float qs[kTile][kDh];
  __shared__ float dos[kTile][kDh];
  __shared__ float lse_s[kTile], d_s[kTile];
  __shared__ float k_own[kTile][kDh + 1];  // +1: rows read by different threads fall in different banks
  __shared__ float v_own[kTile][kDh + 1];
  const std::int64_t b = blockIdx.z, g = blockIdx.y;
  const std::int64_t t_n = q.size(1), s_n = k.size(1), group = q.size(2) / k.size(2);
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * kTile + threadIdx.x;
  const bool active = j < s_n;
  for (int d = 0; d < kDh; ++d) {
    k_own[threadIdx.x][d] = active ? k(b, j, g, d) : 0.0f;
    v_own[threadIdx.x][d] = active ? v(b, j, g, d) : 0.0f;
  }
  float dk_acc[kDh], dv_acc[kDh];
  for (int d = 0; d < kDh; ++d) dk_acc[d] = dv_acc[d] = 0.0f;
  // The first query that sees key j (causal): i + S − T + 1 > j.
  const std::int64_t first_query = kCausal ? imax(0, j - s_n + t_n) : 0;
  const std::int64_t block_first_key = static_cast<std::int64_t>(blockIdx.x) * kTile;
  const std::int64_t block_first_query = kCausal ? imax(0, block_first_key - s_n + t_n) : 0;
  for (std::int64_t h = g * group; h < (g + 1) * group; ++h) {
    for (std::int64_t i0 = block_first_query - block_first_query % kTile; i0 < t_n; i0 += kTile) {
      __syncthreads();  // the previous tile's readers are done
      for (int e = threadIdx.x; e < kTile * kDh; e += blockDim.x) {
        const int ii = e / kDh, d = e % kDh;
        const std::int64_t i = i0 + ii;
        qs[ii][d] = i < t_n ? q(b, i, h, d) : 0.0f;
        dos[ii][d] = i < t_n ? dout(b, i, h, d) : 0.0f;
      }
      if (threadIdx.x < kTile) {
        const std::int64_t i = i0 + threadIdx.x;
        lse_s[threadIdx.x] = i < t_n ? lse(b, h, i) : 0.0f;
        d_s[threadIdx.x] = i < t_n ? row_dot(b, h, i) : 0.0f;
      }
      __syncthreads();
      if (!active) continue;
      for (int ii = 0; ii < kTile; ++ii) {
        const std::int64_t i = i0 + ii;
        if (i >= t_n || i < first_query) continue;
        float qk = 0.0f, dp = 0.0f;
        for (int d = 0; d < kDh; ++d) {
          qk = fmaf(qs[ii][d], k_own[threadIdx.x][d], qk);
          dp = fmaf(dos[ii][d], v_own[threadIdx.x][d], dp);
        }
        const float p = expf(scale * qk - lse_s[ii]);
        const float ds = p * (dp - d_s[ii]);
        for (int d = 0; d < kDh; ++d) {
          dv_acc[d] = fmaf(p, dos[ii][d], dv_acc[d]);
          dk_acc[d] = fmaf(scale * ds, qs[ii][d], dk_acc[d]);
        }
      }
    }
  }
  if (!active) return;
  for (int d = 0; d < kDh; ++d) {
    if (dk.numel() > 0) dk(b, j, g, d) = dk_acc[d];
    if (dv.numel() > 0) dv(b, j, g, d) = dv_acc[d];
  }
}

/// dq for the query rows of one block (one per thread): dq_i = scale·Σ_j dS_ij·k_j.
template <int kDh, bool kCausal>
QLIP_KERNEL void attention_dq_kernel(DeviceView<const float, 4> q, DeviceView<const float, 4> k,
                                     DeviceView<const float, 4> v, DeviceView<const float, 3> lse,
                                     DeviceView<const float, 4> dout, DeviceView<const float, 3> row_dot,
                                     DeviceView<float, 4> dq, float scale) {
  constexpr int kTile = kAttentionBwdTile;
  __shared__ float ks[kTile][kDh];
  __shared__ float vs[kTile][kDh];
  __shared__ float q_own[kTile][kDh + 1];
  __shared__ float do_own[kTile][kDh + 1];
  const std::int64_t b = blockIdx.z, h = blockIdx.y;
  const std::int64_t t_n = q.size(1), s_n = k.size(1), g = h / (q.size(2) / k.size(2));
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * kTile;
  const std::int64_t i = first + threadIdx.x;
  const bool active = i < t_n;
  for (int d = 0; d < kDh; ++d) {
    q_own[threadIdx.x][d] = active ? q(b, i, h, d) : 0.0f;
    do_own[threadIdx.x][d] = active ? dout(b, i, h, d) : 0.0f;
  }
  const float lse_i = active ? lse(b, h, i) : 0.0f, d_i = active ? row_dot(b, h, i) : 0.0f;
  float acc[kDh];
  for (int d = 0; d < kDh; ++d) acc[d] = 0.0f;
  const std::int64_t last = imin(first + kTile, t_n) - 1;
  const std::int64_t block_keys = visible_keys(last, t_n, s_n, kCausal);
  const std::int64_t limit = active ? visible_keys(i, t_n, s_n, kCausal) : 0;
  for (std::int64_t j0 = 0; j0 < block_keys; j0 += kTile) {
    __syncthreads();
    load_kv_tile<kTile, kDh>(k, v, b, g, j0, ks, vs);
    __syncthreads();
    const std::int64_t here = imin(kTile, limit - j0);
    for (int jj = 0; jj < here; ++jj) {
      float qk = 0.0f, dp = 0.0f;
      for (int d = 0; d < kDh; ++d) {
        qk = fmaf(q_own[threadIdx.x][d], ks[jj][d], qk);
        dp = fmaf(do_own[threadIdx.x][d], vs[jj][d], dp);
      }
      const float ds = expf(scale * qk - lse_i) * (dp - d_i);
      for (int d = 0; d < kDh; ++d) acc[d] = fmaf(scale * ds, ks[jj][d], acc[d]);
    }
  }
  if (!active) return;
  for (int d = 0; d < kDh; ++d) dq(b, i, h, d) = acc[d];
}

/// Calls f(std::integral_constant<int, Dh>{}, std::bool_constant<causal>{}) for the supported head
/// dims, or throws naming the unsupported one.
template <class F>
void dispatch_attention(std::int64_t dh, AttentionMask mask, const char* op, F&& f) {
  const bool causal = mask == AttentionMask::causal;
  auto with_mask = [&](auto dh_c) {
    if (causal)
      f(dh_c, std::true_type{});
    else
      f(dh_c, std::false_type{});
  };
  if (dh == 64)
    with_mask(std::integral_constant<int, 64>{});
  else if (dh == 32)
    with_mask(std::integral_constant<int, 32>{});
  else
    QLIP_THROW(op, ": head_dim ", dh, " is not compiled for CUDA (32 and 64 are)");
}

inline void attention_forward(DeviceView<const float, 4> q, DeviceView<const float, 4> k, DeviceView<const float, 4> v,
                              DeviceView<float, 4> out, DeviceView<float, 3> lse, float scale, AttentionMask mask,
                              const char* op, cudaStream_t stream) {
  if (q.numel() == 0) return;
  const dim3 grid(static_cast<unsigned>((q.size(1) + kAttentionRows - 1) / kAttentionRows),
                  static_cast<unsigned>(q.size(2)), static_cast<unsigned>(q.size(0)));
  dispatch_attention(q.size(3), mask, op, [&](auto dh, auto causal) {
    attention_forward_kernel<decltype(dh)::value, decltype(causal)::value>
        <<<grid, kAttentionRows, 0, stream>>>(q, k, v, out, lse, scale);
  });
  QLIP_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda::detail

namespace ops {

/// softmax(scale·q·kᵀ + mask)·v on the device (reference::attention): q [B,T,Hq,Dh], k/v
/// [B,S,Hkv,Dh], out [B,T,Hq,Dh]; any strides.
inline void attention(cuda_backend, DeviceView<const float, 4> q, DeviceView<const float, 4> k,
                      DeviceView<const float, 4> v, DeviceView<float, 4> out, float scale, AttentionMask mask,
                      cudaStream_t stream = 0) {
  detail::check_attention_shapes<float, host_memory>(cuda::sizes_only(q), cuda::sizes_only(k), cuda::sizes_only(v),
                                                     cuda::sizes_only(DeviceView<const float, 4>(out)), mask);
  cuda::detail::attention_forward(q, k, v, out, {}, scale, mask, "attention", stream);
}

/// The training forward: attention() that also writes lse [B, Hq, T] for the backward.
inline void attention_train(cuda_backend, DeviceView<const float, 4> q, DeviceView<const float, 4> k,
                            DeviceView<const float, 4> v, DeviceView<float, 4> out, DeviceView<float, 3> lse,
                            float scale, AttentionMask mask, cudaStream_t stream = 0) {
  detail::check_attention_train_shapes<float, host_memory>(
      cuda::sizes_only(q), cuda::sizes_only(k), cuda::sizes_only(v), cuda::sizes_only(DeviceView<const float, 4>(out)),
      cuda::sizes_only(DeviceView<const float, 3>(lse)), mask);
  cuda::detail::attention_forward(q, k, v, out, lse, scale, mask, "attention_train", stream);
}

/// Backward of attention (formulas and contract as reference::attention_backward: dq, dk, dv
/// written, an empty view skipped) from the training forward's out and lse. row_dot [B, Hq, T] is
/// caller-owned device workspace.
inline void attention_backward(cuda_backend, DeviceView<const float, 4> q, DeviceView<const float, 4> k,
                               DeviceView<const float, 4> v, DeviceView<const float, 4> out,
                               DeviceView<const float, 3> lse, DeviceView<const float, 4> dout, DeviceView<float, 4> dq,
                               DeviceView<float, 4> dk, DeviceView<float, 4> dv, float scale, AttentionMask mask,
                               DeviceView<float, 3> row_dot, cudaStream_t stream = 0) {
  detail::check_attention_backward_shapes<float, host_memory>(
      cuda::sizes_only(q), cuda::sizes_only(k), cuda::sizes_only(v), cuda::sizes_only(out), cuda::sizes_only(lse),
      cuda::sizes_only(dout), cuda::sizes_only(dq), cuda::sizes_only(dk), cuda::sizes_only(dv), mask);
  check_shape(cuda::sizes_only(row_dot), {q.size(0), q.size(2), q.size(1)}, "attention_backward: row_dot");
  if (q.numel() == 0 || k.numel() == 0) return;
  constexpr int kThreads = 256;
  const std::int64_t rows = q.size(0) * q.size(1) * q.size(2);
  cuda::detail::attention_row_dot_kernel<<<cuda::grid_for(rows, kThreads), kThreads, 0, stream>>>(out, dout, row_dot);
  QLIP_CUDA_CHECK_LAUNCH();
  constexpr int kTile = cuda::detail::kAttentionBwdTile;
  const DeviceView<const float, 3> d_rows(row_dot);
  cuda::detail::dispatch_attention(q.size(3), mask, "attention_backward", [&](auto dh, auto causal) {
    constexpr int kDh = decltype(dh)::value;
    constexpr bool kCausal = decltype(causal)::value;
    if (!dk.empty() || !dv.empty()) {
      const dim3 grid(static_cast<unsigned>((k.size(1) + kTile - 1) / kTile), static_cast<unsigned>(k.size(2)),
                      static_cast<unsigned>(k.size(0)));
      cuda::detail::attention_dkdv_kernel<kDh, kCausal>
          <<<grid, kTile, 0, stream>>>(q, k, v, lse, dout, d_rows, dk, dv, scale);
      QLIP_CUDA_CHECK_LAUNCH();
    }
    if (!dq.empty()) {
      const dim3 grid(static_cast<unsigned>((q.size(1) + kTile - 1) / kTile), static_cast<unsigned>(q.size(2)),
                      static_cast<unsigned>(q.size(0)));
      cuda::detail::attention_dq_kernel<kDh, kCausal>
          <<<grid, kTile, 0, stream>>>(q, k, v, lse, dout, d_rows, dq, scale);
      QLIP_CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace ops
}  // namespace qlip
