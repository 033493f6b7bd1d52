/// @file scratch_model.hpp
/// @brief A trainable model from scratch: the run-time values (config.json fields the compiled
///        config does not fix) the released models use, the stage-1 quantiser losses, and the flat
///        parameter store in state_dict order with the recipe's groups, bound to the model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qlip/model/qlip_trainable.hpp"
#include "qlip/train/parameter_store.hpp"
#include "qlip/train/recipe.hpp"

namespace qlip::train {

/// config.json values of a model trained from scratch (the released models' choices: MODEL.md §1.4).
inline QlipRuntimeConfig scratch_runtime() {
  QlipRuntimeConfig rt;
  rt.vision = {1e-6f, Activation::gelu, true};
  rt.decoder = {1e-6f, Activation::gelu, true};
  rt.text = {1e-5f, Activation::gelu, false};
  rt.group_size = 4;
  rt.eos_token_id = 49407;
  rt.logit_scale = 2.6592f;
  return rt;
}

/// The quantiser losses of the released config (quantizer_cfg: T = 100, g = 4, γ0 = γ1 = 1, "group")
/// with the commitment weight β = 1 of the stage-1 recipe (α_z = 1, MODEL.md §4.2).
inline BsqLossConfig scratch_bsq() {
  BsqLossConfig b;
  b.inv_temperature = 100.0;
  b.group_size = 4;
  b.gamma0 = 1.0;
  b.gamma1 = 1.0;
  b.beta = 1.0;
  b.mode = BsqEntropyMode::group;
  b.l2_norm = true;
  return b;
}

/// Registers every parameter of `model` in `store` (state_dict order, recipe groups, decay flags),
/// freezes the store and binds the model's parameters to it.
template <class Model>
void bind_to_store(Model& model, ParameterStore& store) {
  bind_parameters(model, store, [](const std::string& name, std::size_t rank) {
    return std::pair{qlip_group_of(name), !default_no_decay(name, rank)};
  });
}

}  // namespace qlip::train
