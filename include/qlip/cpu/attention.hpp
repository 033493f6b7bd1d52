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
                                 std::int64_t rows, float scale, AttentionMask mask, float* scratch) {
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
                                   std::int64_t rows, float scale, AttentionMask mask, float* scratch) {
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
    const float inv = 1.0f / sum;
    for (std::int64_t d = 0; d < dh; ++d) {
      float acc = 0.0f;
      for (std::int64_t j = 0; j < visible; ++j) acc += p[j] * v(b, j, g, d);
      out(b, i, h, d) = acc * inv;
    }
  }
}

}  // namespace detail::cpu

namespace ops {

/// Bytes of Arena workspace attention() needs for these sizes when run with `threads` threads
/// (pass qlip::num_threads()). Covers the per-thread scores; nothing else is allocated.
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
/// @param scale multiplies q·k (usually Dh^-1/2)
/// @throws qlip::Error on bad shapes (naming the argument) or an arena too small
inline void attention(cpu_backend, Arena& ws, HostView<const float, 4> q, HostView<const float, 4> k,
                      HostView<const float, 4> v, HostView<float, 4> out, float scale, AttentionMask mask) {
  detail::check_attention_shapes(q, k, v, out, mask);
  const std::int64_t batch = q.size(0), t = q.size(1), hq = q.size(2), dh = q.size(3);
  const std::int64_t s = k.size(1), group = hq / k.size(2);
  const auto plan = detail::cpu::plan_attention(batch, t, s, hq, num_threads());
  if (plan.tasks == 0 || dh == 0) return;  // out has no elements
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
      detail::cpu::attention_task_eigen(q, k, v, out, b, h, h / group, i0, rows, scale, mask, slot);
    } else {
      detail::cpu::attention_task_strided(q, k, v, out, b, h, h / group, i0, rows, scale, mask, slot);
    }
  }
}

}  // namespace ops
}  // namespace qlip
