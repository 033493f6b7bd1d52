/// @file llama_configs.hpp
/// @brief Compiled Llama configs (MODEL.md §8.3): Llama-3.2-1B, the base of the paper's UM³, and a
///        ~100M-parameter model of the same family for CPU decoding and the speed table. The small
///        test configs live with the tests; the UM³ demo config with the demo.
#pragma once

#include "qlip/nn/llama_config.hpp"

namespace qlip::llama_configs {

/// meta-llama/Llama-3.2-1B (its config.json): 16 layers of width 2048, 32 query heads over 8 kv
/// heads of 64, SwiGLU 8192, vocabulary 128256, tied embeddings; 1,235,814,400 parameters.
inline constexpr LlamaConfig kLlama32_1B{.vocab_size = 128256, .hidden = 2048, .layers = 16, .heads = 32,
                                         .kv_heads = 8, .head_dim = 64, .intermediate = 8192, .tied = true};

/// Llama-3.2-1B's run-time values: RMSNorm eps 1e-5, RoPE θ 500000 with llama3 scaling (factor 32,
/// low 1, high 4, original context 8192), context 131072, bos 128000, eos 128001.
inline LlamaRuntime llama32_runtime() {
  LlamaRuntime rt;
  rt.rms_eps = 1e-5f;
  rt.rope_theta = 500000.0f;
  rt.scaling = {.factor = 32.0f, .low_freq_factor = 1.0f, .high_freq_factor = 4.0f, .original_max_position = 8192,
                .enabled = true};
  rt.max_positions = 131072;
  rt.bos_token_id = 128000;
  rt.eos_token_id = 128001;
  return rt;
}

/// ~100M parameters (100,092,672): 12 layers of width 768, 12 query heads over 4 kv heads of 64, SwiGLU
/// 2048, a 32000-token vocabulary, tied. The decoding-speed config.
inline constexpr LlamaConfig kLlama100M{.vocab_size = 32000, .hidden = 768, .layers = 12, .heads = 12,
                                        .kv_heads = 4, .head_dim = 64, .intermediate = 2048, .tied = true};

}  // namespace qlip::llama_configs
