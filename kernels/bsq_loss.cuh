/// @file bsq_loss.cuh
/// @brief The BSQ quantiser's training pieces on the CUDA backend (reference/bsq_loss.hpp, MODEL.md
///        §3.1–§3.2): the straight-through sign quantiser forward and backward, and loss_q (soft
///        entropy penalty + commitment) forward and backward, "group" and "analytical" modes.
///
/// Deterministic without atomics, in double like the reference:
///  1. one thread per (token n, group j): the group's log-normaliser over its 2^g codes, Σ_m entr(p+ε)
///     and the commitment of its g dims, each into caller-owned workspace [N·G];
///  2. one thread per (group j, code m): p̄_j(m) = (1/N)·Σ_n p_j(m | z_n), tokens in order;
///  3. the forward copies the per-(n, j) terms and p̄ to the host and sums them there in order
///     (loss_q is a host scalar the trainer logs);
///  4. the backward: one thread per (n, j) recomputes p, forms a_m = p_m·(w_m − Σ p·w) code by code
///     and accumulates 2Tc·Σ_m a_m·C[m, k] for its g dims in registers.
/// Each (n, j) thread walks the 2^g codes, so the cost is N·G·2^g·g like the reference's.
#pragma once

#include <cstdint>
#include <vector>

#include "common.cuh"
#include "qlip/reference/bsq_loss.hpp"

namespace qlip {
namespace cuda {

/// Caller-owned device workspace of bsq_loss / bsq_loss_backward for N tokens of L dims.
class BsqLossWorkspace {
 public:
  BsqLossWorkspace() = default;
  BsqLossWorkspace(std::int64_t tokens, std::int64_t dims, const BsqLossConfig& cfg)
      : lse_(tokens * groups(dims, cfg)),
        entropy_(tokens * groups(dims, cfg)),
        commit_(tokens * groups(dims, cfg)),
        avg_(groups(dims, cfg) * (std::int64_t{1} << qlip::detail::bsq_loss_entropy_group(cfg))) {}
  double* lse() const { return lse_.data(); }
  double* entropy() const { return entropy_.data(); }
  double* commit() const { return commit_.data(); }
  double* avg() const { return avg_.data(); }
  std::int64_t per_token_size() const { return lse_.size(); }
  std::int64_t avg_size() const { return avg_.size(); }

 private:
  static std::int64_t groups(std::int64_t dims, const BsqLossConfig& cfg) {
    return dims / qlip::detail::bsq_loss_entropy_group(cfg);
  }
  DeviceBuffer<double> lse_, entropy_, commit_, avg_;
};

namespace detail {

/// The scalars every BSQ loss kernel needs.
struct BsqLossParams {
  std::int64_t tokens, dims, groups;
  int g;
  double c, two_tc;
};

/// +1 when bit 2^(g−1−k) of code m is set, else −1 (MSB first), as reference's code_sign.
__device__ inline double bsq_code_sign(std::int64_t m, int k, int g) {
  return ((m >> (g - 1 - k)) & 1) ? 1.0 : -1.0;
}

/// The logit of code m for group j of token n: 2Tc·Σ_k z[n, jg + k]·C[m, k].
__device__ inline double bsq_logit(const DeviceView<const float, 2>& z, std::int64_t n, std::int64_t j, std::int64_t m,
                                   const BsqLossParams& p) {
  double dot = 0.0;
  for (int k = 0; k < p.g; ++k) dot += static_cast<double>(z(n, j * p.g + k)) * bsq_code_sign(m, k, p.g);
  return p.two_tc * dot;
}

/// log Σ_m exp(logit_m) of group j of token n.
__device__ inline double bsq_group_lse(const DeviceView<const float, 2>& z, std::int64_t n, std::int64_t j,
                                       const BsqLossParams& p) {
  const std::int64_t codes = std::int64_t{1} << p.g;
  double mx = -1e300;
  for (std::int64_t m = 0; m < codes; ++m) mx = fmax(mx, bsq_logit(z, n, j, m, p));
  double sum = 0.0;
  for (std::int64_t m = 0; m < codes; ++m) sum += exp(bsq_logit(z, n, j, m, p) - mx);
  return mx + log(sum);
}

__device__ inline double bsq_entr(double x) {
  return -x * log(x);
}

/// Pass 1: per (n, j) the log-normaliser, Σ_m entr(p + ε) and Σ_k (ẑc − z)² over the group's dims.
QLIP_KERNEL void bsq_token_terms_kernel(DeviceView<const float, 2> z, BsqLossParams p, double* lse, double* entropy,
                                        double* commit) {
  const std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= p.tokens * p.groups) return;
  const std::int64_t n = idx / p.groups, j = idx % p.groups, codes = std::int64_t{1} << p.g;
  const double l = bsq_group_lse(z, n, j, p);
  double h = 0.0;
  for (std::int64_t m = 0; m < codes; ++m) h += bsq_entr(exp(bsq_logit(z, n, j, m, p) - l) + kBsqEntropyEps);
  double cm = 0.0;
  for (int k = 0; k < p.g; ++k) {
    const double zi = z(n, j * p.g + k), d = (zi > 0.0 ? p.c : -p.c) - zi;
    cm += d * d;
  }
  lse[idx] = l;
  entropy[idx] = h;
  commit[idx] = cm;
}

/// Pass 2: per (j, m) the mean over tokens of p_j(m | z_n), tokens in order.
QLIP_KERNEL void bsq_average_kernel(DeviceView<const float, 2> z, BsqLossParams p, const double* lse, double* avg) {
  const std::int64_t codes = std::int64_t{1} << p.g;
  const std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= p.groups * codes) return;
  const std::int64_t j = idx / codes, m = idx % codes;
  double sum = 0.0;
  for (std::int64_t n = 0; n < p.tokens; ++n) sum += exp(bsq_logit(z, n, j, m, p) - lse[n * p.groups + j]);
  avg[idx] = sum / static_cast<double>(p.tokens);
}

/// The backward weights: scale = dloss/(T·N), and the penalty and commitment weights.
struct BsqBackwardParams {
  double scale, gamma0, gamma1, commit_coef, c;
  bool has_dzq;
};

/// Pass 4: dz for the g dims of group j of token n (reference::bsq_loss_backward's formulas).
template <int kMaxG>
QLIP_KERNEL void bsq_loss_backward_kernel(DeviceView<const float, 2> z, BsqLossParams p, BsqBackwardParams b,
                                          const double* lse, const double* avg, DeviceView<const float, 2> dz_q,
                                          DeviceView<float, 2> dz) {
  const std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= p.tokens * p.groups) return;
  const std::int64_t n = idx / p.groups, j = idx % p.groups, codes = std::int64_t{1} << p.g;
  const double l = lse[idx];
  const auto weight = [&](std::int64_t m, double pm) {
    const double lam = log(avg[j * codes + m] + kBsqEntropyEps) + 1.0;
    return b.scale * (-b.gamma0 * (log(pm + kBsqEntropyEps) + 1.0) + b.gamma1 * lam);
  };
  double pw = 0.0;
  for (std::int64_t m = 0; m < codes; ++m) {
    const double pm = exp(bsq_logit(z, n, j, m, p) - l);
    pw += pm * weight(m, pm);
  }
  double acc[kMaxG];
  for (int k = 0; k < kMaxG; ++k) acc[k] = 0.0;
  for (std::int64_t m = 0; m < codes; ++m) {
    const double pm = exp(bsq_logit(z, n, j, m, p) - l);
    const double a = pm * (weight(m, pm) - pw);
    for (int k = 0; k < p.g; ++k) acc[k] += a * bsq_code_sign(m, k, p.g);
  }
  for (int k = 0; k < p.g; ++k) {
    const std::int64_t i = j * p.g + k;
    const double zi = z(n, i);
    double d = p.two_tc * acc[k] - b.commit_coef * ((zi > 0.0 ? b.c : -b.c) - zi);
    if (b.has_dzq) d += b.c * static_cast<double>(dz_q(n, i));
    dz(n, i) = static_cast<float>(d);
  }
}

QLIP_KERNEL void bsq_straight_through_kernel(DeviceView<const float, 2> in, float q_scale, DeviceView<float, 2> out,
                                             bool backward) {
  const std::int64_t n = in.numel(), cols = in.size(1);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / cols, c = i % cols;
    const float v = in(r, c);
    out(r, c) = backward ? static_cast<float>(static_cast<double>(q_scale) * static_cast<double>(v))
                         : (v > 0.0f ? q_scale : -q_scale);
  }
}

inline BsqLossParams bsq_loss_params(const DeviceView<const float, 2>& z, const BsqLossConfig& cfg) {
  const int g = qlip::detail::bsq_loss_entropy_group(cfg);
  const double c = qlip::detail::bsq_loss_code_scale(z.size(1), cfg.l2_norm);
  return {z.size(0), z.size(1), z.size(1) / g, g, c, 2.0 * cfg.inv_temperature * c};
}

/// Passes 1 and 2 on `stream`.
inline void bsq_loss_passes(const DeviceView<const float, 2>& z, const BsqLossParams& p, const BsqLossWorkspace& ws,
                            const char* op, cudaStream_t stream) {
  QLIP_CHECK(ws.per_token_size() == p.tokens * p.groups && ws.avg_size() == p.groups * (std::int64_t{1} << p.g), op,
             ": the workspace was sized for another N, L or group size (BsqLossWorkspace(N, L, cfg))");
  constexpr int kThreads = 128;
  bsq_token_terms_kernel<<<grid_for(p.tokens * p.groups, kThreads), kThreads, 0, stream>>>(z, p, ws.lse(), ws.entropy(),
                                                                                           ws.commit());
  QLIP_CUDA_CHECK_LAUNCH();
  bsq_average_kernel<<<grid_for(p.groups * (std::int64_t{1} << p.g), kThreads), kThreads, 0, stream>>>(z, p, ws.lse(),
                                                                                                       ws.avg());
  QLIP_CUDA_CHECK_LAUNCH();
}

/// n doubles device → host on `stream` (synchronises it).
inline std::vector<double> download_doubles(const double* src, std::int64_t n, cudaStream_t stream) {
  std::vector<double> out(static_cast<std::size_t>(n));
  QLIP_CUDA_CHECK(cudaMemcpyAsync(out.data(), src, sizeof(double) * out.size(), cudaMemcpyDeviceToHost, stream));
  QLIP_CUDA_CHECK(cudaStreamSynchronize(stream));
  return out;
}

}  // namespace detail
}  // namespace cuda

namespace ops {

/// Straight-through forward: z_q = where(z > 0, +1, −1)·q_scale (reference::bsq_straight_through).
inline void bsq_straight_through(cuda_backend, DeviceView<const float, 2> z, float q_scale, DeviceView<float, 2> zq,
                                 cudaStream_t stream = 0) {
  detail::check_bsq_straight_through_args(cuda::sizes_only(z), cuda::sizes_only(zq), "bsq_straight_through: zq");
  if (z.numel() == 0) return;
  constexpr int kThreads = 256;
  cuda::detail::bsq_straight_through_kernel<<<cuda::grid_for(z.numel(), kThreads), kThreads, 0, stream>>>(z, q_scale,
                                                                                                          zq, false);
  QLIP_CUDA_CHECK_LAUNCH();
}

/// Straight-through backward: dz = q_scale·dz_q (=).
inline void bsq_straight_through_backward(cuda_backend, DeviceView<const float, 2> dzq, float q_scale,
                                          DeviceView<float, 2> dz, cudaStream_t stream = 0) {
  detail::check_bsq_straight_through_args(cuda::sizes_only(dzq), cuda::sizes_only(dz),
                                          "bsq_straight_through_backward: dz");
  if (dzq.numel() == 0) return;
  constexpr int kThreads = 256;
  cuda::detail::bsq_straight_through_kernel<<<cuda::grid_for(dzq.numel(), kThreads), kThreads, 0, stream>>>(
      dzq, q_scale, dz, true);
  QLIP_CUDA_CHECK_LAUNCH();
}

/// loss_q and its components (reference::bsq_loss) for z [N, L] on the device; synchronises
/// `stream` (the result is a host value).
inline BsqLossResult bsq_loss(cuda_backend, DeviceView<const float, 2> z, const BsqLossConfig& cfg,
                              const cuda::BsqLossWorkspace& ws, cudaStream_t stream = 0) {
  detail::check_bsq_loss_args(cuda::sizes_only(z), cfg, "bsq_loss");
  const cuda::detail::BsqLossParams p = cuda::detail::bsq_loss_params(z, cfg);
  cuda::detail::bsq_loss_passes(z, p, ws, "bsq_loss", stream);
  const std::vector<double> entropy = cuda::detail::download_doubles(ws.entropy(), ws.per_token_size(), stream);
  const std::vector<double> commit = cuda::detail::download_doubles(ws.commit(), ws.per_token_size(), stream);
  const std::vector<double> avg = cuda::detail::download_doubles(ws.avg(), ws.avg_size(), stream);
  double ps = 0.0, cm = 0.0;
  for (std::size_t i = 0; i < entropy.size(); ++i) {
    ps += entropy[i];
    cm += commit[i];
  }
  BsqLossResult r;
  r.per_sample_entropy = ps / static_cast<double>(p.tokens);
  for (double a : avg) r.codebook_entropy += -(a + kBsqEntropyEps) * std::log(a + kBsqEntropyEps);
  r.commitment = cfg.beta * cm / static_cast<double>(p.tokens);
  r.entropy_penalty = cfg.gamma0 * r.per_sample_entropy - cfg.gamma1 * r.codebook_entropy;
  r.loss = r.commitment + r.entropy_penalty / cfg.inv_temperature;
  return r;
}

/// dz = dloss·∂loss_q/∂z + c·dz_q (=) on the device (reference::bsq_loss_backward); an empty dz
/// is skipped, an empty dz_q adds nothing.
inline void bsq_loss_backward(cuda_backend, DeviceView<const float, 2> z, const BsqLossConfig& cfg, double dloss,
                              DeviceView<const float, 2> dz_q, DeviceView<float, 2> dz,
                              const cuda::BsqLossWorkspace& ws, cudaStream_t stream = 0) {
  detail::check_bsq_loss_backward_args(cuda::sizes_only(z), cfg, cuda::sizes_only(dz_q), cuda::sizes_only(dz));
  if (dz.empty()) return;
  const cuda::detail::BsqLossParams p = cuda::detail::bsq_loss_params(z, cfg);
  cuda::detail::bsq_loss_passes(z, p, ws, "bsq_loss_backward", stream);
  const cuda::detail::BsqBackwardParams b{
      dloss / (cfg.inv_temperature * static_cast<double>(p.tokens)), cfg.gamma0, cfg.gamma1,
      dloss * 2.0 * cfg.beta / static_cast<double>(p.tokens),        p.c,        !dz_q.empty()};
  constexpr int kThreads = 128;
  cuda::detail::bsq_loss_backward_kernel<kBsqLossMaxGroupSize>
      <<<cuda::grid_for(p.tokens * p.groups, kThreads), kThreads, 0, stream>>>(z, p, b, ws.lse(), ws.avg(), dz_q, dz);
  QLIP_CUDA_CHECK_LAUNCH();
}

}  // namespace ops
}  // namespace qlip
