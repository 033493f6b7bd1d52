/// @file optimizer.hpp
/// @brief Reference (oracle) optimiser steps over flat buffers: AdamW (torch.optim.AdamW) and LAMB
///        (You et al. 2019), computed in double; the per-element formulas and the argument checks
///        shared by every backend.
///
/// The buffers are flat: every parameter tensor is one segment [offset, offset + numel) of a single
/// value buffer, and its gradient and its two moments sit at the same offsets of three more buffers
/// of the same length (train/parameter_store.hpp lays them out). A step gets one OptimizerSegment per
/// tensor, carrying that tensor's learning rate and weight decay for this step (its group's peak
/// times the schedule; 0 decay for tensors without decay), so per-group hyper-parameters cost nothing
/// here. Elements between segments (alignment padding) are never read or written.
///
/// Formulas (t = AdamHyperParams::step ≥ 1, the step count after its increment, as in torch; g is the
/// gradient times AdamHyperParams::grad_scale, e.g. a clip coefficient):
///
/// AdamW, exactly the arithmetic order of torch.optim.AdamW with foreach=False (torch/optim/adam.py,
/// _single_tensor_adam with decoupled_weight_decay, torch 2.x):
///   p ← p·(1 − lr·wd)
///   m ← lerp(m, g, 1 − β1)            (torch.lerp: w < ½ ? m + w·(g − m) : g − (g − m)·(1 − w))
///   v ← β2·v + (1 − β2)·g·g
///   denom = sqrt(v) / sqrt(1 − β2^t) + eps
///   p ← p + (−lr/(1 − β1^t))·m / denom
/// The scalar coefficients are computed in double (Python floats in torch) and rounded once to the
/// compute type, as torch rounds a Python scalar to the tensor's dtype.
///
/// LAMB (You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes",
/// 2019, Algorithm 2, with Adam's bias correction), per tensor:
///   m ← lerp(m, g, 1 − β1),  v ← β2·v + (1 − β2)·g·g   (the same moment updates as AdamW)
///   r = (m/(1 − β1^t)) / (sqrt(v/(1 − β2^t)) + eps) + wd·p
///   trust = ‖p‖/‖r‖, or 1 when ‖p‖ = 0 or ‖r‖ = 0     (norms over the whole tensor, before the update)
///   p ← p − lr·trust·r
/// The trust ratio is applied to every tensor, decayed or not, as in the paper (timm's Lamb adapts
/// only tensors with weight decay unless always_adapt; apex's FusedLAMB adapts all). Unlike those
/// two, no gradient clipping happens inside the step: clip first (train/clip_grad.hpp) and pass the
/// coefficient as grad_scale.
///
/// Both backends evaluate the same element functions below (detail::adamw_element, lamb_*), the
/// reference with T = double, the CPU backend with T = float, so they differ only by precision and,
/// for LAMB's norms, by summation order.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "qlip/core/error.hpp"
#include "qlip/core/platform.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip {

/// One parameter tensor's part of the flat buffers, with its hyper-parameters for this step.
struct OptimizerSegment {
  std::int64_t offset = 0;    ///< first element in the flat buffers
  std::int64_t numel = 0;     ///< elements of the tensor (≥ 1)
  double lr = 0.0;            ///< learning rate for this step (group peak × schedule), ≥ 0
  double weight_decay = 0.0;  ///< 0 for a tensor without decay (norms, biases, embeddings)
};

/// Hyper-parameters shared by all tensors in one step.
struct AdamHyperParams {
  double beta1 = 0.9;  ///< QLIP_SPEC.md §4.2: (β1, β2) = (0.9, 0.95) in both stages
  double beta2 = 0.95;
  double eps = 1e-8;        ///< not stated by the paper; torch.optim.AdamW's default
  std::int64_t step = 1;    ///< t: 1 for the first step (torch's state['step'] after its increment)
  double grad_scale = 1.0;  ///< the gradient is used as grad·grad_scale (clip coefficient, 1/accumulation)
};

namespace detail {

/// Checks the arguments of an optimiser step: four buffers of one length, each contiguous; segments
/// inside the buffers, in increasing order, not overlapping, each with lr ≥ 0 and weight decay ≥ 0;
/// 0 ≤ β < 1, eps > 0, t ≥ 1, a finite grad_scale. Every message starts with `op` and names the
/// argument (segments[i], beta1, ...).
template <class T, class G, class M>
void check_optimizer_args(const char* op, const TensorView<T, 1, M>& param, const TensorView<G, 1, M>& grad,
                          const TensorView<T, 1, M>& exp_avg, const TensorView<T, 1, M>& exp_avg_sq,
                          std::span<const OptimizerSegment> segments, const AdamHyperParams& hp) {
  const std::int64_t n = param.size(0);
  check_shape(grad, {n}, (std::string(op) + ": grad").c_str());
  check_shape(exp_avg, {n}, (std::string(op) + ": exp_avg").c_str());
  check_shape(exp_avg_sq, {n}, (std::string(op) + ": exp_avg_sq").c_str());
  auto check_contiguous = [&](std::int64_t stride, const char* what) {
    QLIP_CHECK(n <= 1 || stride == 1, op, ": ", what, " must be contiguous (stride 1), got stride ", stride);
  };
  check_contiguous(param.stride(0), "param");
  check_contiguous(grad.stride(0), "grad");
  check_contiguous(exp_avg.stride(0), "exp_avg");
  check_contiguous(exp_avg_sq.stride(0), "exp_avg_sq");
  std::int64_t previous_end = 0;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const OptimizerSegment& s = segments[i];
    QLIP_CHECK(s.numel >= 1 && s.offset >= 0 && s.offset <= n - s.numel, op, ": segments[", i, "] = [offset ", s.offset,
               ", numel ", s.numel, "] is empty or outside the buffers of ", n, " elements");
    QLIP_CHECK(s.offset >= previous_end, op, ": segments[", i, "] starts at ", s.offset,
               ", before the end of segments[", i - 1, "] (", previous_end,
               "): segments must be in increasing order and must not overlap");
    QLIP_CHECK(std::isfinite(s.lr) && s.lr >= 0.0, op, ": segments[", i, "].lr is ", s.lr, ", expected ≥ 0");
    QLIP_CHECK(std::isfinite(s.weight_decay) && s.weight_decay >= 0.0, op, ": segments[", i, "].weight_decay is ",
               s.weight_decay, ", expected ≥ 0");
    previous_end = s.offset + s.numel;
  }
  QLIP_CHECK(hp.beta1 >= 0.0 && hp.beta1 < 1.0, op, ": beta1 is ", hp.beta1, ", expected 0 ≤ beta1 < 1");
  QLIP_CHECK(hp.beta2 >= 0.0 && hp.beta2 < 1.0, op, ": beta2 is ", hp.beta2, ", expected 0 ≤ beta2 < 1");
  QLIP_CHECK(std::isfinite(hp.eps) && hp.eps > 0.0, op, ": eps is ", hp.eps, ", expected > 0");
  QLIP_CHECK(hp.step >= 1, op, ": step is ", hp.step, ", expected ≥ 1 (t = 1 for the first step)");
  QLIP_CHECK(std::isfinite(hp.grad_scale), op, ": grad_scale is ", hp.grad_scale, ", expected a finite number");
}

/// torch.lerp(a, b, w) for a scalar weight (aten/src/ATen/native/Lerp.h): the branch keeps the
/// result exact at w = 0 and w = 1.
template <class T>
QLIP_HOST_DEVICE inline T torch_lerp(T a, T b, T w) {
  return w < T(0.5) ? a + w * (b - a) : b - (b - a) * (T(1) - w);
}

/// The scalars of one AdamW segment step, computed in double and rounded once to T.
template <class T>
struct AdamWScalars {
  T grad_scale, decay, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, neg_step_size;
};

template <class T>
AdamWScalars<T> adamw_scalars(const OptimizerSegment& s, const AdamHyperParams& hp) {
  const double t = static_cast<double>(hp.step);
  const double bias_correction1 = 1.0 - std::pow(hp.beta1, t);
  const double bias_correction2 = 1.0 - std::pow(hp.beta2, t);
  return {static_cast<T>(hp.grad_scale),  static_cast<T>(1.0 - s.lr * s.weight_decay),
          static_cast<T>(1.0 - hp.beta1), static_cast<T>(hp.beta2),
          static_cast<T>(1.0 - hp.beta2), static_cast<T>(std::sqrt(bias_correction2)),
          static_cast<T>(hp.eps),         static_cast<T>(-(s.lr / bias_correction1))};
}

/// One AdamW element, in torch's order (file comment). `g` is already scaled.
template <class T>
QLIP_HOST_DEVICE inline void adamw_element(T& p, T g, T& m, T& v, const AdamWScalars<T>& c) {
  p = p * c.decay;
  m = torch_lerp(m, g, c.one_minus_beta1);
  v = v * c.beta2 + c.one_minus_beta2 * g * g;
  const T denom = std::sqrt(v) / c.bias_correction2_sqrt + c.eps;
  p = p + (c.neg_step_size * m) / denom;
}

/// The scalars of one LAMB segment step (before the trust ratio), in double rounded once to T.
template <class T>
struct LambScalars {
  T grad_scale, one_minus_beta1, beta2, one_minus_beta2, bias_correction1, bias_correction2, eps, weight_decay;
};

template <class T>
LambScalars<T> lamb_scalars(const OptimizerSegment& s, const AdamHyperParams& hp) {
  const double t = static_cast<double>(hp.step);
  return {static_cast<T>(hp.grad_scale),
          static_cast<T>(1.0 - hp.beta1),
          static_cast<T>(hp.beta2),
          static_cast<T>(1.0 - hp.beta2),
          static_cast<T>(1.0 - std::pow(hp.beta1, t)),
          static_cast<T>(1.0 - std::pow(hp.beta2, t)),
          static_cast<T>(hp.eps),
          static_cast<T>(s.weight_decay)};
}

/// LAMB's moment update of one element (the same as AdamW's). `g` is already scaled.
template <class T>
QLIP_HOST_DEVICE inline void lamb_moments(T g, T& m, T& v, const LambScalars<T>& c) {
  m = torch_lerp(m, g, c.one_minus_beta1);
  v = v * c.beta2 + c.one_minus_beta2 * g * g;
}

/// LAMB's update direction r = m̂/(sqrt(v̂) + eps) + wd·p of one element, from the updated moments.
template <class T>
QLIP_HOST_DEVICE inline T lamb_direction(T p, T m, T v, const LambScalars<T>& c) {
  const T m_hat = m / c.bias_correction1;
  const T v_hat = v / c.bias_correction2;
  return m_hat / (std::sqrt(v_hat) + c.eps) + c.weight_decay * p;
}

/// trust = ‖p‖/‖r‖ from the squared norms, 1 when either is 0 (the paper's φ is the identity here).
inline double lamb_trust_ratio(double p_norm_sq, double r_norm_sq) {
  return (p_norm_sq > 0.0 && r_norm_sq > 0.0) ? std::sqrt(p_norm_sq) / std::sqrt(r_norm_sq) : 1.0;
}

}  // namespace detail

namespace reference {

/// One AdamW step (torch.optim.AdamW, foreach=False; formulas in the file comment) over every
/// segment, element by element in double. Buffers may be float or double; each result is rounded
/// once to T.
/// @tparam T   storage type of the parameters and moments (float or double)
/// @param param      [n] flat parameter values, updated in place
/// @param grad       [n] flat gradients (read only; scaled by hp.grad_scale on the fly)
/// @param exp_avg    [n] first moment m, updated in place (zeros before the first step)
/// @param exp_avg_sq [n] second moment v, updated in place (zeros before the first step)
/// @param segments   one per tensor: offset, numel, this step's lr and weight decay
/// @throws qlip::Error naming the argument that is wrong (detail::check_optimizer_args)
template <class T>
void adamw_step(HostView<T, 1> param, HostView<const T, 1> grad, HostView<T, 1> exp_avg, HostView<T, 1> exp_avg_sq,
                std::span<const OptimizerSegment> segments, const AdamHyperParams& hp) {
  detail::check_optimizer_args("adamw_step", param, grad, exp_avg, exp_avg_sq, segments, hp);
  for (const OptimizerSegment& s : segments) {
    const detail::AdamWScalars<double> c = detail::adamw_scalars<double>(s, hp);
    for (std::int64_t i = s.offset; i < s.offset + s.numel; ++i) {
      double p = param(i), m = exp_avg(i), v = exp_avg_sq(i);
      detail::adamw_element<double>(p, static_cast<double>(grad(i)) * c.grad_scale, m, v, c);
      param(i) = static_cast<T>(p);
      exp_avg(i) = static_cast<T>(m);
      exp_avg_sq(i) = static_cast<T>(v);
    }
  }
}

/// One LAMB step (You et al. 2019 with bias correction; formulas in the file comment) over every
/// segment, in double: the moments first, with ‖p‖² and ‖r‖² summed in element order, then the
/// parameters with the tensor's trust ratio.
/// @tparam T   storage type of the parameters and moments (float or double)
/// @param param      [n] flat parameter values, updated in place
/// @param grad       [n] flat gradients (read only; scaled by hp.grad_scale on the fly)
/// @param exp_avg    [n] first moment m, updated in place
/// @param exp_avg_sq [n] second moment v, updated in place
/// @param segments   one per tensor: offset, numel, this step's lr and weight decay
/// @throws qlip::Error naming the argument that is wrong (detail::check_optimizer_args)
template <class T>
void lamb_step(HostView<T, 1> param, HostView<const T, 1> grad, HostView<T, 1> exp_avg, HostView<T, 1> exp_avg_sq,
               std::span<const OptimizerSegment> segments, const AdamHyperParams& hp) {
  detail::check_optimizer_args("lamb_step", param, grad, exp_avg, exp_avg_sq, segments, hp);
  for (const OptimizerSegment& s : segments) {
    const detail::LambScalars<double> c = detail::lamb_scalars<double>(s, hp);
    double p_sq = 0.0, r_sq = 0.0;
    for (std::int64_t i = s.offset; i < s.offset + s.numel; ++i) {
      double m = exp_avg(i), v = exp_avg_sq(i);
      detail::lamb_moments<double>(static_cast<double>(grad(i)) * c.grad_scale, m, v, c);
      exp_avg(i) = static_cast<T>(m);
      exp_avg_sq(i) = static_cast<T>(v);
      // r from the stored (rounded) moments, as the update pass below will see them.
      const double p = param(i), r = detail::lamb_direction<double>(p, exp_avg(i), exp_avg_sq(i), c);
      p_sq += p * p;
      r_sq += r * r;
    }
    const double step_scale = s.lr * detail::lamb_trust_ratio(p_sq, r_sq);
    for (std::int64_t i = s.offset; i < s.offset + s.numel; ++i) {
      const double p = param(i), r = detail::lamb_direction<double>(p, exp_avg(i), exp_avg_sq(i), c);
      param(i) = static_cast<T>(p - step_scale * r);
    }
  }
}

/// The float oracles, callable with mutable views (template deduction does not convert them).
inline void adamw_step(HostView<float, 1> param, HostView<float, 1> grad, HostView<float, 1> exp_avg,
                       HostView<float, 1> exp_avg_sq, std::span<const OptimizerSegment> segments,
                       const AdamHyperParams& hp) {
  adamw_step<float>(param, grad, exp_avg, exp_avg_sq, segments, hp);
}
inline void lamb_step(HostView<float, 1> param, HostView<float, 1> grad, HostView<float, 1> exp_avg,
                      HostView<float, 1> exp_avg_sq, std::span<const OptimizerSegment> segments,
                      const AdamHyperParams& hp) {
  lamb_step<float>(param, grad, exp_avg, exp_avg_sq, segments, hp);
}

}  // namespace reference
}  // namespace qlip
