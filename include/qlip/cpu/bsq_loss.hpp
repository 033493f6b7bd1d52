/// @file bsq_loss.hpp
/// @brief CPU BSQ training pieces (formulas, sign convention, contract and checks as
///        reference/bsq_loss.hpp; MODEL.md §3.1–§3.2): the straight-through quantiser and the
///        quantiser's loss (entropy penalty + commitment), forward and backward.
///
/// Tokens are split into a fixed number of chunks (kBsqLossChunks, fewer when N is smaller), one
/// OpenMP iteration each; every chunk sums its entropies, commitment and its part of the batch mean
/// p̄ in double into its own slot, and the slots are added in chunk order. The result therefore does
/// not depend on the thread count. Per-token math is in double too (the loss is tiny next to the
/// GEMMs around it). A group's 2^g logits are formed incrementally over the codes (each code's
/// subset sum extends that of the code with its lowest set bit cleared: 2^g additions instead of
/// g·2^g multiply-adds). Scratch comes from the arena (bsq_loss_workspace_bytes); nothing is
/// allocated.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/bsq_loss.hpp"

namespace qlip {

/// Token chunks of the CPU BSQ loss (fixed, so the order of every double sum is too).
inline constexpr std::int64_t kBsqLossChunks = 16;

/// Arena bytes ops::bsq_loss / ops::bsq_loss_backward need for codes of L bits: per chunk one
/// [G, 2^g] double block for p̄ and two [2^g] double scratch lines (g = 1 in "analytical" mode).
/// Validates nothing; the ops check L and cfg first.
inline std::size_t bsq_loss_workspace_bytes(std::int64_t bits_per_code, const BsqLossConfig& cfg) {
  const int g = detail::bsq_loss_entropy_group(cfg);
  const std::int64_t k_n = std::int64_t{1} << std::clamp(g, 1, kBsqLossMaxGroupSize);
  const std::int64_t g_n = bits_per_code / std::max(g, 1);
  return detail::round_up(static_cast<std::size_t>(kBsqLossChunks * (g_n * k_n + 2 * k_n)) * sizeof(double),
                          kHostAlignment);
}

namespace detail::cpu {

/// p[m] = softmax_m(two_tc·Σ_k z_k·C[m, k]) for the g values z of one group (C as the reference:
/// MSB first). Σ_k z_k·C[m, k] = 2·Σ_{k set in m} z_k − Σ_k z_k, and the subset sums are built code
/// by code from m & (m − 1).
inline void bsq_group_probabilities(const float* z, std::int64_t stride, int g, double two_tc, double* p) {
  const std::int64_t k_n = std::int64_t{1} << g;
  double total = 0.0;
  for (int k = 0; k < g; ++k) total += static_cast<double>(z[k * stride]);
  p[0] = 0.0;
  for (std::int64_t m = 1; m < k_n; ++m) {
    const int b = std::countr_zero(static_cast<std::uint64_t>(m));  // bit value 2^b is column g−1−b
    p[m] = p[m & (m - 1)] + static_cast<double>(z[(g - 1 - b) * stride]);
  }
  double mx = -1e300;
  for (std::int64_t m = 0; m < k_n; ++m) mx = std::fmax(mx, p[m] = two_tc * (2.0 * p[m] - total));
  double sum = 0.0;
  for (std::int64_t m = 0; m < k_n; ++m) sum += (p[m] = std::exp(p[m] - mx));
  const double inv = 1.0 / sum;
  for (std::int64_t m = 0; m < k_n; ++m) p[m] *= inv;
}

/// The chunk layout of the workspace and the token range of each chunk.
struct BsqLossChunks {
  std::int64_t chunks, tokens, g_n, k_n;
  double* avg;      // [chunks][G·2^g]; after reduce_avg, chunk 0 holds the batch mean p̄
  double* scratch;  // [chunks][2·2^g]
  std::int64_t begin(std::int64_t c) const { return tokens * c / chunks; }
  std::int64_t end(std::int64_t c) const { return tokens * (c + 1) / chunks; }
  double* avg_of(std::int64_t c) const { return avg + c * g_n * k_n; }
  double* scratch_of(std::int64_t c) const { return scratch + c * 2 * k_n; }
};

inline BsqLossChunks bsq_loss_chunks(Arena& ws, std::int64_t tokens, std::int64_t g_n, int g) {
  BsqLossChunks ch{std::min(kBsqLossChunks, tokens), tokens, g_n, std::int64_t{1} << g, nullptr, nullptr};
  ch.avg = ws.allocate<double>(ch.chunks * g_n * ch.k_n + ch.chunks * 2 * ch.k_n);
  ch.scratch = ch.avg + ch.chunks * g_n * ch.k_n;
  return ch;
}

/// Per chunk: Σ_n p_j(· | z_n) into its p̄ slot and Σ entr(p + ε) into ps[c]; then p̄ = (1/N)·Σ_c slot
/// (in chunk order) into chunk 0's slot.
inline void bsq_average_probabilities(HostView<const float, 2> z, int g, double two_tc, const BsqLossChunks& ch,
                                      double* ps) {
  const std::int64_t gk = ch.g_n * ch.k_n;
#pragma omp parallel for schedule(static) if (ch.tokens * gk >= 8192)
  for (std::int64_t c = 0; c < ch.chunks; ++c) {
    double* avg = ch.avg_of(c);
    double* p = ch.scratch_of(c);
    std::fill(avg, avg + gk, 0.0);
    double acc = 0.0;
    for (std::int64_t n = ch.begin(c); n < ch.end(c); ++n) {
      const float* zr = z.data() + n * z.stride(0);
      for (std::int64_t j = 0; j < ch.g_n; ++j) {
        bsq_group_probabilities(zr + j * g * z.stride(1), z.stride(1), g, two_tc, p);
        double* a = avg + j * ch.k_n;
        for (std::int64_t m = 0; m < ch.k_n; ++m) {
          const double x = p[m] + kBsqEntropyEps;
          acc -= x * std::log(x);
          a[m] += p[m];
        }
      }
    }
    if (ps != nullptr) ps[c] = acc;
  }
  double* avg = ch.avg_of(0);
  for (std::int64_t c = 1; c < ch.chunks; ++c) {
    const double* other = ch.avg_of(c);
    for (std::int64_t x = 0; x < gk; ++x) avg[x] += other[x];
  }
  for (std::int64_t x = 0; x < gk; ++x) avg[x] /= static_cast<double>(ch.tokens);
}

}  // namespace detail::cpu

namespace ops {

/// Straight-through forward: z_q = where(z > 0, +1, −1)·q_scale (z == 0 gives −q_scale).
/// @param z  [M, L]
/// @param zq [M, L] written
inline void bsq_straight_through(cpu_backend, HostView<const float, 2> z, float q_scale, HostView<float, 2> zq) {
  detail::check_bsq_straight_through_args(z, zq, "bsq_straight_through: zq");
  const std::int64_t m = z.size(0), l = z.size(1);
#pragma omp parallel for schedule(static) if (m * l >= 65536)
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < l; ++j) zq(i, j) = z(i, j) > 0.0f ? q_scale : -q_scale;
}

/// Straight-through backward: dz = q_scale·dz_q (=).
/// @param dzq [M, L] upstream gradient of the quantiser output
/// @param dz  [M, L] written
inline void bsq_straight_through_backward(cpu_backend, HostView<const float, 2> dzq, float q_scale,
                                          HostView<float, 2> dz) {
  detail::check_bsq_straight_through_args(dzq, dz, "bsq_straight_through_backward: dz");
  const std::int64_t m = dzq.size(0), l = dzq.size(1);
#pragma omp parallel for schedule(static) if (m * l >= 65536)
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < l; ++j)
      dz(i, j) = static_cast<float>(static_cast<double>(q_scale) * static_cast<double>(dzq(i, j)));
}

/// loss_q and its components (reference::bsq_loss's formulas), in double.
/// @param ws  arena with bsq_loss_workspace_bytes(L, cfg) free; rewound on return
/// @param z   [N, L] quantiser input, any strides
/// @param cfg T, g, γ0, γ1, β, mode, l2_norm
inline BsqLossResult bsq_loss(cpu_backend, Arena& ws, HostView<const float, 2> z, const BsqLossConfig& cfg) {
  detail::check_bsq_loss_args(z, cfg, "bsq_loss");
  const std::int64_t n_tok = z.size(0), l = z.size(1);
  const double c = detail::bsq_loss_code_scale(l, cfg.l2_norm);
  const int g = detail::bsq_loss_entropy_group(cfg);
  ArenaScope scope(ws);
  const detail::cpu::BsqLossChunks ch = detail::cpu::bsq_loss_chunks(ws, n_tok, l / g, g);
  double ps[kBsqLossChunks], commit[kBsqLossChunks];
  detail::cpu::bsq_average_probabilities(z, g, 2.0 * cfg.inv_temperature * c, ch, ps);
#pragma omp parallel for schedule(static) if (n_tok * l >= 65536)
  for (std::int64_t k = 0; k < ch.chunks; ++k) {
    double acc = 0.0;
    for (std::int64_t n = ch.begin(k); n < ch.end(k); ++n)
      for (std::int64_t i = 0; i < l; ++i) {
        const double zi = static_cast<double>(z(n, i)), d = (zi > 0.0 ? c : -c) - zi;
        acc += d * d;
      }
    commit[k] = acc;
  }
  BsqLossResult r;
  double ps_sum = 0.0, commit_sum = 0.0;
  for (std::int64_t k = 0; k < ch.chunks; ++k) {
    ps_sum += ps[k];
    commit_sum += commit[k];
  }
  const double* avg = ch.avg_of(0);
  for (std::int64_t x = 0; x < ch.g_n * ch.k_n; ++x) {
    const double a = avg[x] + kBsqEntropyEps;
    r.codebook_entropy -= a * std::log(a);
  }
  r.per_sample_entropy = ps_sum / static_cast<double>(n_tok);
  r.commitment = cfg.beta * commit_sum / static_cast<double>(n_tok);
  r.entropy_penalty = cfg.gamma0 * r.per_sample_entropy - cfg.gamma1 * r.codebook_entropy;
  r.loss = r.commitment + r.entropy_penalty / cfg.inv_temperature;
  return r;
}

/// dz = dloss·∂loss_q/∂z + c·dz_q (=), formulas as reference::bsq_loss_backward. The batch mean p̄
/// is recomputed first (the forward saves nothing), then each token's gradient is independent.
/// @param ws    arena with bsq_loss_workspace_bytes(L, cfg) free; rewound on return
/// @param z     [N, L] the forward input
/// @param dloss upstream gradient of loss_q
/// @param dz_q  [N, L] upstream gradient of the quantiser output z_q·c, or empty (none)
/// @param dz    [N, L] written, or empty (skipped); must not overlap z or dz_q
inline void bsq_loss_backward(cpu_backend, Arena& ws, HostView<const float, 2> z, const BsqLossConfig& cfg,
                              double dloss, HostView<const float, 2> dz_q, HostView<float, 2> dz) {
  detail::check_bsq_loss_backward_args(z, cfg, dz_q, dz);
  if (dz.empty()) return;
  const std::int64_t n_tok = z.size(0), l = z.size(1);
  const double c = detail::bsq_loss_code_scale(l, cfg.l2_norm), two_tc = 2.0 * cfg.inv_temperature * c;
  const int g = detail::bsq_loss_entropy_group(cfg);
  ArenaScope scope(ws);
  const detail::cpu::BsqLossChunks ch = detail::cpu::bsq_loss_chunks(ws, n_tok, l / g, g);
  detail::cpu::bsq_average_probabilities(z, g, two_tc, ch, nullptr);
  // λ_jm = γ1·(ln(p̄_j(m) + ε) + 1), in place of p̄.
  double* lambda = ch.avg_of(0);
  for (std::int64_t x = 0; x < ch.g_n * ch.k_n; ++x)
    lambda[x] = cfg.gamma1 * (std::log(lambda[x] + kBsqEntropyEps) + 1.0);
  const double scale = dloss / (cfg.inv_temperature * static_cast<double>(n_tok));
  const double commit_k = -2.0 * dloss * cfg.beta / static_cast<double>(n_tok);
  const bool has_dzq = !dz_q.empty();
  const std::int64_t k_n = ch.k_n;
#pragma omp parallel for schedule(static) if (n_tok * ch.g_n * k_n >= 8192)
  for (std::int64_t k = 0; k < ch.chunks; ++k) {
    double* p = ch.scratch_of(k);
    double* a = p + k_n;
    for (std::int64_t n = ch.begin(k); n < ch.end(k); ++n) {
      const float* zr = z.data() + n * z.stride(0);
      for (std::int64_t j = 0; j < ch.g_n; ++j) {
        detail::cpu::bsq_group_probabilities(zr + j * g * z.stride(1), z.stride(1), g, two_tc, p);
        const double* lam = lambda + j * k_n;
        double pw = 0.0;
        for (std::int64_t m = 0; m < k_n; ++m) {
          a[m] = scale * (lam[m] - cfg.gamma0 * (std::log(p[m] + kBsqEntropyEps) + 1.0));
          pw += p[m] * a[m];
        }
        // Σ_m a_m·C[m, col] = 2·Σ_{m with the column's bit set} a_m − Σ_m a_m.
        double bit_sum[kBsqLossMaxGroupSize] = {};
        double total = 0.0;
        for (std::int64_t m = 0; m < k_n; ++m) {
          const double am = p[m] * (a[m] - pw);
          total += am;
          for (int b = 0; b < g; ++b)
            if ((m >> b) & 1) bit_sum[b] += am;
        }
        for (int col = 0; col < g; ++col) {
          const std::int64_t i = j * g + col;
          const double zi = static_cast<double>(zr[i * z.stride(1)]);
          double d = two_tc * (2.0 * bit_sum[g - 1 - col] - total) + commit_k * ((zi > 0.0 ? c : -c) - zi);
          if (has_dzq) d += c * static_cast<double>(dz_q(n, i));
          dz(n, i) = static_cast<float>(d);
        }
      }
    }
  }
}

}  // namespace ops
}  // namespace qlip
