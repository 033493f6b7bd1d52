/// @file encoder_layer.hpp
/// @brief The CPU fused encoder layer (inference): one QLIPEncoderLayer forward in three OpenMP
///        regions, the residual adds fused into the GEMMs. Weights, arguments and the formula are
///        those of reference/encoder_layer.hpp; the reference overload composes the same layer
///        from separate ops, and tests/cpu/test_encoder_layer_op.cpp compares the two.
///
/// (1) Row chunks of x, taken by the threads dynamically (RowChunks): LN1 → q|k|v GEMM →
/// q ·= q_scale → RoPE. (2) attention, parallel over (batch, head, query block). (3) Row chunks again: inner_attn_ln → out_proj GEMM
/// accumulated into x (residual) → LN2 → up GEMM → activation (SwiGLU: silu·mul and ffn_ln fused,
/// one pass per row) → down GEMM accumulated into x. Each region starts with its threads packing
/// the region's weights together (each a share of the panels, sgemm.hpp) and one barrier; after it
/// every op is row-local, so a thread never waits for another again. Each GEMM is a serial packed
/// GEMM on the chunk's rows (linear_rows_packed), which sums every element in the same order
/// whatever the chunk: the layer gives the same bits for any thread count and any schedule.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/math.hpp"
#include "qlip/core/profile.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/cpu/activation.hpp"
#include "qlip/cpu/attention.hpp"
#include "qlip/cpu/gemm.hpp"
#include "qlip/cpu/layer_norm.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/reference/encoder_layer.hpp"

namespace qlip {
namespace detail::cpu {

/// Threads the attention scratch is sized for: never fewer than qlip::num_threads(), so an arena
/// sized once still fits when the thread count is raised up to the core count later.
inline int encoder_layer_workspace_threads() { return std::max(num_threads(), omp_get_num_procs()); }

/// Threads for the row regions: none beyond one per 32 rows, one when already in a region.
inline int encoder_layer_region_threads(std::int64_t m) {
  if (omp_in_parallel()) return 1;
  return static_cast<int>(std::clamp<std::int64_t>(m / 32, 1, std::max(num_threads(), 1)));
}

/// Row chunks of a region, taken by the threads dynamically: 4 per thread when each still has
/// ≥ 128 rows (the packed weights are re-read from L2/L3 once per chunk), else one per thread. A
/// thread that runs slower (a busier or down-clocked core) then takes fewer chunks instead of
/// holding the others at the region's end. Boundaries fall on register tiles (kMR rows).
struct RowChunks {
  std::int64_t rows = 0, size = 0, count = 0;
  RowChunks(std::int64_t m, int threads) : rows(m) {
    const std::int64_t per_thread = m >= 4 * 128 * threads ? 4 : 1;
    const std::int64_t want = (m + per_thread * threads - 1) / (per_thread * threads);
    size = std::max<std::int64_t>(sgemm::kMR, (want + sgemm::kMR - 1) / sgemm::kMR * sgemm::kMR);
    count = (m + size - 1) / size;
  }
  std::pair<std::int64_t, std::int64_t> operator[](std::int64_t c) const {
    return {c * size, std::min(rows, (c + 1) * size)};
  }
};

/// The weights of one region packed as the panels of wᵀ, in one scratch buffer of the calling thread.
/// Valid until that thread's next sgemm call that packs (none inside the region).
template <std::size_t N>
struct RegionWeights {
  std::array<HostView<const float, 2>, N> w;  // [N_i, K_i] PyTorch layout
  std::array<sgemm::PackedPanels, N> packed;

  explicit RegionWeights(const std::array<HostView<const float, 2>, N>& weights) : w(weights) {
    std::int64_t total = 0;
    for (const auto& wi : w) total += sgemm::packed_size(wi.size(1), wi.size(0));
    float* at = sgemm::b_scratch(total);
    for (std::size_t i = 0; i < N; ++i) {
      packed[i] = {at, w[i].size(1), w[i].size(0)};
      at += sgemm::packed_size(w[i].size(1), w[i].size(0));
    }
  }
  /// Called by every thread of the region: packs this thread's share of every weight, then waits
  /// for the others (the region's one barrier).
  void pack_together() const {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    {
      QLIP_PROFILE_SCOPE("  t0: pack weights");
      for (std::size_t i = 0; i < N; ++i)
        sgemm::pack_b_share(w[i].transpose(0, 1), const_cast<float*>(packed[i].data), t, nt);
    }
#pragma omp barrier
  }
};

/// y[r] = LN(x[r]) for rows [r0, r1) of [M, width] row-major views (y may be x).
inline void layer_norm_rows(HostView<const float, 1> gamma, HostView<const float, 1> beta, float eps,
                            HostView<const float, 2> x, HostView<float, 2> y, std::int64_t r0, std::int64_t r1) {
  const std::int64_t d = x.size(1);
  for (std::int64_t r = r0; r < r1; ++r) {
    if (gamma.stride(0) == 1 && beta.stride(0) == 1) {
      layer_norm_row<true>(x.data() + r * x.stride(0), 1, gamma.data(), 1, beta.data(), 1, eps,
                           y.data() + r * y.stride(0), 1, d);
    } else {
      layer_norm_row<false>(x.data() + r * x.stride(0), 1, gamma.data(), gamma.stride(0), beta.data(),
                            beta.stride(0), eps, y.data() + r * y.stride(0), 1, d);
    }
  }
}

/// The first `width` columns (the q part of q|k|v) ·= scale, after the bias, as
/// `q_proj(x) * scale` (MODEL.md §2.3), rows [r0, r1).
inline void scale_leading_columns(HostView<float, 2> qkv, std::int64_t width, float scale, std::int64_t r0,
                                  std::int64_t r1) {
  for (std::int64_t r = r0; r < r1; ++r) {
    float* row = qkv.data() + r * qkv.stride(0);
    for (std::int64_t j = 0; j < width; ++j) row[j] *= scale;
  }
}

/// Interleaved 2-D RoPE on the q and k heads of q|k|v rows [r0, r1) (row r is token r % T), the
/// formula of ops::apply_rope_interleaved (reference/rope.hpp).
inline void rope_rows(HostView<float, 2> qkv, const RopeTableView<host_memory>& rope, const EncoderLayerDims& d,
                      std::int64_t tokens, std::int64_t r0, std::int64_t r1) {
  const std::int64_t p_n = rope.cos.size(0), cs = rope.cos.stride(1), ss = rope.sin.stride(1);
  const std::int64_t dh = d.head_dim();
  for (std::int64_t r = r0; r < r1; ++r) {
    const std::int64_t p = r % tokens - rope.first_token;
    if (p < 0 || p >= p_n) continue;
    const float* cr = rope.cos.data() + p * rope.cos.stride(0);
    const float* sr = rope.sin.data() + p * rope.sin.stride(0);
    float* row = qkv.data() + r * qkv.stride(0);
    for (std::int64_t hd = 0; hd < 2 * d.heads; ++hd) {  // q heads, then k heads
      float* xr = row + hd * dh;
      for (std::int64_t j = 0; j < dh; j += 2) {
        const float x0 = xr[j], x1 = xr[j + 1];
        xr[j] = x0 * cr[j * cs] - x1 * sr[j * ss];
        xr[j + 1] = x1 * cr[(j + 1) * cs] + x0 * sr[(j + 1) * ss];
      }
    }
  }
}

/// The MLP activation on rows [r0, r1) of the up projection f [M, up_width], in place; the result
/// is the first I values of each row. SwiGLU: f[r, j] ← silu(f[r, j])·f[r, I + j] for j < I
/// (vectorised silu_fast, a few ulp from math::silu). Plain: act(f). Then ffn_ln over those I
/// values when the layer has it (sub-LN), on the same row while it is still in L1.
inline void mlp_activation_rows(HostView<float, 2> f, const EncoderLayerDims& d, Activation act,
                                HostView<const float, 1> ffn_g, HostView<const float, 1> ffn_b, float eps,
                                std::int64_t r0, std::int64_t r1) {
  const std::int64_t i_n = d.intermediate;
  const HostView<float, 2> result(f.data(), {f.size(0), i_n}, {f.stride(0), 1}, 0);  // [M, I] of [M, up_width]
  for (std::int64_t r = r0; r < r1; ++r) {
    float* row = f.data() + r * f.stride(0);
    if (d.mlp == MlpKind::swiglu) {
      const float* lin = row + i_n;
      for (std::int64_t j = 0; j < i_n; ++j) row[j] = silu_fast(row[j]) * lin[j];
    } else if (act == Activation::quick_gelu) {
      for (std::int64_t j = 0; j < i_n; ++j) row[j] = math::quick_gelu(row[j]);
    } else {
      for (std::int64_t j = 0; j < i_n; ++j) row[j] = math::gelu(row[j]);
    }
    if (!ffn_g.empty()) layer_norm_rows(ffn_g, ffn_b, eps, result, result, r, r + 1);
  }
}

}  // namespace detail::cpu

namespace ops {

/// Arena bytes encoder_layer_forward needs for `batch` sequences of `tokens` tokens.
inline std::size_t encoder_layer_workspace_bytes(cpu_backend, std::int64_t batch, std::int64_t tokens,
                                                 const EncoderLayerDims& d) {
  const std::int64_t m = batch * tokens, big = std::max<std::int64_t>(3 * d.hidden, d.up_width());
  return arena_bytes<float>(m * d.hidden)    // h: LN outputs
         + arena_bytes<float>(m * d.hidden)  // attention output
         + arena_bytes<float>(m * big)       // fused q|k|v, then the MLP's hidden layer
         + attention_workspace_bytes(batch, tokens, tokens, d.heads,
                                     detail::cpu::encoder_layer_workspace_threads()) +
         kHostAlignment;
}

/// x[B, T, D] ← layer(x), in place (see the file comment for the three regions).
/// @param ws arena with encoder_layer_workspace_bytes(cpu, B, T, args.dims) free; rewound on return
/// @throws qlip::Error naming the weight or argument whose shape does not fit
inline void encoder_layer_forward(cpu_backend, Arena& ws, const EncoderLayerWeights<float>& w, HostView<float, 3> x,
                                  const EncoderLayerArgs<host_memory>& args) {
  detail::check_encoder_layer_args(w, x, args);
  const EncoderLayerDims& d = args.dims;
  const std::int64_t batch = x.size(0), tokens = x.size(1), m = batch * tokens;
  if (m == 0) return;
  const std::int64_t dm = d.hidden, up = d.up_width();
  HostView<float, 2> x2 = x.template reshape<2>({m, dm});
  ArenaScope scope(ws);
  HostView<float, 2> h = ws.tensor<float, 2>({m, dm});     // [M, D] LN outputs
  HostView<float, 2> attn = ws.tensor<float, 2>({m, dm});  // [M, D] attention output
  float* big = ws.allocate<float>(m * std::max<std::int64_t>(3 * dm, up));
  HostView<float, 2> qkv(big, {m, 3 * dm});                 // [M, 3D] (regions 1, 2)
  HostView<float, 2> f(big, {m, up});                       // [M, I or 2I] (region 3)
  const int threads = detail::cpu::encoder_layer_region_threads(m);
  const detail::cpu::RowChunks chunks(m, threads);

  {
    QLIP_PROFILE_SCOPE("layer: ln1+qkv+rope");
    const detail::cpu::RegionWeights<1> pw({w.qkv_w});
#pragma omp parallel num_threads(threads)
    {
      pw.pack_together();
#pragma omp for schedule(dynamic, 1) nowait
      for (std::int64_t c = 0; c < chunks.count; ++c) {
        const auto [r0, r1] = chunks[c];
        {
          QLIP_PROFILE_SCOPE("  t0: layer_norm");
          detail::cpu::layer_norm_rows(w.ln1_g, w.ln1_b, args.eps, x2, h, r0, r1);
        }
        {
          QLIP_PROFILE_SCOPE("  t0: gemm qkv");
          detail::cpu::linear_rows_packed(h.slice(0, r0, r1), pw.packed[0], w.qkv_b, qkv.slice(0, r0, r1), false);
        }
        QLIP_PROFILE_SCOPE("  t0: rope (+scale q)");
        if (args.q_scale != 1.0f) detail::cpu::scale_leading_columns(qkv, dm, args.q_scale, r0, r1);
        if (args.rope != nullptr) detail::cpu::rope_rows(qkv, *args.rope, d, tokens, r0, r1);
      }
    }
  }
  {
    QLIP_PROFILE_SCOPE("attention");
    const Extents<4> heads{batch, tokens, d.heads, d.head_dim()};
    HostView<const float, 4> q = detail::qkv_heads(qkv, 0, batch, tokens, d);  // [B, T, H, Dh] in qkv
    HostView<const float, 4> k = detail::qkv_heads(qkv, 1, batch, tokens, d);
    HostView<const float, 4> v = detail::qkv_heads(qkv, 2, batch, tokens, d);
    // q already carries q_scale: the logits take no further scale (MODEL.md §2.3).
    attention(cpu_backend{}, ws, q, k, v, attn.template reshape<4>(heads), 1.0f, args.mask);
  }
  {
    QLIP_PROFILE_SCOPE("layer: out_proj+mlp");
    const detail::cpu::RegionWeights<3> pw({w.out_w, w.up_w, w.down_w});
#pragma omp parallel num_threads(threads)
    {
      pw.pack_together();
#pragma omp for schedule(dynamic, 1) nowait
      for (std::int64_t c = 0; c < chunks.count; ++c) {
        const auto [r0, r1] = chunks[c];
        if (!w.attn_ln_g.empty()) {
          QLIP_PROFILE_SCOPE("  t0: layer_norm");
          detail::cpu::layer_norm_rows(w.attn_ln_g, w.attn_ln_b, args.eps, attn, attn, r0, r1);
        }
        {
          QLIP_PROFILE_SCOPE("  t0: gemm out_proj+res");
          detail::cpu::linear_rows_packed(attn.slice(0, r0, r1), pw.packed[0], w.out_b, x2.slice(0, r0, r1), true);
        }
        {
          QLIP_PROFILE_SCOPE("  t0: layer_norm");
          detail::cpu::layer_norm_rows(w.ln2_g, w.ln2_b, args.eps, x2, h, r0, r1);
        }
        {
          QLIP_PROFILE_SCOPE("  t0: gemm mlp up");
          detail::cpu::linear_rows_packed(h.slice(0, r0, r1), pw.packed[1], w.up_b, f.slice(0, r0, r1), false);
        }
        {
          QLIP_PROFILE_SCOPE("  t0: activation(+ffn_ln)");
          detail::cpu::mlp_activation_rows(f, d, args.act, w.ffn_ln_g, w.ffn_ln_b, args.eps, r0, r1);
        }
        // SwiGLU leaves its [I] result in the first half of each [2I] row: a strided view.
        HostView<const float, 2> act(f.data(), {m, d.intermediate}, {up, 1}, 0);
        QLIP_PROFILE_SCOPE("  t0: gemm mlp down+res");
        detail::cpu::linear_rows_packed(act.slice(0, r0, r1), pw.packed[2], w.down_b, x2.slice(0, r0, r1), true);
      }
    }
  }
}

}  // namespace ops
}  // namespace qlip
