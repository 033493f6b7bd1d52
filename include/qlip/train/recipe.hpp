/// @file recipe.hpp
/// @brief The optimiser settings of QLIP's two training stages (QLIP_SPEC.md §4.2, from the paper's
///        Table 8): parameter groups with their peak learning rates, the update rule, betas, weight
///        decay, clipping and the schedule.
///
/// Group indices (ParameterStore::add's `group`): vision encoder E_v (with visual_projection), text
/// encoder E_t (with text_projection), pixel decoder G, and "base" for the rest (the BSQ quantizer
/// MLPs and logit_scale), which takes the table's base peak learning rate (qlip_group_of). That the
/// quantizer uses the base rate and that each projection goes with its tower are [INFERRED]: the
/// paper lists no separate rates; the PyTorch trainer of tools/ uses the same rule, and
/// tests/train/test_train_parity.cpp checks both agree tensor by tensor. eps is not given by the paper
/// (OptimizerOptions' default).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "qlip/train/optimizer.hpp"

namespace qlip::train {

/// Group indices of the QLIP recipes.
enum QlipGroup : int { kVisionEncoderGroup = 0, kTextEncoderGroup = 1, kDecoderGroup = 2, kBaseGroup = 3 };

/// The recipe group of a QLIP parameter, by its official name.
inline QlipGroup qlip_group_of(std::string_view name) {
  if (name.starts_with("vision_decoder.")) return kDecoderGroup;
  if (name.find("quant_embed") != std::string_view::npos || name == "logit_scale") return kBaseGroup;
  if (name.starts_with("text_model.") || name.starts_with("text_projection")) return kTextEncoderGroup;
  if (name.starts_with("vision_model.") || name.starts_with("visual_projection")) return kVisionEncoderGroup;
  return kBaseGroup;
}

/// One stage's settings.
struct StageRecipe {
  std::vector<ParamGroup> groups;  ///< indexed by QlipGroup
  OptimizerOptions options;
  double max_grad_norm = 0.0;  ///< clip_grad_norm's max_norm
};

/// Stage 1: E_t, E_v, quantizer and decoder jointly; LAMB, clip 5.
inline StageRecipe qlip_stage1_recipe() {
  StageRecipe r;
  r.groups = {
      {"vision_encoder", 2e-4, 0.05}, {"text_encoder", 2e-5, 0.05}, {"decoder", 2e-3, 0.05}, {"base", 5e-4, 0.05}};
  r.options.kind = OptimizerKind::lamb;
  r.options.beta1 = 0.9;
  r.options.beta2 = 0.95;
  r.options.schedule = {2000, 120000, 0.0};
  r.max_grad_norm = 5.0;
  return r;
}

/// Stage 2: E_v frozen (lr 0), E_t dropped (lr 0), decoder 1e-4, quantizer at the base rate; AdamW,
/// clip 1. Frozen groups are better left out of the store altogether (their moments would still
/// be updated); the zero rates are here so that one store layout can serve both stages.
inline StageRecipe qlip_stage2_recipe() {
  StageRecipe r;
  r.groups = {
      {"vision_encoder", 0.0, 0.05}, {"text_encoder", 0.0, 0.05}, {"decoder", 1e-4, 0.05}, {"base", 5e-4, 0.05}};
  r.options.kind = OptimizerKind::adamw;
  r.options.beta1 = 0.9;
  r.options.beta2 = 0.95;
  r.options.schedule = {2000, 120000, 0.0};
  r.max_grad_norm = 1.0;
  return r;
}

}  // namespace qlip::train
