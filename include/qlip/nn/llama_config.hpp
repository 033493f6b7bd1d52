/// @file llama_config.hpp
/// @brief The Llama decoder's configs (MODEL.md §8.3): the structural part a model is compiled for
///        (widths, heads, key/value heads, head dim, layers, vocabulary, tied head) as a constexpr
///        struct checked by a concept, and the run-time part read from config.json (RMSNorm eps,
///        RoPE θ and llama3 scaling, context length, special ids).
#pragma once

#include <cstdint>

#include "qlip/reference/rope.hpp"

namespace qlip {

/// What a Llama model is compiled for (HF LlamaConfig's structural fields).
struct LlamaConfig {
  int vocab_size = 0;    ///< rows of embed_tokens (and lm_head)
  int hidden = 0;        ///< hidden_size D
  int layers = 0;        ///< num_hidden_layers
  int heads = 0;         ///< num_attention_heads Hq
  int kv_heads = 0;      ///< num_key_value_heads Hkv (grouped-query attention when < Hq)
  int head_dim = 0;      ///< Dh (HF: head_dim, default D / Hq)
  int intermediate = 0;  ///< SwiGLU width I
  bool tied = false;     ///< tie_word_embeddings: lm_head is embed_tokens (no lm_head.weight)

  constexpr int q_width() const { return heads * head_dim; }
  constexpr int kv_width() const { return kv_heads * head_dim; }
  constexpr bool operator==(const LlamaConfig&) const = default;
};

/// Structural validity (the concept below wraps it): positive sizes, Hq a multiple of Hkv, Dh even
/// (the half-split RoPE pairs dimension i with i + Dh/2).
constexpr bool is_valid(const LlamaConfig& c) {
  return c.vocab_size > 0 && c.hidden > 0 && c.layers > 0 && c.heads > 0 && c.kv_heads > 0 &&
         c.heads % c.kv_heads == 0 && c.head_dim > 0 && c.head_dim % 2 == 0 && c.intermediate > 0;
}

template <LlamaConfig C>
concept valid_llama = is_valid(C);

/// Run-time values of a Llama model (config.json), the same for every layer.
struct LlamaRuntime {
  float rms_eps = 1e-6f;            ///< rms_norm_eps (HF default 1e-6; Llama-3.2 uses 1e-5)
  float rope_theta = 10000.0f;      ///< rope_theta
  Llama3Scaling scaling{.enabled = false};  ///< rope_scaling {"rope_type": "llama3"}, off by default
  std::int64_t max_positions = 2048;        ///< max_position_embeddings: rows of the RoPE table
  std::int32_t bos_token_id = 1;
  std::int32_t eos_token_id = 2;
};

}  // namespace qlip
