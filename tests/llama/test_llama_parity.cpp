/// @file test_llama_parity.cpp
/// @brief The Llama model against Hugging Face transformers' LlamaForCausalLM on the committed
///        random-weight folders (tools/make_llama_fixtures.py): GQA and multi-head attention,
///        llama3 RoPE scaling and plain RoPE, tied and untied heads, diff-form and full-form
///        config.json, one file and shards. Logits within kF32Model (1e-4 relative); KV-cache
///        decoding, one token at a time or in chunks, equals the full recomputation; bf16 decoding
///        weights equal fp32 ones rounded to bf16.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/compare.hpp"
#include "llama/llama_test_util.hpp"
#include "qlip/cpu.hpp"
#include "qlip/io/safetensors.hpp"
#include "qlip/model/llama_checkpoint.hpp"

namespace qlip {
namespace {

using test::kLlamaGqaTied;
using test::kLlamaGqaUntiedV5;
using test::kLlamaMhaUntied;
using test::llama_fixture;

/// Ids [B, T] and transformers' logits [B, T, V] of a fixture folder.
struct Expected {
  SafetensorsFile file;
  HostView<const std::int32_t, 2> ids;
  HostView<const float, 3> logits;
};
Expected read_expected(const std::string& dir) {
  Expected e{SafetensorsFile::open(dir + "/expected.safetensors"), {}, {}};
  e.ids = e.file.view<std::int32_t, 2>("input_ids");
  e.logits = e.file.view<float, 3>("logits");
  return e;
}

/// Logits of every position of every sequence through decode() in one call (a prefill).
template <LlamaConfig C>
Tensor<float, 2> prefill_logits(const nn::LlamaModel<C, cpu_backend>& model, HostView<const std::int32_t, 2> ids) {
  const std::int64_t b = ids.size(0), t = ids.size(1);
  nn::KvCache<C> cache(b, t);
  Arena arena(model.decode_workspace_bytes(b, t));
  Tensor<float, 2> logits({b * t, C.vocab_size});
  model.decode(arena, HostView<const std::int32_t, 1>(ids.data(), {b * t}), cache, b, t, logits.view());
  return logits;
}

template <LlamaConfig C>
void expect_matches_transformers(const char* name) {
  SCOPED_TRACE(name);
  const std::string dir = llama_fixture(name);
  const auto loaded = load_llama_folder<C>(dir);
  const Expected e = read_expected(dir);
  const Tensor<float, 2> got = prefill_logits(*loaded.model, e.ids);
  const HostView<const float, 2> want(e.logits.data(), {e.logits.size(0) * e.logits.size(1), e.logits.size(2)});
  EXPECT_TRUE(test::all_close(got.view(), want, test::kF32Model));
}

TEST(LlamaParity, GqaLlama3TiedDiffFormEqualsTransformers) { expect_matches_transformers<kLlamaGqaTied>("gqa-llama3-tied"); }
TEST(LlamaParity, MhaUntiedShardedDiffFormEqualsTransformers) {
  expect_matches_transformers<kLlamaMhaUntied>("mha-untied-sharded");
}
TEST(LlamaParity, GqaUntiedFullFormV5EqualsTransformers) {
  expect_matches_transformers<kLlamaGqaUntiedV5>("gqa-untied-v5");
}

TEST(LlamaParity, DiffFormTakesTheClassDefaults) {
  const LlamaFolderConfig c = read_llama_config(llama_fixture("mha-untied-sharded"));
  EXPECT_EQ(c.structure.kv_heads, 6);  // num_key_value_heads absent: = heads
  EXPECT_EQ(c.structure.head_dim, 4);  // head_dim absent: hidden / heads
  EXPECT_FALSE(c.structure.tied);
  EXPECT_FLOAT_EQ(c.runtime.rms_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c.runtime.rope_theta, 10000.0f);
  EXPECT_FALSE(c.runtime.scaling.enabled);
  EXPECT_EQ(c.runtime.max_positions, 32);
  const std::string all = [&] {
    std::string s;
    for (const auto& d : c.defaulted) s += d + ";";
    return s;
  }();
  EXPECT_NE(all.find("rms_norm_eps"), std::string::npos) << all;
  EXPECT_NE(all.find("tie_word_embeddings"), std::string::npos) << all;
  const LlamaFolderConfig v4 = read_llama_config(llama_fixture("gqa-llama3-tied"));
  EXPECT_TRUE(v4.runtime.scaling.enabled);
  EXPECT_FLOAT_EQ(v4.runtime.scaling.factor, 8.0f);
  EXPECT_EQ(v4.runtime.scaling.original_max_position, 4);
  EXPECT_FLOAT_EQ(v4.runtime.rope_theta, 500000.0f);
  const LlamaFolderConfig v5 = read_llama_config(llama_fixture("gqa-untied-v5"));
  EXPECT_FLOAT_EQ(v5.runtime.rope_theta, 20000.0f);
  EXPECT_TRUE(v5.runtime.scaling.enabled);
  EXPECT_FLOAT_EQ(v5.runtime.scaling.high_freq_factor, 2.0f);
}

/// Decoding in chunks of `chunk` tokens (1 = token by token) through the KV cache gives the logits
/// of the full recomputation, for every position.
template <LlamaConfig C>
void expect_cache_equals_recompute(const char* name, std::int64_t chunk) {
  SCOPED_TRACE(::testing::Message() << name << ", chunks of " << chunk);
  const std::string dir = llama_fixture(name);
  const auto loaded = load_llama_folder<C>(dir);
  const Expected e = read_expected(dir);
  const std::int64_t b = e.ids.size(0), t = e.ids.size(1);
  const Tensor<float, 2> full = prefill_logits(*loaded.model, e.ids);
  nn::KvCache<C> cache(b, t + 3);  // room to spare: the cache need not be full
  Arena arena(loaded.model->decode_workspace_bytes(b, chunk));
  for (std::int64_t s = 0; s < t; s += chunk) {
    const std::int64_t n = std::min(chunk, t - s);
    Tensor<std::int32_t, 1> ids({b * n});
    for (std::int64_t i = 0; i < b; ++i)
      for (std::int64_t j = 0; j < n; ++j) ids(i * n + j) = e.ids(i, s + j);
    Tensor<float, 2> step({b * n, C.vocab_size});
    loaded.model->decode(arena, ids.view(), cache, b, n, step.view());
    for (std::int64_t i = 0; i < b; ++i) {
      const HostView<const float, 2> got = step.view().slice(0, i * n, (i + 1) * n);
      const HostView<const float, 2> want = full.view().slice(0, i * t + s, i * t + s + n);
      EXPECT_TRUE(test::all_close(got, want, test::kF32Op)) << "sequence " << i << " positions " << s;
    }
    EXPECT_EQ(cache.length(), s + n);
  }
}

TEST(LlamaKvCache, TokenByTokenEqualsRecomputation) {
  expect_cache_equals_recompute<kLlamaGqaTied>("gqa-llama3-tied", 1);
  expect_cache_equals_recompute<kLlamaMhaUntied>("mha-untied-sharded", 1);
}
TEST(LlamaKvCache, ChunksEqualRecomputation) { expect_cache_equals_recompute<kLlamaGqaUntiedV5>("gqa-untied-v5", 5); }

TEST(LlamaKvCache, LastTokenLogitsAreTheLastRows) {
  const std::string dir = llama_fixture("gqa-llama3-tied");
  const auto loaded = load_llama_folder<kLlamaGqaTied>(dir);
  const Expected e = read_expected(dir);
  const std::int64_t b = e.ids.size(0), t = e.ids.size(1);
  const Tensor<float, 2> full = prefill_logits(*loaded.model, e.ids);
  nn::KvCache<kLlamaGqaTied> cache(b, t);
  Arena arena(loaded.model->decode_workspace_bytes(b, t));
  Tensor<float, 2> last({b, kLlamaGqaTied.vocab_size});
  loaded.model->decode(arena, HostView<const std::int32_t, 1>(e.ids.data(), {b * t}), cache, b, t, last.view());
  for (std::int64_t i = 0; i < b; ++i)
    EXPECT_TRUE(test::all_close(last.view().slice(0, i, i + 1), full.view().slice(0, i * t + t - 1, i * t + t),
                                test::kF32Op));
}

/// The weights bf16 decoding multiplies by in bf16: every projection and an untied LM head (norm
/// gains and the embedding rows stay fp32).
bool decoded_in_bf16(const std::string& name) {
  return name.ends_with("_proj.weight") || name == "lm_head.weight";
}

/// With set_decode_weights(bf16) the logits (prefill: the blocked path; token by token: the
/// streaming path) equal the fp32 model's whose projection and head weights were rounded to bf16:
/// rounding is the only change. f32 afterwards gives the original model's logits back exactly.
template <LlamaConfig C>
void expect_bf16_decoding_is_rounded_weights(const char* name) {
  SCOPED_TRACE(name);
  const std::string dir = llama_fixture(name);
  auto bf = load_llama_folder<C>(dir);
  auto rounded = load_llama_folder<C>(dir);
  for (int i = 0; i < rounded.store.size(); ++i) {
    if (!decoded_in_bf16(rounded.store.info(i).name)) continue;
    HostView<float, 1> v = rounded.store.flat_view(i);
    for (std::int64_t j = 0; j < v.size(0); ++j) v(j) = static_cast<float>(bf16(v(j)));
  }
  const Expected e = read_expected(dir);
  const std::int64_t b = e.ids.size(0), t = e.ids.size(1);
  const Tensor<float, 2> fp32 = prefill_logits(*bf.model, e.ids);
  const Tensor<float, 2> want = prefill_logits(*rounded.model, e.ids);
  bf.model->set_decode_weights(nn::DecodeWeights::bf16);
  EXPECT_EQ(bf.model->decode_weights(), nn::DecodeWeights::bf16);
  EXPECT_TRUE(test::all_close(prefill_logits(*bf.model, e.ids).view(), want.view(), test::kF32Op));
  nn::KvCache<C> cache(b, t);
  Arena arena(bf.model->decode_workspace_bytes(b, 1));
  for (std::int64_t s = 0; s < t; ++s) {
    Tensor<std::int32_t, 1> ids({b});
    for (std::int64_t i = 0; i < b; ++i) ids(i) = e.ids(i, s);
    Tensor<float, 2> step({b, C.vocab_size});
    bf.model->decode(arena, ids.view(), cache, b, 1, step.view());
    for (std::int64_t i = 0; i < b; ++i)
      EXPECT_TRUE(test::all_close(step.view().slice(0, i, i + 1), want.view().slice(0, i * t + s, i * t + s + 1),
                                  test::kF32Op))
          << "sequence " << i << " position " << s;
  }
  bf.model->set_decode_weights(nn::DecodeWeights::f32);
  EXPECT_EQ(bf.model->decode_weights(), nn::DecodeWeights::f32);
  EXPECT_TRUE(test::all_close(prefill_logits(*bf.model, e.ids).view(), fp32.view(), test::kExact));
}

TEST(LlamaBf16Decoding, EqualsTheModelWithRoundedWeights) {
  expect_bf16_decoding_is_rounded_weights<kLlamaMhaUntied>("mha-untied-sharded");
  expect_bf16_decoding_is_rounded_weights<kLlamaGqaUntiedV5>("gqa-untied-v5");
}

}  // namespace
}  // namespace qlip
