/// @file init.hpp
/// @brief Initial values for training from scratch, by parameter name, deterministic in the seed.
///
/// The official release has no training code, so the rules follow the HF CLIP initialisation that
/// QLIP's modules inherit (CLIPPreTrainedModel._init_weights with factor 1): Linear and conv weights
/// N(0, 0.02²) (HF uses 0.02·factor for every projection of the towers we build), biases 0, LayerNorm
/// weight 1 and bias 0, token and position embeddings N(0, 0.02²), the class embedding N(0, D^-1),
/// logit_scale = ln(1/0.07) (MODEL.md §4.3). Values come from Philox(seed) indexed by the tensor's
/// position in the store, so they do not depend on thread count or on other tensors.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include "qlip/core/philox.hpp"
#include "qlip/train/parameter_store.hpp"

namespace qlip::train {

/// How one tensor is initialised.
struct InitRule {
  enum class Kind : std::uint8_t { normal, constant } kind = Kind::normal;
  double value = 0.0;  ///< std for normal, the value for constant
};

/// The rule for a parameter (see the file comment).
inline InitRule init_rule(std::string_view name, const std::vector<std::int64_t>& shape) {
  const auto ends = [&](std::string_view s) { return name.size() >= s.size() && name.substr(name.size() - s.size()) == s; };
  if (name == "logit_scale") return {InitRule::Kind::constant, std::log(1.0 / 0.07)};
  if (ends("class_embedding")) return {InitRule::Kind::normal, 1.0 / std::sqrt(static_cast<double>(shape.back()))};
  if (ends(".bias")) return {InitRule::Kind::constant, 0.0};
  const bool norm = ends("layer_norm1.weight") || ends("layer_norm2.weight") || ends("layernorm.weight") ||
                    ends("layer_norm.weight") || ends("_ln.weight") || ends("norm.weight");
  if (norm && shape.size() == 1) return {InitRule::Kind::constant, 1.0};
  return {InitRule::Kind::normal, 0.02};
}

/// Initialises every tensor of a frozen store by init_rule, from Philox(seed).
inline void initialize_parameters(ParameterStore& store, std::uint64_t seed) {
  const Philox rng(seed);
  for (std::size_t i = 0; i < store.infos().size(); ++i) {
    const ParameterInfo& info = store.infos()[i];
    const InitRule r = init_rule(info.name, info.shape);
    float* p = store.values().data() + info.offset;
    for (std::int64_t j = 0; j < info.numel; ++j) {
      p[j] = r.kind == InitRule::Kind::constant
                 ? static_cast<float>(r.value)
                 : static_cast<float>(r.value * rng.normal(static_cast<std::uint64_t>(j), static_cast<std::uint64_t>(i)));
    }
  }
}

}  // namespace qlip::train
