/// @file bsq_loss.hpp
/// @brief Reference BSQ training pieces (MODEL.md §3.1–§3.2): the straight-through sign quantiser and
///        the quantiser's loss (soft entropy penalty + commitment), forward and backward.
///
/// Symbols (MODEL.md §3.2): z [N, L] the quantiser input (in QLIP the L2-normalised u, one row per
/// token); T = inv_temperature; g = group_size; G = L/g; c = 1/√L if l2_norm else 1; ε = 1e−8;
/// entr(x) = −x·ln x.
///
/// - Straight-through quantiser: z_q = z + stopgrad(ẑ − z) with ẑ = where(z > 0, +1, −1), output
///   z_q·q_scale; forward value ±q_scale (z == 0 gives −q_scale), backward dz = q_scale·dz_q.
/// - Group codebook: C ∈ {−1, +1}^(2^g × g), row m the g-bit expansion of m, MSB first (bit value
///   2^(g−1−k) of m gives column k), 0 → −1, 1 → +1; scaled by c.
/// - "group" mode: p_j(m | z) = softmax_m(2T·⟨z^(j), c·C_m⟩) over the 2^g codes of group j
///   (z^(j) = dims [j·g, (j+1)·g)).
/// - "analytical" mode: factorised per bit, P(bit i = −1) = σ(−4T·c·z_i) and P(bit i = +1) =
///   1 − σ(−4T·c·z_i) = σ(4T·c·z_i). Sign convention checked against the spec: this is the group
///   softmax with g = 1, where m = 0 is code −1 with logit −2Tcz_i and m = 1 is code +1 with logit
///   +2Tcz_i, so p(m = 0) = σ(−4Tcz_i). Both entropies then use G = L groups of one bit, whatever g
///   is (g only has to divide L, as the official constructor asserts). Both entropies are symmetric
///   under p ↔ 1 − p, so loss values and gradients would not change under the opposite convention;
///   it matters only to whoever reads the probabilities themselves.
/// - Per-sample entropy H_ps = (1/N)·Σ_n Σ_j Σ_m entr(p_j(m | z_n) + ε).
/// - Codebook entropy H_cb = Σ_j Σ_m entr(p̄_j(m) + ε), p̄_j = (1/N)·Σ_n p_j(· | z_n) (all N tokens).
/// - Penalty = γ0·H_ps − γ1·H_cb (negative values are normal).
/// - Commitment = β·(1/N)·Σ_n Σ_i (stopgrad(ẑ·c)_{n,i} − z_{n,i})².
/// - loss_q = commitment + penalty/T (QLIP's bsq.py; BSQ-ViT multiplies the penalty by ζ too).
/// The entropies use the continuous z, never z_q. The group mode costs 2^g per group per token, so
/// g ≤ kBsqLossMaxGroupSize (16) there.
///
/// Backward contract: dz (the gradient of the quantiser input, an activation) is written (=);
/// bsq_loss_backward adds in it the straight-through path q_scale·dz_q of the quantiser output when
/// dz_q is given, so a single call yields the whole ∂/∂z. An empty dz is skipped. dloss is the
/// upstream gradient of loss_q (its weight α_q).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip {

/// How the per-sample entropy's probabilities are formed (bsq.py `persample_entropy_compute`).
enum class BsqEntropyMode {
  analytical,  ///< per bit, P(bit = −1) = σ(−4Tc·z_i): G = L groups of one bit
  group,       ///< softmax over the 2^g codes of each group of g bits
};

/// Largest group size of the "group" mode (its cost is 2^g per group per token).
inline constexpr int kBsqLossMaxGroupSize = 16;

/// The quantiser's loss settings (bsq.py constructor arguments; defaults as there).
struct BsqLossConfig {
  double inv_temperature = 100.0;  ///< T (QLIP default 100; BSQ-ViT 1)
  int group_size = 9;              ///< g; must divide L
  double gamma0 = 1.0;             ///< γ0, weight of the per-sample entropy
  double gamma1 = 1.0;             ///< γ1, weight of the codebook entropy
  double beta = 0.0;               ///< β, commitment weight
  BsqEntropyMode mode = BsqEntropyMode::group;
  bool l2_norm = true;             ///< c = 1/√L when true, else 1
};

/// Every component of loss_q, for logs.
struct BsqLossResult {
  double loss = 0.0;                ///< loss_q = commitment + entropy_penalty / T
  double commitment = 0.0;          ///< β·mean_tokens Σ_i (ẑ·c − z)²
  double per_sample_entropy = 0.0;  ///< H_ps
  double codebook_entropy = 0.0;    ///< H_cb (bsq.py reports it as info["H"])
  double entropy_penalty = 0.0;     ///< γ0·H_ps − γ1·H_cb
};

/// ε added inside entr() (bsq.py `_EPS`).
inline constexpr double kBsqEntropyEps = 1e-8;

namespace detail {

/// c = 1/√L with l2_norm, else 1 (in double).
inline double bsq_loss_code_scale(std::int64_t l, bool l2_norm) {
  return l2_norm ? 1.0 / std::sqrt(static_cast<double>(l)) : 1.0;
}

/// The group size the entropies use: g in "group" mode, 1 in "analytical" mode.
inline int bsq_loss_entropy_group(const BsqLossConfig& cfg) {
  return cfg.mode == BsqEntropyMode::group ? cfg.group_size : 1;
}

/// Checks z[N, L] and the config; `op` names the calling op in every message.
template <class T, class M>
void check_bsq_loss_args(const TensorView<const T, 2, M>& z, const BsqLossConfig& cfg, const char* op) {
  QLIP_CHECK(z.size(0) >= 1 && z.size(1) >= 1, op, ": z must be [N ≥ 1, L ≥ 1], got ", shape_string<2>(z.shape()));
  QLIP_CHECK(cfg.group_size >= 1 && z.size(1) % cfg.group_size == 0, op, ": group_size ", cfg.group_size,
             " does not divide L = ", z.size(1));
  QLIP_CHECK(cfg.mode != BsqEntropyMode::group || cfg.group_size <= kBsqLossMaxGroupSize, op, ": group_size ",
             cfg.group_size, " > ", kBsqLossMaxGroupSize, " in \"group\" mode (2^g codes per group per token)");
  QLIP_CHECK(cfg.inv_temperature > 0.0 && std::isfinite(cfg.inv_temperature), op,
             ": inv_temperature must be positive and finite, got ", cfg.inv_temperature);
}

/// The backward's checks: the forward's, dz_q empty or [N, L], dz empty or [N, L].
template <class T, class M>
void check_bsq_loss_backward_args(const TensorView<const T, 2, M>& z, const BsqLossConfig& cfg,
                                  const TensorView<const T, 2, M>& dz_q, const TensorView<T, 2, M>& dz) {
  check_bsq_loss_args(z, cfg, "bsq_loss_backward");
  if (!dz_q.empty()) check_shape(dz_q, z.shape(), "bsq_loss_backward: dz_q");
  if (!dz.empty()) check_shape(dz, z.shape(), "bsq_loss_backward: dz");
}

/// z[M, L] → z_q[M, L] (forward) or dz_q[M, L] → dz[M, L] (backward) of the straight-through quantiser.
template <class T, class M>
void check_bsq_straight_through_args(const TensorView<const T, 2, M>& in, const TensorView<T, 2, M>& out,
                                     const char* what) {
  check_shape(out, in.shape(), what);
}

}  // namespace detail

namespace reference {

/// Straight-through forward: z_q = where(z > 0, +1, −1)·q_scale (z == 0 gives −q_scale, MODEL.md §2.6).
/// @param z   [M, L]
/// @param zq  [M, L] written
template <class T>
void bsq_straight_through(HostView<const T, 2> z, T q_scale, HostView<T, 2> zq) {
  detail::check_bsq_straight_through_args(z, zq, "bsq_straight_through: zq");
  for (std::int64_t i = 0; i < z.size(0); ++i)
    for (std::int64_t j = 0; j < z.size(1); ++j) zq(i, j) = z(i, j) > T(0) ? q_scale : -q_scale;
}

/// Straight-through backward: z + stopgrad(ẑ − z) has derivative 1, so dz = q_scale·dz_q (=).
/// @param dzq [M, L] upstream gradient of the quantiser output
/// @param dz  [M, L] written
template <class T>
void bsq_straight_through_backward(HostView<const T, 2> dzq, T q_scale, HostView<T, 2> dz) {
  detail::check_bsq_straight_through_args(dzq, dz, "bsq_straight_through_backward: dz");
  for (std::int64_t i = 0; i < dzq.size(0); ++i)
    for (std::int64_t j = 0; j < dzq.size(1); ++j)
      dz(i, j) = static_cast<T>(static_cast<double>(q_scale) * static_cast<double>(dzq(i, j)));
}

namespace bsq_detail {

/// Column k of code m in a group of g bits: +1 when bit 2^(g−1−k) of m is set, else −1 (MSB first).
inline double code_sign(std::int64_t m, int k, int g) { return ((m >> (g - 1 - k)) & 1) != 0 ? 1.0 : -1.0; }

/// Soft assignment of group j of token n: p[m] = softmax_m(2T·c·Σ_k z[n, j·g+k]·C[m, k]), m < 2^g,
/// written as the literal dot product with the codebook (the CPU backend computes it incrementally).
template <class T>
void group_probabilities(HostView<const T, 2> z, std::int64_t n, std::int64_t j, int g, double two_tc, double* p) {
  const std::int64_t k_n = std::int64_t{1} << g;
  double mx = -1e300;
  for (std::int64_t m = 0; m < k_n; ++m) {
    double dot = 0.0;
    for (int k = 0; k < g; ++k) dot += static_cast<double>(z(n, j * g + k)) * code_sign(m, k, g);
    p[m] = two_tc * dot;
    mx = std::fmax(mx, p[m]);
  }
  double sum = 0.0;
  for (std::int64_t m = 0; m < k_n; ++m) sum += (p[m] = std::exp(p[m] - mx));
  for (std::int64_t m = 0; m < k_n; ++m) p[m] /= sum;
}

inline double entr(double x) { return -x * std::log(x); }

/// p̄[j·2^g + m] = (1/N)·Σ_n p_j(m | z_n), and (if wanted) Σ_n Σ_j Σ_m entr(p + ε) into *ps_sum.
template <class T>
std::vector<double> average_probabilities(HostView<const T, 2> z, int g, double two_tc, double* ps_sum) {
  const std::int64_t n_tok = z.size(0), g_n = z.size(1) / g, k_n = std::int64_t{1} << g;
  std::vector<double> avg(static_cast<std::size_t>(g_n * k_n), 0.0), p(static_cast<std::size_t>(k_n));
  double ps = 0.0;
  for (std::int64_t n = 0; n < n_tok; ++n)
    for (std::int64_t j = 0; j < g_n; ++j) {
      group_probabilities(z, n, j, g, two_tc, p.data());
      for (std::int64_t m = 0; m < k_n; ++m) {
        ps += entr(p[m] + kBsqEntropyEps);
        avg[static_cast<std::size_t>(j * k_n + m)] += p[m];
      }
    }
  for (double& a : avg) a /= static_cast<double>(n_tok);
  if (ps_sum != nullptr) *ps_sum = ps;
  return avg;
}

}  // namespace bsq_detail

/// loss_q and its components (see the file comment), everything in double.
/// @tparam T float (the oracle of every backend) or double (what finite differences differentiate)
/// @param z   [N, L] quantiser input, one row per token (all tokens of the batch)
/// @param cfg T, g, γ0, γ1, β, mode, l2_norm
template <class T>
BsqLossResult bsq_loss(HostView<const T, 2> z, const BsqLossConfig& cfg) {
  detail::check_bsq_loss_args(z, cfg, "bsq_loss");
  const std::int64_t n_tok = z.size(0), l = z.size(1);
  const double c = detail::bsq_loss_code_scale(l, cfg.l2_norm);
  const int g = detail::bsq_loss_entropy_group(cfg);
  double ps_sum = 0.0;
  const std::vector<double> avg =
      bsq_detail::average_probabilities(z, g, 2.0 * cfg.inv_temperature * c, &ps_sum);
  BsqLossResult r;
  r.per_sample_entropy = ps_sum / static_cast<double>(n_tok);
  for (double a : avg) r.codebook_entropy += bsq_detail::entr(a + kBsqEntropyEps);
  double commit = 0.0;
  for (std::int64_t n = 0; n < n_tok; ++n)
    for (std::int64_t i = 0; i < l; ++i) {
      const double zi = static_cast<double>(z(n, i)), d = (zi > 0.0 ? c : -c) - zi;
      commit += d * d;
    }
  r.commitment = cfg.beta * commit / static_cast<double>(n_tok);
  r.entropy_penalty = cfg.gamma0 * r.per_sample_entropy - cfg.gamma1 * r.codebook_entropy;
  r.loss = r.commitment + r.entropy_penalty / cfg.inv_temperature;
  return r;
}

/// The float oracle, callable with mutable views.
inline BsqLossResult bsq_loss(HostView<const float, 2> z, const BsqLossConfig& cfg) { return bsq_loss<float>(z, cfg); }

/// dz = dloss·∂loss_q/∂z + c·dz_q (=). With λ_jm = ln(p̄_j(m) + ε) + 1 and, per token and group,
///   w_m  = (dloss/T)·(1/N)·(−γ0·(ln(p_m + ε) + 1) + γ1·λ_jm)      (∂/∂p of the penalty term)
///   a_m  = p_m·(w_m − Σ_m' p_m'·w_m')                            (softmax backward)
///   dz_{jg+k} += 2Tc·Σ_m a_m·C[m, k]
/// and the commitment adds dloss·(−2β/N)·(ẑ·c − z). The straight-through path uses c as q_scale
/// (the quantiser output is z_q·c).
/// @param z     [N, L] the forward input
/// @param dloss upstream gradient of loss_q
/// @param dz_q  [N, L] upstream gradient of the quantiser output z_q·c, or empty (none)
/// @param dz    [N, L] written, or empty (skipped)
template <class T>
void bsq_loss_backward(HostView<const T, 2> z, const BsqLossConfig& cfg, double dloss, HostView<const T, 2> dz_q,
                       HostView<T, 2> dz) {
  detail::check_bsq_loss_backward_args(z, cfg, dz_q, dz);
  if (dz.empty()) return;
  const std::int64_t n_tok = z.size(0), l = z.size(1);
  const double c = detail::bsq_loss_code_scale(l, cfg.l2_norm), two_tc = 2.0 * cfg.inv_temperature * c;
  const int g = detail::bsq_loss_entropy_group(cfg);
  const std::int64_t g_n = l / g, k_n = std::int64_t{1} << g;
  const std::vector<double> avg = bsq_detail::average_probabilities(z, g, two_tc, nullptr);
  const double scale = dloss / (cfg.inv_temperature * static_cast<double>(n_tok));
  std::vector<double> p(static_cast<std::size_t>(k_n)), a(static_cast<std::size_t>(k_n));
  for (std::int64_t n = 0; n < n_tok; ++n) {
    for (std::int64_t j = 0; j < g_n; ++j) {
      bsq_detail::group_probabilities(z, n, j, g, two_tc, p.data());
      double pw = 0.0;
      for (std::int64_t m = 0; m < k_n; ++m) {
        const double lam = std::log(avg[static_cast<std::size_t>(j * k_n + m)] + kBsqEntropyEps) + 1.0;
        a[m] = scale * (-cfg.gamma0 * (std::log(p[m] + kBsqEntropyEps) + 1.0) + cfg.gamma1 * lam);
        pw += p[m] * a[m];
      }
      for (std::int64_t m = 0; m < k_n; ++m) a[m] = p[m] * (a[m] - pw);
      for (int k = 0; k < g; ++k) {
        double acc = 0.0;
        for (std::int64_t m = 0; m < k_n; ++m) acc += a[m] * bsq_detail::code_sign(m, k, g);
        const std::int64_t i = j * g + k;
        const double zi = static_cast<double>(z(n, i));
        double d = two_tc * acc - dloss * 2.0 * cfg.beta / static_cast<double>(n_tok) * ((zi > 0.0 ? c : -c) - zi);
        if (!dz_q.empty()) d += c * static_cast<double>(dz_q(n, i));
        dz(n, i) = static_cast<T>(d);
      }
    }
  }
}

}  // namespace reference
}  // namespace qlip
