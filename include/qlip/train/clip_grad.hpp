/// @file clip_grad.hpp
/// @brief Global gradient norm over the flat gradient buffer and clipping by it, with
///        torch.nn.utils.clip_grad_norm_'s formula (QLIP_SPEC.md §4.2: clip 5 in stage 1, 1 in stage 2).
///
///   norm = sqrt(Σ g²)                      over every gradient (one flat buffer; padding is zero)
///   coef = min(1, max_norm / (norm + 1e-6))  (torch: clip_coef = max_norm / (total_norm + 1e-6),
///                                           clamped to max 1.0; torch/nn/utils/clip_grad.py)
///   g ← g·coef
///
/// The sum is accumulated in double (ops::sum_of_squares: fixed order, the same on any thread count;
/// torch sums per-tensor norms in float). A non-finite norm (an inf or NaN gradient) is reported to
/// the caller and the gradients are left untouched: torch (error_if_nonfinite=False) would multiply
/// every gradient by NaN; skipping the step, or lowering a loss scale, is the caller's decision.
///
/// Two ways to use it: clip_grad_norm() rescales the gradients in place (what torch does), or
/// grad_norm() + clip_coefficient() and the coefficient handed to Optimizer::step(grad_scale), which
/// applies it on the fly and saves a pass over the gradients (same float products g·coef).
#pragma once

#include <algorithm>
#include <cmath>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/cpu/optimizer.hpp"
#include "qlip/train/parameter_store.hpp"

namespace qlip::train {

/// What clip_grad_norm() found and did.
struct ClipResult {
  double norm = 0.0;   ///< the global norm before clipping (may be inf or NaN)
  double coef = 1.0;   ///< the factor applied (1 when the norm was within max_norm or not finite)
  bool finite = true;  ///< false: the norm is inf/NaN and the gradients were left as they were
  bool clipped() const { return finite && coef < 1.0; }
};

/// torch's clip coefficient min(1, max_norm / (norm + 1e-6)) for a finite norm.
/// @throws qlip::Error when max_norm is not positive or norm is not finite
inline double clip_coefficient(double norm, double max_norm) {
  QLIP_CHECK(std::isfinite(max_norm) && max_norm > 0.0, "clip_coefficient: max_norm is ", max_norm, ", expected > 0");
  QLIP_CHECK(std::isfinite(norm) && norm >= 0.0, "clip_coefficient: gradient norm is ", norm,
             " (check the result of grad_norm() before clipping)");
  return std::min(1.0, max_norm / (norm + 1e-6));
}

/// The global L2 norm of a flat gradient buffer, accumulated in double.
/// @param grads [n] contiguous (ParameterStore::grads())
inline double grad_norm(HostView<const float, 1> grads) {
  return std::sqrt(ops::sum_of_squares(cpu_backend{}, grads));
}
inline double grad_norm(const ParameterStore& store) {
  return grad_norm(store.grads());
}

/// Computes the global norm and, when it is finite and above max_norm, scales every gradient by
/// clip_coefficient() (torch.nn.utils.clip_grad_norm_). Returns the pre-clip norm.
/// @param grads    [n] contiguous (ParameterStore::grads())
/// @param max_norm > 0
/// @throws qlip::Error when max_norm is not positive
inline ClipResult clip_grad_norm(HostView<float, 1> grads, double max_norm) {
  QLIP_CHECK(std::isfinite(max_norm) && max_norm > 0.0, "clip_grad_norm: max_norm is ", max_norm, ", expected > 0");
  ClipResult result;
  result.norm = grad_norm(grads);
  result.finite = std::isfinite(result.norm);
  if (!result.finite) return result;
  result.coef = clip_coefficient(result.norm, max_norm);
  // coef == 1 is torch's multiply by 1.0: nothing changes, so the pass is skipped.
  if (result.coef < 1.0) ops::scale_in_place(cpu_backend{}, grads, static_cast<float>(result.coef));
  return result;
}
inline ClipResult clip_grad_norm(ParameterStore& store, double max_norm) {
  return clip_grad_norm(store.grads(), max_norm);
}

}  // namespace qlip::train
