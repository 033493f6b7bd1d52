/// @file llama_test_util.hpp
/// @brief What the Llama tests share: the compiled configs of the committed fixture folders
///        (tests/data/llama, tools/make_llama_fixtures.py), their paths, and random weights.
#pragma once

#include <cstdint>
#include <string>

#include "qlip/core/philox.hpp"
#include "qlip/nn/llama_config.hpp"
#include "qlip/train/parameter_store.hpp"

namespace qlip::test {

/// GQA 4 over 2, head_dim 8 (≠ hidden / heads), llama3 RoPE scaling, tied head; diff-form config.
inline constexpr LlamaConfig kLlamaGqaTied{.vocab_size = 40, .hidden = 16, .layers = 2, .heads = 4, .kv_heads = 2,
                                           .head_dim = 8, .intermediate = 24, .tied = true};
/// Multi-head attention, derived head_dim and kv heads, untied head, sharded weights.
inline constexpr LlamaConfig kLlamaMhaUntied{.vocab_size = 48, .hidden = 24, .layers = 3, .heads = 6, .kv_heads = 6,
                                             .head_dim = 4, .intermediate = 40, .tied = false};
/// GQA 6 over 2, untied, llama3 scaling; transformers 5's full config form.
inline constexpr LlamaConfig kLlamaGqaUntiedV5{.vocab_size = 36, .hidden = 24, .layers = 2, .heads = 6,
                                               .kv_heads = 2, .head_dim = 4, .intermediate = 32, .tied = false};

inline std::string llama_fixture(const char* name) { return std::string(QLIP_TEST_DATA_DIR) + "/llama/" + name; }

/// Fills every value of a store with N(0, scale²) (Philox(seed)), norm gains (names ending in
/// "norm.weight" or containing "layernorm") with 1 + N(0, 0.1²).
inline void randomise_llama_store(train::ParameterStore& store, std::uint64_t seed, float scale = 0.25f) {
  Philox rng(seed);
  std::uint64_t counter = 0;
  for (int i = 0; i < store.size(); ++i) {
    const std::string& name = store.info(i).name;
    const bool gain = name.find("layernorm") != std::string::npos || name.ends_with("norm.weight");
    HostView<float, 1> v = store.flat_view(i);
    for (std::int64_t j = 0; j < v.size(0); ++j) {
      const float z = rng.normal(counter++);
      v(j) = gain ? 1.0f + 0.1f * z : scale * z;
    }
  }
}

}  // namespace qlip::test
