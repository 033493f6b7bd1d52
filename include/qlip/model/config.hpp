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

namespace qlip {

/// Activation of a plain (fc1/fc2) MLP, from `hidden_act` (HF ACT2FN names).
enum class Activation : std::uint8_t {
  gelu,        ///< "gelu": exact erf GELU
  quick_gelu,  ///< "quick_gelu": x·σ(1.702x)
};

/// Name of an Activation as config.json spells it.
constexpr const char* activation_name(Activation a) {
  return a == Activation::gelu ? "gelu" : "quick_gelu";
}

/// Feed-forward block of an encoder layer (MODEL.md §2.3).
enum class MlpKind : std::uint8_t {
  plain,   ///< QLIPMLP: fc2(ffn_ln?(act(fc1(x))))
  swiglu,  ///< QLIPSwiGLU: w3(ffn_ln?(silu(w1·x) ⊙ w2·x))
};

/// One stack of pre-LN transformer layers (text, vision encoder, pixel decoder share the layer type).
struct StackConfig {
  int hidden = 0;        ///< width D
  int layers = 0;        ///< number of QLIPEncoderLayer blocks
  int heads = 0;         ///< attention heads (head_dim = hidden / heads)
  int intermediate = 0;  ///< MLP width I
  MlpKind mlp = MlpKind::plain;
  bool subln = false;  ///< inner_attn_ln after attention and ffn_ln inside the MLP
  bool q_bias = true;
  bool k_bias = true;
  bool v_bias = true;

  constexpr int head_dim() const { return heads > 0 ? hidden / heads : 0; }
  constexpr bool operator==(const StackConfig&) const = default;
};

/// Vision encoder or pixel decoder geometry (QLIPVisionConfig / QLIPDecoderConfig).
struct VisionConfig {
  int image_size = 0;
  int patch_size = 0;
  int channels = 3;
  StackConfig stack{};

  constexpr int grid() const { return patch_size > 0 ? image_size / patch_size : 0; }  ///< S
  constexpr int patches() const { return grid() * grid(); }                             ///< N = S²
  constexpr int patch_dim() const { return channels * patch_size * patch_size; }        ///< C·p²
  constexpr bool operator==(const VisionConfig&) const = default;
};

/// BSQ bottleneck: quant_embed (D→D→L), sign, 1/√L, quant_embed_post (L→Dq→Dq) (MODEL.md §2.6).
struct QuantizerConfig {
  int bits = 28;           ///< L, the code width (embed_dim of the quantizer)
  int hidden_post_q = 0;   ///< Dq (hidden_size_post_q)
  constexpr bool operator==(const QuantizerConfig&) const = default;
};

/// Text tower (QLIPTextConfig).
struct TextConfig {
  int vocab_size = 49408;
  int context_length = 77;  ///< max_position_embeddings
  StackConfig stack{};
  constexpr bool operator==(const TextConfig&) const = default;
};

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
constexpr bool is_valid(const StackConfig& s) {
  return s.hidden > 0 && s.layers > 0 && s.heads > 0 && s.hidden % s.heads == 0 && s.intermediate > 0;
}
/// The patch grid tiles the image and head_dim allows 2-D RoPE (two axes of interleaved pairs).
constexpr bool is_valid(const VisionConfig& v) {
  return is_valid(v.stack) && v.patch_size > 0 && v.image_size % v.patch_size == 0 && v.channels > 0 &&
         v.stack.head_dim() % 4 == 0;
}
constexpr bool is_valid(const TextConfig& t) { return is_valid(t.stack) && t.vocab_size > 0 && t.context_length > 0; }
/// The decoder reads the encoder's patch grid and the quantizer's output width.
constexpr bool is_valid(const QlipConfig& c) {
  return is_valid(c.vision) && is_valid(c.decoder) && is_valid(c.text) && c.quantizer.bits >= 1 &&
         c.quantizer.bits <= 32 && c.quantizer.hidden_post_q > 0 && c.decoder.stack.hidden == c.quantizer.hidden_post_q &&
         c.decoder.grid() == c.vision.grid() && c.decoder.channels == c.vision.channels && c.projection_dim > 0;
}

/// A stack whose shapes are consistent.
template <StackConfig S>
concept valid_stack = is_valid(S);
/// A vision tower (encoder or decoder) whose geometry is consistent.
template <VisionConfig V>
concept valid_vit = is_valid(V);
/// The text tower.
template <TextConfig T>
concept valid_text = is_valid(T);
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

/// Per-tower values that do not change tensor shapes (read from config.json, MODEL.md §1.4 [UNKNOWN]).
struct TowerRuntime {
  float layer_norm_eps = 1e-5f;
  Activation act = Activation::gelu;  ///< plain-MLP activation (SwiGLU always uses SiLU)
  bool rope = false;                  ///< 2-D RoPE (vision/decoder only)
};

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
