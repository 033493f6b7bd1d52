/// @file um3_demo_config.hpp
/// @brief The UM³ the main job trains (scripts/demo.sh, docs/UM3.md "The demo"): a small Llama over
///        the 2048-id byte BPE and the demo QLIP's codes split into 4 sub-tokens of 7 bits.
#pragma once

#include <cstdint>

#include "qlip/nn/llama_config.hpp"
#include "qlip/um3/token_layout.hpp"

namespace qlip {

/// 2048 BPE ids (256 bytes + 1792 merges) and <|bos|>, <|eos|>, <|pad|> (docs/UM3.md).
inline constexpr std::int32_t kUm3DemoTextVocab = 2048 + 3;
/// g = 7: 4 sub-tokens of 128 values per 28-bit code, one block per group (512 visual ids);
/// 256 sub-tokens for the demo QLIP's 64 patches.
inline constexpr int kUm3DemoGroupBits = 7;
inline constexpr std::int32_t kUm3DemoVocab = kUm3DemoTextVocab + 2 + 4 * 128;

inline um3::VisualTokenLayout um3_demo_layout() { return {kUm3DemoTextVocab, 28, kUm3DemoGroupBits, false}; }

/// Width 128, 4 layers, 2 query heads over 1 kv head of 64, SwiGLU 384, tied: 1.12M parameters
/// (0.33M of them the embedding), sized so that ~15 minutes on 2 cores train it (docs/UM3.md).
inline constexpr LlamaConfig kUm3Demo{.vocab_size = kUm3DemoVocab, .hidden = 128, .layers = 4, .heads = 2,
                                      .kv_heads = 1, .head_dim = 64, .intermediate = 384, .tied = true};

/// The demo's captions are at most this many BPE tokens (checked when the vocabulary is built).
inline constexpr std::int64_t kUm3DemoMaxCaption = 20;

/// The same vocabulary at width 32, one layer: what the tests train for a few steps.
inline constexpr LlamaConfig kUm3Tiny{.vocab_size = kUm3DemoVocab, .hidden = 32, .layers = 1, .heads = 2,
                                      .kv_heads = 1, .head_dim = 16, .intermediate = 64, .tied = true};

/// The compiled UM³ models, by the name um3.json gives them.
struct Um3DemoModel {
  static constexpr const char* name = "um3-demo";
  static constexpr LlamaConfig config = kUm3Demo;
};
struct Um3TinyModel {
  static constexpr const char* name = "um3-tiny";
  static constexpr LlamaConfig config = kUm3Tiny;
};

}  // namespace qlip
