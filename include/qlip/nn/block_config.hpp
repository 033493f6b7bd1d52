/// @file block_config.hpp
/// @brief Structural configs of the nn/ building blocks: what a transformer block is made of (norm
///        kind, MLP kind, heads and key/value heads, biases, sub-LN), and the run-time values every
///        block of a stack shares. The QLIP towers (model/config.hpp) and the Llama block reuse
///        these; nn/ never includes model/. The MLP kind and the activation are the encoder layer
///        op's (reference/encoder_layer.hpp), which the inference layers call.
#pragma once

#include <cstdint>

#include "qlip/core/backend.hpp"
#include "qlip/reference/attention.hpp"
#include "qlip/reference/encoder_layer.hpp"
#include "qlip/reference/rope.hpp"

namespace qlip {

/// Normalisation of a block.
enum class NormKind : std::uint8_t {
  layer_norm,  ///< torch.nn.LayerNorm (weight and bias)
  rms_norm,    ///< Llama RMSNorm (weight only)
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

  NormKind norm = NormKind::layer_norm;  ///< QLIP: LayerNorm; Llama: RMSNorm
  int kv_heads = 0;                      ///< grouped-query attention; 0 means kv_heads = heads
  bool mlp_bias = true;                  ///< fc1/fc2 (w1/w2/w3) biases; Llama has none

  constexpr int head_dim() const { return heads > 0 ? hidden / heads : 0; }
  constexpr int key_value_heads() const { return kv_heads > 0 ? kv_heads : heads; }
  constexpr bool operator==(const StackConfig&) const = default;
};

/// Structural validity of a stack (the concept below wraps it).
constexpr bool is_valid(const StackConfig& s) {
  const int kvh = s.key_value_heads();
  return s.hidden > 0 && s.layers > 0 && s.heads > 0 && s.hidden % s.heads == 0 && s.intermediate > 0 && kvh > 0 &&
         s.heads % kvh == 0;
}

/// A stack whose shapes are consistent.
template <StackConfig S>
concept valid_stack = is_valid(S);

namespace nn {

/// Run-time values of a block (the same for every block of a stack; from config.json).
/// @tparam T the backend's element type
/// @tparam M memory space of the RoPE table
template <class T, memory_space M>
struct BlockArgs {
  float eps = 1e-5f;                          ///< LayerNorm eps
  Activation act = Activation::gelu;          ///< plain MLP only (SwiGLU uses SiLU)
  AttentionMask mask = AttentionMask::none;   ///< causal in the text tower
  const RopeTableView<M>* rope = nullptr;     ///< nullptr: no RoPE
};

}  // namespace nn
}  // namespace qlip
