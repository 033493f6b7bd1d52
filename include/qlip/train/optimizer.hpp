/// @file optimizer.hpp
/// @brief Optimizer: a ParameterStore, its parameter groups, the learning-rate schedule and one
///        optimiser step (AdamW for stage 2, LAMB for stage 1; QLIP_SPEC.md §4.2) tied together.
///
/// Each tensor belongs to one group (ParameterInfo::group); a group has a peak learning rate and a
/// weight decay. At step t (1-based, as torch counts: the first step is t = 1) tensor i gets
///   lr_i = peak_{group(i)} · schedule.factor(t − 1)      (train/schedule.hpp)
///   wd_i = decay_i ? weight_decay_{group(i)} : 0
/// and the whole store moves in one call of the CPU op (ops::adamw_step / ops::lamb_step over the
/// flat buffers; formulas in reference/optimizer.hpp). Gradients are read, never modified.
///
/// State: the moments m (exp_avg) and v (exp_avg_sq) are two flat buffers laid out exactly like the
/// store's values (same offsets, same padding, zero before the first step), so the complete training
/// state is the store's values, these two buffers and the step count (state(); restore with
/// set_step_count() after copying the buffers back).
///
/// The store must outlive the optimiser and must not be moved while it exists (the optimiser keeps
/// a reference to it).
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/cpu/optimizer.hpp"
#include "qlip/reference/optimizer.hpp"
#include "qlip/train/parameter_store.hpp"
#include "qlip/train/schedule.hpp"

namespace qlip::train {

/// Which update rule Optimizer applies.
enum class OptimizerKind : std::uint8_t {
  adamw,  ///< torch.optim.AdamW (stage 2)
  lamb,   ///< LAMB, You et al. 2019 (stage 1)
};

/// A set of tensors sharing a peak learning rate and a weight decay.
struct ParamGroup {
  std::string name;           ///< for messages ("vision_encoder", "decoder", ...)
  double peak_lr = 0.0;       ///< ≥ 0; 0 leaves the group's values unchanged (moments still advance)
  double weight_decay = 0.0;  ///< ≥ 0; applied only to tensors whose decay flag is set
};

/// Everything but the groups.
struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::adamw;
  double beta1 = 0.9;   ///< QLIP_SPEC.md §4.2
  double beta2 = 0.95;  ///< QLIP_SPEC.md §4.2
  double eps = 1e-8;    ///< not in the paper: torch.optim.AdamW's default (LAMB codes often use 1e-6)
  CosineSchedule schedule;
};

/// The serialisable training state besides the parameter values (views into the optimiser).
struct OptimizerState {
  HostView<float, 1> exp_avg;     ///< [buffer_size] first moments, laid out like ParameterStore::values()
  HostView<float, 1> exp_avg_sq;  ///< [buffer_size] second moments, same layout
  std::int64_t step = 0;          ///< steps taken so far (t of the last step; 0 before the first)
};

/// What one step did.
struct StepReport {
  std::int64_t step = 0;   ///< t of this step (1 for the first)
  double lr_factor = 0.0;  ///< schedule.factor(t − 1): every group's lr was its peak times this
};

/// Store + groups + schedule + update rule (file comment).
class Optimizer {
 public:
  /// @param store   a frozen ParameterStore (kept by reference)
  /// @param groups  one entry per group index used by the store's tensors
  /// @param options update rule, betas, eps, schedule
  /// @throws qlip::Error when the store is not frozen, a tensor's group has no entry (naming the
  ///         tensor), or a hyper-parameter is out of range (naming it)
  Optimizer(ParameterStore& store, std::vector<ParamGroup> groups, const OptimizerOptions& options)
      : store_(store), groups_(std::move(groups)), options_(options) {
    QLIP_CHECK(store_.frozen(), "Optimizer: the ParameterStore must be frozen (call freeze()) first");
    options_.schedule.check();
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      QLIP_CHECK(std::isfinite(groups_[g].peak_lr) && groups_[g].peak_lr >= 0.0, "Optimizer: group ", g, " ('",
                 groups_[g].name, "') has peak_lr ", groups_[g].peak_lr, ", expected ≥ 0");
      QLIP_CHECK(std::isfinite(groups_[g].weight_decay) && groups_[g].weight_decay >= 0.0, "Optimizer: group ", g,
                 " ('", groups_[g].name, "') has weight_decay ", groups_[g].weight_decay, ", expected ≥ 0");
    }
    segments_.reserve(static_cast<std::size_t>(store_.size()));
    for (const ParameterInfo& info : store_.infos()) {
      QLIP_CHECK(info.group < static_cast<int>(groups_.size()), "Optimizer: parameter '", info.name, "' is in group ",
                 info.group, ", but only ", groups_.size(), " groups were given");
      segments_.push_back(OptimizerSegment{info.offset, info.numel, 0.0, 0.0});
    }
    exp_avg_ = AlignedBuffer<float>(store_.buffer_size(), true);
    exp_avg_sq_ = AlignedBuffer<float>(store_.buffer_size(), true);
    if (options_.kind == OptimizerKind::lamb)
      lamb_scratch_.resize(static_cast<std::size_t>(ops::lamb_scratch_size(segments_)));
    // The remaining checks (betas, eps) are the op's own; run them now so a bad option fails here.
    qlip::detail::check_optimizer_args("Optimizer", store_.values(), store_.grads(), state().exp_avg, state().exp_avg_sq,
                                 std::span<const OptimizerSegment>(segments_), hyper_params(1, 1.0));
  }

  /// One step at t = step_count() + 1 on the store's current gradients.
  /// @param grad_scale every gradient is used as grad·grad_scale (a clip coefficient from
  ///        clip_coefficient(), or 1/accumulation steps); finite
  /// @throws qlip::Error when grad_scale is not finite (nothing is changed then)
  StepReport step(double grad_scale = 1.0) {
    const std::int64_t t = step_ + 1;
    const double factor = options_.schedule.factor(t - 1);
    for (std::size_t i = 0; i < segments_.size(); ++i) {
      const ParameterInfo& info = store_.infos()[i];
      const ParamGroup& group = groups_[static_cast<std::size_t>(info.group)];
      segments_[i].lr = group.peak_lr * factor;
      segments_[i].weight_decay = info.decay ? group.weight_decay : 0.0;
    }
    const AdamHyperParams hp = hyper_params(t, grad_scale);
    const HostView<float, 1> m(exp_avg_.data(), {exp_avg_.size()}), v(exp_avg_sq_.data(), {exp_avg_sq_.size()});
    if (options_.kind == OptimizerKind::adamw) {
      ops::adamw_step(cpu_backend{}, store_.values(), store_.grads(), m, v, segments_, hp);
    } else {
      ops::lamb_step(cpu_backend{}, store_.values(), store_.grads(), m, v, segments_, hp, lamb_scratch_);
    }
    step_ = t;
    return {t, factor};
  }

  /// Steps taken so far.
  std::int64_t step_count() const { return step_; }
  /// Restores the step count of a saved state (copy the values and moments back first).
  /// @throws qlip::Error when negative
  void set_step_count(std::int64_t step) {
    QLIP_CHECK(step >= 0, "Optimizer: step count ", step, " is negative");
    step_ = step;
  }

  /// The learning rate the next step will use for group g.
  double next_lr(int group) const {
    QLIP_CHECK(group >= 0 && group < static_cast<int>(groups_.size()), "Optimizer: group ", group, " out of range (",
               groups_.size(), " groups)");
    return groups_[static_cast<std::size_t>(group)].peak_lr * options_.schedule.factor(step_);
  }

  /// Views of the moment buffers and the step count, for serialisation (and restoring: write into
  /// the views, then set_step_count()).
  OptimizerState state() {
    return {HostView<float, 1>(exp_avg_.data(), {exp_avg_.size()}),
            HostView<float, 1>(exp_avg_sq_.data(), {exp_avg_sq_.size()}), step_};
  }

  const std::vector<ParamGroup>& groups() const { return groups_; }
  const OptimizerOptions& options() const { return options_; }
  ParameterStore& store() { return store_; }

 private:
  AdamHyperParams hyper_params(std::int64_t t, double grad_scale) const {
    return AdamHyperParams{options_.beta1, options_.beta2, options_.eps, t, grad_scale};
  }

  ParameterStore& store_;
  std::vector<ParamGroup> groups_;
  OptimizerOptions options_;
  std::vector<OptimizerSegment> segments_;  // one per tensor; lr and wd rewritten each step
  AlignedBuffer<float> exp_avg_;
  AlignedBuffer<float> exp_avg_sq_;
  std::vector<double> lamb_scratch_;
  std::int64_t step_ = 0;
};

}  // namespace qlip::train
