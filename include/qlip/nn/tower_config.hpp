/// @file tower_config.hpp
/// @brief Structural configs of the towers built in nn/ (vision encoder / pixel decoder geometry, the
///        BSQ bottleneck, the text tower) and their run-time values from config.json. A whole model's
///        config (model/config.hpp) aggregates these.
#pragma once

#include "qlip/nn/block_config.hpp"

namespace qlip {

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

/// The patch grid tiles the image and head_dim allows 2-D RoPE (two axes of interleaved pairs).
constexpr bool is_valid(const VisionConfig& v) {
  return is_valid(v.stack) && v.patch_size > 0 && v.image_size % v.patch_size == 0 && v.channels > 0 &&
         v.stack.head_dim() % 4 == 0;
}
constexpr bool is_valid(const TextConfig& t) { return is_valid(t.stack) && t.vocab_size > 0 && t.context_length > 0; }
/// A vision tower (encoder or decoder) whose geometry is consistent.
template <VisionConfig V>
concept valid_vit = is_valid(V);
/// The text tower.
template <TextConfig T>
concept valid_text = is_valid(T);

// ---- run-time values (config.json) ----

/// Per-tower values that do not change tensor shapes (read from config.json, MODEL.md §1.4 [UNKNOWN]).
struct TowerRuntime {
  float layer_norm_eps = 1e-5f;
  Activation act = Activation::gelu;  ///< plain-MLP activation (SwiGLU always uses SiLU)
  bool rope = false;                  ///< 2-D RoPE (vision/decoder only)
};

}  // namespace qlip
