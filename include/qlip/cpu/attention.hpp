/// @file attention.hpp
/// @brief CPU backend scaled-dot-product attention: two Eigen GEMMs per (batch, head, query block)
///        around an fp32 softmax, parallelised over those tasks with OpenMP.
///
/// Math and mask conventions are those of reference/attention.hpp (GQA head h reads kv head
/// h / (Hq/Hkv); causal aligns the queries to the end of the keys). Per task:
///   P[Tb,Sv] = scale·Q[Tb,Dh]·K[Sv,Dh]ᵀ   (Sv: keys any query of the block may see)
///   P ← exp(P − rowmax) over each row's visible keys, 0 beyond; l = row sums
///   O[Tb,Dh] = P·V[Sv,Dh], then O ← O / l   (normalising O costs Tb·Dh, normalising P Tb·Sv)
/// The scores of each thread live in the caller's Arena (attention_workspace_bytes sizes it).
/// Queries are split into blocks of ≤ kAttentionMaxQueryBlock rows, so the scores stay in L2 and
/// B·H alone need not feed every thread. Views of q/k/v/out with unit stride along Dh (including
/// views into a fused qkv buffer) go straight to Eigen; any other layout takes a plain-loop path.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <omp.h>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/reference/attention.hpp"

namespace qlip {
namespace detail::cpu {

/// Largest query block: 256 rows × 257 keys × 4 B = 257 KiB of scores, well inside a 1–2 MiB L2.
inline constexpr std::int64_t kAttentionMaxQueryBlock = 256;

/// How attention splits its work: blocks of equal size (T = 257 → 129 + 128, not 256 + 1).
struct AttentionPlan {
  std::int64_t blocks_per_head = 0;  // query blocks per (batch, head)
  std::int64_t block_rows = 0;       // rows in every block but possibly the last
  std::int64_t tasks = 0;            // batch · heads · blocks_per_head
  int threads = 0;                   // threads that get a scratch slot (≤ tasks)
  std::int64_t scratch_floats = 0;   // per thread: scores [block_rows, S] + row sums [block_rows]
};

inline AttentionPlan plan_attention(std::int64_t batch, std::int64_t t, std::int64_t s, std::int64_t heads,
                                    int threads) {
  AttentionPlan plan;
  if (batch <= 0 || t <= 0 || heads <= 0) return plan;
  plan.blocks_per_head = (t + kAttentionMaxQueryBlock - 1) / kAttentionMaxQueryBlock;
  plan.block_rows = (t + plan.blocks_per_head - 1) / plan.blocks_per_head;
  plan.tasks = batch * heads * plan.blocks_per_head;
  plan.threads = static_cast<int>(std::clamp<std::int64_t>(plan.tasks, 1, std::max(threads, 1)));
  const std::int64_t floats = plan.block_rows * s + plan.block_rows;
  plan.scratch_floats = (floats + 15) / 16 * 16;  // 64-byte multiples keep every slot aligned
  return plan;
}

using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstRowMap = Eigen::Map<const RowMatrixF, Eigen::Unaligned, Eigen::OuterStride<>>;
using RowMap = Eigen::Map<RowMatrixF, Eigen::Unaligned, Eigen::OuterStride<>>;

/// One (b, h, query rows [i0, i0 + rows)) task; q/k/v/out have unit stride along Dh.
inline void attention_task_eigen(const HostView<const float, 4>& q, const HostView<const float, 4>& k,
                                 const HostView<const float, 4>& v, const HostView<float, 4>& out,
                                 std::int64_t b, std::int64_t h, std::int64_t g, std::int64_t i0,
                                 std::int64_t rows, float scale, AttentionMask mask, float* scratch,
                                 const HostView<float, 3>& lse = {}) {
  const std::int64_t t = q.size(1), s = k.size(1), dh = q.size(3);
  const bool causal = mask == AttentionMask::causal;
  // Keys any row of this block may see: the last row i0 + rows − 1 sees j < i0 + rows + S − T.
  const std::int64_t keys = causal ? std::min(s, i0 + rows + s - t) : s;

  ConstRowMap Q(q.base() + q.index_of(b, i0, h, 0), rows, dh, Eigen::OuterStride<>(q.stride(1)));
  ConstRowMap K(k.base() + k.index_of(b, 0, g, 0), keys, dh, Eigen::OuterStride<>(k.stride(1)));
  ConstRowMap V(v.base() + v.index_of(b, 0, g, 0), keys, dh, Eigen::OuterStride<>(v.stride(1)));
  RowMap O(out.base() + out.index_of(b, i0, h, 0), rows, dh, Eigen::OuterStride<>(out.stride(1)));
  RowMap P(scratch, rows, keys, Eigen::OuterStride<>(keys));
  float* row_sum = scratch + rows * keys;

  P.noalias() = (scale * Q) * K.transpose();
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t visible = causal ? i0 + r + s - t + 1 : keys;  // ≥ 1 since T ≤ S
    auto row = P.row(r);
    auto live = row.head(visible).array();
    const float row_max = live.maxCoeff();
    live = (live - row_max).exp();
    row_sum[r] = live.sum();
    if (!lse.empty()) lse(b, h, i0 + r) = row_max + std::log(row_sum[r]);  // training forward only
    if (visible < keys) row.tail(keys - visible).setZero();
  }
  O.noalias() = P * V;
  for (std::int64_t r = 0; r < rows; ++r) O.row(r) *= 1.0f / row_sum[r];
}

/// The same task for views with any strides (plain loops, fp32 accumulation). No model layout
/// takes this path; it keeps the op total over strided views.
inline void attention_task_strided(const HostView<const float, 4>& q, const HostView<const float, 4>& k,
                                   const HostView<const float, 4>& v, const HostView<float, 4>& out,
                                   std::int64_t b, std::int64_t h, std::int64_t g, std::int64_t i0,
                                   std::int64_t rows, float scale, AttentionMask mask, float* scratch,
                                   const HostView<float, 3>& lse = {}) {
  const std::int64_t t = q.size(1), s = k.size(1), dh = q.size(3);
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t i = i0 + r;
    const std::int64_t visible = mask == AttentionMask::causal ? i + s - t + 1 : s;
    float* p = scratch;  // [visible]
    float row_max = -INFINITY;
    for (std::int64_t j = 0; j < visible; ++j) {
      float dot = 0.0f;
      for (std::int64_t d = 0; d < dh; ++d) dot += q(b, i, h, d) * k(b, j, g, d);
      p[j] = scale * dot;
      row_max = std::max(row_max, p[j]);
    }
    float sum = 0.0f;
    for (std::int64_t j = 0; j < visible; ++j) {
      p[j] = std::exp(p[j] - row_max);
      sum += p[j];
    }
    if (!lse.empty()) lse(b, h, i) = row_max + std::log(sum);  // training forward only
    const float inv = 1.0f / sum;
    for (std::int64_t d = 0; d < dh; ++d) {
      float acc = 0.0f;
      for (std::int64_t j = 0; j < visible; ++j) acc += p[j] * v(b, j, g, d);
      out(b, i, h, d) = acc * inv;
    }
  }
}

/// The forward shared by attention() and attention_train(): lse (empty for inference) only adds
/// one store per row, so both produce bit-identical out.
inline void attention_forward(Arena& ws, const HostView<const float, 4>& q, const HostView<const float, 4>& k,
                              const HostView<const float, 4>& v, const HostView<float, 4>& out,
                              const HostView<float, 3>& lse, float scale, AttentionMask mask) {
  const std::int64_t batch = q.size(0), t = q.size(1), hq = q.size(2), dh = q.size(3);
  const std::int64_t s = k.size(1), group = hq / k.size(2);
  const auto plan = plan_attention(batch, t, s, hq, num_threads());
  if (plan.tasks == 0) return;  // out and lse have no elements
  if (dh == 0) {
    // No features: every logit is 0, so each row's lse is log(visible keys); out has no elements.
    for (std::int64_t b = 0; b < lse.size(0); ++b)
      for (std::int64_t h = 0; h < lse.size(1); ++h)
        for (std::int64_t i = 0; i < lse.size(2); ++i)
          lse(b, h, i) = std::log(static_cast<float>(mask == AttentionMask::causal ? i + s - t + 1 : s));
    return;
  }
  ArenaScope scope(ws);
  float* scratch = ws.allocate<float>(plan.threads * plan.scratch_floats);
  const bool unit_dh = q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1 && out.stride(3) == 1;

  // Causal blocks differ in cost (later blocks see more keys): hand tasks out dynamically.
#pragma omp parallel for num_threads(plan.threads) schedule(dynamic, 1)
  for (std::int64_t task = 0; task < plan.tasks; ++task) {
    const std::int64_t blk = task % plan.blocks_per_head;
    const std::int64_t h = (task / plan.blocks_per_head) % hq;
    const std::int64_t b = task / (plan.blocks_per_head * hq);
    const std::int64_t i0 = blk * plan.block_rows;
    const std::int64_t rows = std::min(plan.block_rows, t - i0);
    float* slot = scratch + static_cast<std::int64_t>(omp_get_thread_num()) * plan.scratch_floats;
    if (unit_dh) {
      attention_task_eigen(q, k, v, out, b, h, h / group, i0, rows, scale, mask, slot, lse);
    } else {
      attention_task_strided(q, k, v, out, b, h, h / group, i0, rows, scale, mask, slot, lse);
    }
  }
}

/// How attention_backward splits its work: one task per (batch, kv head), so the dk/dv rows of a
/// task belong to it alone (no atomics, no cross-thread sum: deterministic for any thread count).
/// Inside a task, each query head of the group is walked in query blocks as in the forward.
struct AttentionBackwardPlan {
  std::int64_t blocks_per_head = 0;  // query blocks per (batch, query head)
  std::int64_t block_rows = 0;       // rows in every block but possibly the last
  std::int64_t tasks = 0;            // batch · kv heads
  int threads = 0;                   // threads that get a scratch slot (≤ tasks)
  std::int64_t scratch_floats = 0;   // per thread: P and dP/dS [block_rows, S] + D [block_rows]
};

inline AttentionBackwardPlan plan_attention_backward(std::int64_t batch, std::int64_t t, std::int64_t s,
                                                     std::int64_t kv_heads, int threads) {
  AttentionBackwardPlan plan;
  if (batch <= 0 || kv_heads <= 0) return plan;
  plan.tasks = batch * kv_heads;
  plan.threads = static_cast<int>(std::clamp<std::int64_t>(plan.tasks, 1, std::max(threads, 1)));
  if (t <= 0) return plan;  // dk/dv are only zeroed: no scratch
  plan.blocks_per_head = (t + kAttentionMaxQueryBlock - 1) / kAttentionMaxQueryBlock;
  plan.block_rows = (t + plan.blocks_per_head - 1) / plan.blocks_per_head;
  const std::int64_t floats = 2 * plan.block_rows * s + plan.block_rows;
  plan.scratch_floats = (floats + 15) / 16 * 16;  // 64-byte multiples keep every slot aligned
  return plan;
}

/// The tensors of one backward call (views as the op received them; empty dq/dk/dv: not wanted).
struct AttentionBackwardArgs {
  HostView<const float, 4> q, k, v, out;
  HostView<const float, 3> lse;
  HostView<const float, 4> dout;
  HostView<float, 4> dq, dk, dv;
  float scale;
  AttentionMask mask;
};

/// One query block (b, h, rows [i0, i0 + rows)) of kv head g, every view with unit stride along Dh:
///   P  = exp(scale·Q·Kᵀ − lse) over visible keys, 0 beyond     [rows, keys]
///   dV += Pᵀ·dO;  dP = dO·Vᵀ;  dS = P ⊙ (dP − D);  dQ = scale·dS·K;  dK += scale·dSᵀ·Q
/// (docs: reference::attention_backward). dK/dV of the task were zeroed before its first block.
inline void attention_backward_block_eigen(const AttentionBackwardArgs& a, std::int64_t b, std::int64_t h,
                                           std::int64_t g, std::int64_t i0, std::int64_t rows, float* scratch) {
  const std::int64_t t = a.q.size(1), s = a.k.size(1), dh = a.q.size(3);
  const bool causal = a.mask == AttentionMask::causal;
  const std::int64_t keys = causal ? std::min(s, i0 + rows + s - t) : s;
  const bool want_dq = !a.dq.empty(), want_dk = !a.dk.empty(), want_dv = !a.dv.empty();
  const float scale = a.scale;

  ConstRowMap Q(a.q.base() + a.q.index_of(b, i0, h, 0), rows, dh, Eigen::OuterStride<>(a.q.stride(1)));
  ConstRowMap K(a.k.base() + a.k.index_of(b, 0, g, 0), keys, dh, Eigen::OuterStride<>(a.k.stride(1)));
  ConstRowMap V(a.v.base() + a.v.index_of(b, 0, g, 0), keys, dh, Eigen::OuterStride<>(a.v.stride(1)));
  ConstRowMap O(a.out.base() + a.out.index_of(b, i0, h, 0), rows, dh, Eigen::OuterStride<>(a.out.stride(1)));
  ConstRowMap dO(a.dout.base() + a.dout.index_of(b, i0, h, 0), rows, dh, Eigen::OuterStride<>(a.dout.stride(1)));
  RowMap P(scratch, rows, keys, Eigen::OuterStride<>(keys));
  RowMap dS(scratch + rows * keys, rows, keys, Eigen::OuterStride<>(keys));
  Eigen::Map<Eigen::VectorXf> D(scratch + 2 * rows * keys, rows);

  // Recompute the probabilities from the saved lse (never stored beyond this block).
  P.noalias() = (scale * Q) * K.transpose();
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t visible = causal ? i0 + r + s - t + 1 : keys;  // ≥ 1 since T ≤ S
    auto row = P.row(r);
    row.head(visible).array() = (row.head(visible).array() - a.lse(b, h, i0 + r)).exp();
    if (visible < keys) row.tail(keys - visible).setZero();
  }
  if (want_dv) {
    RowMap dV(a.dv.base() + a.dv.index_of(b, 0, g, 0), keys, dh, Eigen::OuterStride<>(a.dv.stride(1)));
    dV.noalias() += P.transpose() * dO;
  }
  if (!want_dq && !want_dk) return;
  D = (dO.array() * O.array()).rowwise().sum().matrix();  // D_i = Σ_d dout·out
  dS.noalias() = dO * V.transpose();                         // dP
  // Masked entries have P = 0, so dS = 0 there: the masked keys get no gradient.
  dS.array() = P.array() * (dS.array().colwise() - D.array());
  if (want_dq) {
    RowMap dQ(a.dq.base() + a.dq.index_of(b, i0, h, 0), rows, dh, Eigen::OuterStride<>(a.dq.stride(1)));
    dQ.noalias() = (scale * dS) * K;  // the scalar folds into the GEMM (no temporary)
  }
  if (want_dk) {
    RowMap dK(a.dk.base() + a.dk.index_of(b, 0, g, 0), keys, dh, Eigen::OuterStride<>(a.dk.stride(1)));
    dK.noalias() += (scale * dS.transpose()) * Q;
  }
}

/// The same block for views with any strides (plain loops, fp32 accumulation), one query row at a
/// time. No model layout takes this path; it keeps the op total over strided views.
inline void attention_backward_block_strided(const AttentionBackwardArgs& a, std::int64_t b, std::int64_t h,
                                             std::int64_t g, std::int64_t i0, std::int64_t rows, float* scratch) {
  const std::int64_t t = a.q.size(1), s = a.k.size(1), dh = a.q.size(3);
  const bool want_dq = !a.dq.empty(), want_dk = !a.dk.empty(), want_dv = !a.dv.empty();
  float* p = scratch;       // [visible]
  float* ds = scratch + s;  // [visible]
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t i = i0 + r;
    const std::int64_t visible = a.mask == AttentionMask::causal ? i + s - t + 1 : s;
    float d_i = 0.0f;
    for (std::int64_t d = 0; d < dh; ++d) d_i += a.dout(b, i, h, d) * a.out(b, i, h, d);
    const float lse_i = a.lse(b, h, i);
    for (std::int64_t j = 0; j < visible; ++j) {
      float qk = 0.0f, dp = 0.0f;
      for (std::int64_t d = 0; d < dh; ++d) {
        qk += a.q(b, i, h, d) * a.k(b, j, g, d);
        dp += a.dout(b, i, h, d) * a.v(b, j, g, d);
      }
      p[j] = std::exp(a.scale * qk - lse_i);
      ds[j] = p[j] * (dp - d_i);
    }
    if (want_dq) {
      for (std::int64_t d = 0; d < dh; ++d) {
        float acc = 0.0f;
        for (std::int64_t j = 0; j < visible; ++j) acc += ds[j] * a.k(b, j, g, d);
        a.dq(b, i, h, d) = a.scale * acc;
      }
    }
    for (std::int64_t j = 0; j < visible; ++j)
      for (std::int64_t d = 0; d < dh; ++d) {
        if (want_dv) a.dv(b, j, g, d) += p[j] * a.dout(b, i, h, d);
        if (want_dk) a.dk(b, j, g, d) += a.scale * ds[j] * a.q(b, i, h, d);
      }
  }
}

/// Zeroes dk/dv rows [0, S) of (b, g), any strides (the task's gradients are written, not added).
inline void zero_kv_rows(const HostView<float, 4>& x, std::int64_t b, std::int64_t g) {
  if (x.empty()) return;
  for (std::int64_t j = 0; j < x.size(1); ++j)
    for (std::int64_t d = 0; d < x.size(3); ++d) x(b, j, g, d) = 0.0f;
}

}  // namespace detail::cpu

namespace ops {

/// Bytes of Arena workspace attention() and attention_train() need for these sizes when run with
/// `threads` threads (pass qlip::num_threads()). Covers the per-thread scores; nothing else is
/// allocated.
/// @param heads query heads Hq
inline std::size_t attention_workspace_bytes(std::int64_t batch, std::int64_t t, std::int64_t s,
                                             std::int64_t heads, int threads) {
  const auto plan = detail::cpu::plan_attention(batch, t, s, heads, threads);
  return static_cast<std::size_t>(plan.threads) * static_cast<std::size_t>(plan.scratch_floats) * sizeof(float);
}

/// out = softmax(scale·q·kᵀ + mask)·v, softmax in fp32 with max subtraction.
/// GQA: query head h uses kv head h / (Hq/Hkv). Causal (needs T ≤ S): query i sees keys
/// j ≤ i + S − T (the KV-cache decode alignment). Parallel over (batch, head, query block).
/// @param ws  arena with at least attention_workspace_bytes(B, T, S, Hq, num_threads()) free;
///            rewound on return
/// @param q   [B, T, Hq, Dh]
/// @param k   [B, S, Hkv, Dh]
/// @param v   [B, S, Hkv, Dh]
/// @param out [B, T, Hq, Dh] output (never read); must not overlap q, k or v
/// @param scale multiplies q·k (usually Dh^-1/2; the model passes 1, its q being pre-scaled, MODEL.md §2.3)
/// @throws qlip::Error on bad shapes (naming the argument) or an arena too small
inline void attention(cpu_backend, Arena& ws, HostView<const float, 4> q, HostView<const float, 4> k,
                      HostView<const float, 4> v, HostView<float, 4> out, float scale, AttentionMask mask) {
  detail::check_attention_shapes(q, k, v, out, mask);
  detail::cpu::attention_forward(ws, q, k, v, out, HostView<float, 3>(), scale, mask);
}

/// The training forward: attention() (bit-identical out: the same code, one extra store per row)
/// that also saves lse[b, h, i] = rowmax + log Σ exp(logits − rowmax) of the scaled logits, in fp32,
/// for attention_backward. Same workspace as attention() (attention_workspace_bytes).
/// @param lse [B, Hq, T] output, any strides
inline void attention_train(cpu_backend, Arena& ws, HostView<const float, 4> q, HostView<const float, 4> k,
                            HostView<const float, 4> v, HostView<float, 4> out, HostView<float, 3> lse, float scale,
                            AttentionMask mask) {
  detail::check_attention_train_shapes(q, k, v, out, lse, mask);
  detail::cpu::attention_forward(ws, q, k, v, out, lse, scale, mask);
}

/// Bytes of Arena workspace attention_backward() needs when run with `threads` threads (pass
/// qlip::num_threads()): per thread, two [query block, S] score blocks and a row vector.
inline std::size_t attention_backward_workspace_bytes(std::int64_t batch, std::int64_t t, std::int64_t s,
                                                      std::int64_t q_heads, std::int64_t kv_heads, int threads) {
  (void)q_heads;  // the block size depends on T only; kept so the signature names every extent
  const auto plan = detail::cpu::plan_attention_backward(batch, t, s, kv_heads, threads);
  return static_cast<std::size_t>(plan.threads) * static_cast<std::size_t>(plan.scratch_floats) * sizeof(float);
}

/// Backward of attention from the training forward's out and lse (formulas: see
/// reference::attention_backward). FlashAttention-style: the probabilities of one (batch, head,
/// query block) are recomputed from lse into the thread's scratch, used by five Eigen GEMMs
/// (scores, dV += Pᵀ·dO, dP = dO·Vᵀ, dQ = scale·dS·K, dK += scale·dSᵀ·Q) and dropped.
/// Parallel over (batch, kv head): each task owns its dk/dv rows (summed over the group's query
/// heads in a fixed order) and its heads' dq rows, so the result is deterministic and independent
/// of the thread count. Views with unit stride along Dh go to Eigen; others take a plain-loop path.
/// Contract: dq, dk, dv are written (=); an empty view skips that gradient.
/// @param ws   arena with attention_backward_workspace_bytes(B, T, S, Hq, Hkv, num_threads()) free;
///             rewound on return
/// @param q, k, v, out, lse  as in attention_train
/// @param dout [B, T, Hq, Dh]
/// @param dq   [B, T, Hq, Dh] or empty; dk, dv [B, S, Hkv, Dh] or empty; none may overlap an input
/// @throws qlip::Error on bad shapes (naming the argument) or an arena too small
inline void attention_backward(cpu_backend, Arena& ws, HostView<const float, 4> q, HostView<const float, 4> k,
                               HostView<const float, 4> v, HostView<const float, 4> out,
                               HostView<const float, 3> lse, HostView<const float, 4> dout, HostView<float, 4> dq,
                               HostView<float, 4> dk, HostView<float, 4> dv, float scale, AttentionMask mask) {
  detail::check_attention_backward_shapes(q, k, v, out, lse, dout, dq, dk, dv, mask);
  const std::int64_t batch = q.size(0), t = q.size(1), hq = q.size(2), dh = q.size(3);
  const std::int64_t s = k.size(1), hkv = k.size(2), group = hq / hkv;
  const auto plan = detail::cpu::plan_attention_backward(batch, t, s, hkv, num_threads());
  if (plan.tasks == 0 || dh == 0) return;  // no gradient has elements
  ArenaScope scope(ws);
  float* scratch = plan.scratch_floats > 0 ? ws.allocate<float>(plan.threads * plan.scratch_floats) : nullptr;
  const detail::cpu::AttentionBackwardArgs args{q, k, v, out, lse, dout, dq, dk, dv, scale, mask};
  auto unit = [](const auto& x) { return x.empty() || x.stride(3) == 1; };
  const bool unit_dh = unit(q) && unit(k) && unit(v) && unit(out) && unit(dout) && unit(dq) && unit(dk) && unit(dv);

  // Tasks of a causal mask cost the same (each walks every query block of its heads): static is
  // enough, but dynamic keeps a descheduled thread from holding back the rest.
#pragma omp parallel for num_threads(plan.threads) schedule(dynamic, 1)
  for (std::int64_t task = 0; task < plan.tasks; ++task) {
    const std::int64_t b = task / hkv, g = task % hkv;
    float* slot = scratch + static_cast<std::int64_t>(omp_get_thread_num()) * plan.scratch_floats;
    detail::cpu::zero_kv_rows(dk, b, g);
    detail::cpu::zero_kv_rows(dv, b, g);
    for (std::int64_t h = g * group; h < (g + 1) * group; ++h)
      for (std::int64_t blk = 0; blk < plan.blocks_per_head; ++blk) {
        const std::int64_t i0 = blk * plan.block_rows;
        const std::int64_t rows = std::min(plan.block_rows, t - i0);
        if (unit_dh) {
          detail::cpu::attention_backward_block_eigen(args, b, h, g, i0, rows, slot);
        } else {
          detail::cpu::attention_backward_block_strided(args, b, h, g, i0, rows, slot);
        }
      }
  }
}

}  // namespace ops
}  // namespace qlip
