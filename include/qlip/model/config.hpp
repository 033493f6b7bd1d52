/// @file config.hpp
/// @brief QLIP model configurations: structural constexpr structs (used as non-type template
///        parameters and validated by concepts), the run-time values read from config.json, and the
///        list of compiled configs the loader dispatches over.
///
/// What is compile-time and what is run-time (MODEL.md §1.4, §5.4):
///  - compile-time (`QlipConfig`): every value that fixes a tensor shape or the presence of a tensor
///    — widths, depths, heads, MLP kind, sub-LN, q/k/v biases, bits, projection sizes. These decide
///    which weights exist, so the loader detects them from the checkpoint and picks the compiled
///    config that matches.
///  - run-time (`QlipRuntimeConfig`): values MODEL.md marks [UNKNOWN] that do not change any tensor
///    shape — LayerNorm eps per tower, activation of plain MLPs, whether each tower applies RoPE,
///    BSQ group size, text EOS id, logit_scale. They are read from config.json at load time (and
///    cross-checked where the weights say something), never baked into kernels, so one compiled
///    config serves a checkpoint whatever those values turn out to be.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include "qlip/core/dispatch.hpp"
#include "qlip/nn/tower_config.hpp"

namespace qlip {

/// The structural configuration of a whole QLIP checkpoint.
struct QlipConfig {
  VisionConfig vision{};
  QuantizerConfig quantizer{};
  VisionConfig decoder{};
  TextConfig text{};
  int projection_dim = 0;
  bool vision_projection_bias = true;
  bool text_projection_bias = false;
  constexpr bool operator==(const QlipConfig&) const = default;
};

/// Structural validity checks as constexpr functions; the concepts below wrap them. (Concepts
/// that pass sub-objects of a class NTTP to other concepts crash g++ 12, so the nesting happens here.)
/// The decoder reads the encoder's patch grid and the quantizer's output width.
constexpr bool is_valid(const QlipConfig& c) {
  return is_valid(c.vision) && is_valid(c.decoder) && is_valid(c.text) && c.quantizer.bits >= 1 &&
         c.quantizer.bits <= 32 && c.quantizer.hidden_post_q > 0 && c.decoder.stack.hidden == c.quantizer.hidden_post_q &&
         c.decoder.grid() == c.vision.grid() && c.decoder.channels == c.vision.channels && c.projection_dim > 0;
}

/// A whole model.
template <QlipConfig C>
concept valid_qlip = is_valid(C);

/// A compiled config tag: a type naming the checkpoint family and holding its QlipConfig.
/// @tparam T e.g. QlipB16_256
template <class T>
concept qlip_config_tag = requires {
  { T::name } -> std::convertible_to<const char*>;
  { T::config } -> std::convertible_to<QlipConfig>;
} && valid_qlip<T::config>;

// ---- run-time values (config.json) ----

/// Everything else the forward needs that is read at load time.
struct QlipRuntimeConfig {
  TowerRuntime vision{};
  TowerRuntime decoder{};
  TowerRuntime text{};
  int group_size = 0;             ///< quantizer_cfg.group_size (0 when config.json does not say)
  bool quantizer_l2_norm = true;  ///< L2-normalise before the sign (BSQ needs it; warn otherwise)
  bool code_scale_l2 = true;      ///< quantizer_cfg.l2_norm: codes are ±1/√L (else ±1)
  int eos_token_id = 49407;       ///< text pooling (first EOS; argmax when eos_token_id == 2)
  float logit_scale = 0.0f;       ///< log of the CLIP temperature; `logit_scale` tensor if present
};

// ---- the compiled configs ----

namespace detail {
inline constexpr StackConfig kEva02B{768, 12, 12, 2048, MlpKind::swiglu, true, true, false, true};
inline constexpr StackConfig kEva02L{1024, 24, 16, 2730, MlpKind::swiglu, true, true, false, true};
inline constexpr StackConfig kClipTextB{512, 12, 8, 2048, MlpKind::plain, false, true, true, true};
inline constexpr StackConfig kClipTextL{768, 12, 12, 3072, MlpKind::plain, false, true, true, true};
}  // namespace detail

/// nvidia/QLIP-B-16-256 (MODEL.md §1.4, sizes [INFERRED]; the loader verifies every shape).
struct QlipB16_256 {
  static constexpr const char* name = "qlip-b-16-256";
  static constexpr QlipConfig config{
      .vision = {256, 16, 3, detail::kEva02B},
      .quantizer = {28, 768},
      .decoder = {256, 16, 3, detail::kEva02B},
      .text = {49408, 77, detail::kClipTextB},
      .projection_dim = 512,
      .vision_projection_bias = true,
      .text_projection_bias = false,
  };
};

/// nvidia/QLIP-B-8-256.
struct QlipB8_256 {
  static constexpr const char* name = "qlip-b-8-256";
  static constexpr QlipConfig config{
      .vision = {256, 8, 3, detail::kEva02B},
      .quantizer = {28, 768},
      .decoder = {256, 8, 3, detail::kEva02B},
      .text = {49408, 77, detail::kClipTextB},
      .projection_dim = 512,
      .vision_projection_bias = true,
      .text_projection_bias = false,
  };
};

/// nvidia/QLIP-L-14-392.
struct QlipL14_392 {
  static constexpr const char* name = "qlip-l-14-392";
  static constexpr QlipConfig config{
      .vision = {392, 14, 3, detail::kEva02L},
      .quantizer = {28, 1024},
      .decoder = {392, 14, 3, detail::kEva02L},
      .text = {49408, 77, detail::kClipTextL},
      .projection_dim = 768,
      .vision_projection_bias = true,
      .text_projection_bias = false,
  };
};

/// The released checkpoint families: the default list `with_qlip_model` dispatches over. Each entry
/// instantiates the whole model once per backend, so a program that knows which checkpoint it runs
/// should pass a shorter list (or use QlipModel<Tag>::load directly); a program with checkpoints of
/// its own defines a tag like the ones above and passes a list holding it (docs/ARCHITECTURE.md,
/// "Your own config").
using ReleasedQlipConfigs = TypeList<QlipB16_256, QlipB8_256, QlipL14_392>;

namespace detail {
template <class L>
struct is_qlip_config_list : std::false_type {};
template <class... Ts>
struct is_qlip_config_list<TypeList<Ts...>> : std::bool_constant<(sizeof...(Ts) > 0) && (qlip_config_tag<Ts> && ...)> {};
}  // namespace detail

/// A non-empty TypeList of compiled config tags (what `with_qlip_model<List>` dispatches over).
template <class L>
concept qlip_config_list = detail::is_qlip_config_list<L>::value;

static_assert(qlip_config_tag<QlipB16_256> && qlip_config_tag<QlipB8_256> && qlip_config_tag<QlipL14_392>);
static_assert(qlip_config_list<ReleasedQlipConfigs>);

}  // namespace qlip
