/// @file trainer.hpp
/// @brief What happens between a backward pass and the next batch, for any stage: the non-finite
///        guard, global-norm clipping, the optimiser step and post-step constraints (the logit-scale
///        clamp). Stage 1 and stage 2 differ in their objective and parameter groups, not here.
///
/// A step whose loss or gradient norm is NaN/Inf is skipped (no parameter or moment changes, the
/// step count does not advance) and reported; `max_nonfinite_in_row` such steps in a row stop
/// training with a qlip::Error that says so (a diverged run, not a bad batch).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>

#include "qlip/core/error.hpp"
#include "qlip/train/clip_grad.hpp"
#include "qlip/train/optimizer.hpp"
#include "qlip/train/parameter_store.hpp"

namespace qlip::train {

struct TrainerOptions {
  double grad_clip = 5.0;         ///< max global gradient norm (MODEL.md §4.2: 5 in stage 1, 1 in stage 2)
  int max_nonfinite_in_row = 5;   ///< stop after this many skipped steps in a row
};

/// What apply() did with one step's gradients.
struct StepOutcome {
  bool applied = false;     ///< false: skipped (non-finite loss or gradient)
  double grad_norm = 0.0;   ///< before clipping
  double clip_coef = 1.0;   ///< the factor the gradients were used with
  std::int64_t step = 0;    ///< optimiser steps taken after this one
  double lr_factor = 0.0;   ///< schedule factor of the step (0 when skipped)
  int nonfinite_in_row = 0;
};

class Trainer {
 public:
  /// @param after_step called after every applied step (e.g. clamp the logit scale)
  Trainer(ParameterStore& store, Optimizer& optimizer, TrainerOptions options,
          std::function<void()> after_step = {})
      : store_(store), opt_(optimizer), options_(options), after_step_(std::move(after_step)) {
    QLIP_CHECK(options_.max_nonfinite_in_row >= 1, "Trainer: max_nonfinite_in_row must be ≥ 1, got ",
               options_.max_nonfinite_in_row);
  }

  /// Uses the gradients now in the store (for the batch whose loss was `loss`).
  /// @throws qlip::Error after max_nonfinite_in_row non-finite steps in a row
  StepOutcome apply(double loss) {
    StepOutcome out;
    out.grad_norm = grad_norm(store_);
    if (!std::isfinite(loss) || !std::isfinite(out.grad_norm)) {
      ++nonfinite_in_row_;
      out.nonfinite_in_row = nonfinite_in_row_;
      out.step = opt_.step_count();
      ++skipped_;
      QLIP_CHECK(nonfinite_in_row_ < options_.max_nonfinite_in_row, "training stopped: ", nonfinite_in_row_,
                 " steps in a row had a non-finite loss or gradient (last loss ", loss, ", gradient norm ",
                 out.grad_norm, "); lower the learning rate or check the data");
      return out;
    }
    nonfinite_in_row_ = 0;
    out.clip_coef = clip_coefficient(out.grad_norm, options_.grad_clip);
    const StepReport r = opt_.step(out.clip_coef);
    if (after_step_) after_step_();
    out.applied = true;
    out.step = r.step;
    out.lr_factor = r.lr_factor;
    return out;
  }

  /// Steps skipped so far (non-finite).
  std::int64_t skipped() const { return skipped_; }

 private:
  ParameterStore& store_;
  Optimizer& opt_;
  TrainerOptions options_;
  std::function<void()> after_step_;
  int nonfinite_in_row_ = 0;
  std::int64_t skipped_ = 0;
};

}  // namespace qlip::train
