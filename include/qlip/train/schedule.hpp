/// @file schedule.hpp
/// @brief Learning-rate schedule: linear warm-up, then cosine annealing to a floor
///        (QLIP_SPEC.md §4.2: cosine annealing, 2,000 warm-up iterations, 120,000 in total).
///
/// The schedule is a factor of the peak, so every parameter group's peak (E_v, E_t, decoder, base)
/// scales together: lr_g(t) = peak_g · factor(t). With t the 0-based index of the step about to be
/// taken (t = 0 for the first step; Optimizer uses its 1-based step count minus one):
///
///   t < W:       factor = (t + 1) / W
///   W ≤ t < T:   factor = ρ + ½(1 − ρ)(1 + cos(π·(t − W)/(T − W)))
///   t ≥ T:       factor = ρ
///
/// W = warmup_steps, T = total_steps, ρ = min_ratio = min/peak; so in terms of learning rates the
/// cosine part is min + ½(peak − min)(1 + cos(...)).
///
/// Why (t + 1)/W and not t/W (HF get_cosine_schedule_with_warmup, timm): with t/W the first step
/// runs at lr 0, a step that moves nothing while AdamW's moments and the step count still advance.
/// With (t + 1)/W every warm-up step moves the weights, the last warm-up step (t = W − 1) runs at
/// exactly the peak, and the cosine starts at the peak (cos 0 = 1) at t = W, so the curve is
/// continuous and reaches the peak once, at the end of warm-up.
#pragma once

#include <cmath>
#include <cstdint>

#include "qlip/core/error.hpp"

namespace qlip::train {

/// Linear warm-up then cosine annealing (file comment for the formula and the step convention).
struct CosineSchedule {
  std::int64_t warmup_steps = 0;  ///< W ≥ 0
  std::int64_t total_steps = 1;   ///< T ≥ max(W, 1): the step index at which the floor is reached
  double min_ratio = 0.0;         ///< ρ in [0, 1]: the final learning rate as a fraction of the peak

  /// @throws qlip::Error naming the field that is out of range
  void check() const {
    QLIP_CHECK(warmup_steps >= 0, "CosineSchedule: warmup_steps is ", warmup_steps, ", expected ≥ 0");
    QLIP_CHECK(total_steps >= 1 && total_steps >= warmup_steps, "CosineSchedule: total_steps is ", total_steps,
               ", expected ≥ 1 and ≥ warmup_steps (", warmup_steps, ")");
    QLIP_CHECK(min_ratio >= 0.0 && min_ratio <= 1.0, "CosineSchedule: min_ratio is ", min_ratio,
               ", expected in [0, 1]");
  }

  /// The factor of the peak learning rate for 0-based step index t.
  /// @throws qlip::Error when t < 0
  double factor(std::int64_t t) const {
    QLIP_CHECK(t >= 0, "CosineSchedule: step index ", t, " is negative (the first step is t = 0)");
    if (t < warmup_steps) return static_cast<double>(t + 1) / static_cast<double>(warmup_steps);
    if (t >= total_steps) return min_ratio;
    const double pi = 3.14159265358979323846;
    const double progress = static_cast<double>(t - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
    return min_ratio + 0.5 * (1.0 - min_ratio) * (1.0 + std::cos(pi * progress));
  }

  /// peak · factor(t).
  double lr(double peak, std::int64_t t) const { return peak * factor(t); }
};

}  // namespace qlip::train
