/// @file test_llama_folder.cpp
/// @brief Hugging Face Llama folders: a folder qlip writes (one file and shards) loads back to the
///        same bits and the same logits; every bad input is a one-line error that names it (a
///        config contradicting its weights, a folder of another compiled config, unsupported
///        features, token ids out of range, a prompt longer than the context); Llama-3.2-1B
///        compiles, instantiates and runs a forward.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/compare.hpp"
#include "llama/llama_test_util.hpp"
#include "qlip/cpu.hpp"
#include "qlip/io/json.hpp"
#include "qlip/model/llama_checkpoint.hpp"
#include "qlip/model/llama_configs.hpp"

namespace qlip {
namespace {

namespace fs = std::filesystem;
using test::expect_error_naming;
using test::kLlamaGqaTied;
using test::kLlamaMhaUntied;
using test::llama_fixture;

fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::path(::testing::TempDir()) / ("qlip_llama_" + name);
  fs::remove_all(d);
  return d;
}

/// A copy of a fixture folder whose config.json has `key` set to `value` (null removes nothing: it
/// states null).
fs::path fixture_with(const char* fixture, const std::string& key, const nlohmann::json& value) {
  const fs::path d = fresh_dir(std::string(fixture) + "_" + key);
  fs::copy(llama_fixture(fixture), d);
  nlohmann::json j = read_json((d / "config.json").string());
  j[key] = value;
  std::ofstream(d / "config.json") << j.dump(2);
  return d;
}

template <LlamaConfig C>
Tensor<float, 2> logits_of(const nn::LlamaModel<C, cpu_backend>& model, const std::vector<std::int32_t>& ids) {
  const auto t = static_cast<std::int64_t>(ids.size());
  nn::KvCache<C> cache(1, t);
  Arena arena(model.decode_workspace_bytes(1, t));
  Tensor<float, 2> logits({t, C.vocab_size});
  model.decode(arena, HostView<const std::int32_t, 1>(ids.data(), {t}), cache, 1, t, logits.view());
  return logits;
}

template <LlamaConfig C>
void expect_round_trip(const char* fixture, std::int64_t shard_bytes, bool expect_index) {
  SCOPED_TRACE(fixture);
  const auto src = load_llama_folder<C>(llama_fixture(fixture));
  const fs::path out = fresh_dir(std::string("written_") + fixture);
  save_llama_folder(out.string(), *src.model, shard_bytes);
  EXPECT_EQ(fs::exists(out / "model.safetensors.index.json"), expect_index);
  const auto back = load_llama_folder<C>(out.string());
  ASSERT_EQ(back.store.buffer_size(), src.store.buffer_size());
  EXPECT_EQ(std::memcmp(back.store.values().data(), src.store.values().data(),
                        static_cast<std::size_t>(src.store.buffer_size()) * sizeof(float)),
            0);
  EXPECT_EQ(back.config.structure, src.config.structure);
  EXPECT_FLOAT_EQ(back.config.runtime.rms_eps, src.config.runtime.rms_eps);
  EXPECT_FLOAT_EQ(back.config.runtime.rope_theta, src.config.runtime.rope_theta);
  EXPECT_EQ(back.config.runtime.scaling.enabled, src.config.runtime.scaling.enabled);
  EXPECT_TRUE(back.config.defaulted.empty()) << "a written config.json states every field";
  const std::vector<std::int32_t> ids{1, 5, 2, 7, 3};
  EXPECT_TRUE(test::all_close(logits_of(*back.model, ids).view(), logits_of(*src.model, ids).view(), test::kExact));
  // A folder to check with transformers: QLIP_LLAMA_EXPORT=dir keeps one (tools/check_llama_folder.py).
  if (const char* keep = std::getenv("QLIP_LLAMA_EXPORT")) {
    const fs::path k = fs::path(keep) / fixture;
    fs::remove_all(k);
    save_llama_folder(k.string(), *src.model, shard_bytes);
    SafetensorsWriter w;
    Tensor<std::int32_t, 2> id_tensor({1, static_cast<std::int64_t>(ids.size())});
    for (std::size_t i = 0; i < ids.size(); ++i) id_tensor(0, static_cast<std::int64_t>(i)) = ids[i];
    w.add("input_ids", id_tensor.view());
    w.add("logits", logits_of(*src.model, ids).view());
    w.write((k / "qlip_logits.safetensors").string());
  }
}

TEST(LlamaFolder, WrittenSingleFileReadsBackBitForBit) { expect_round_trip<kLlamaGqaTied>("gqa-llama3-tied", 1 << 30, false); }
TEST(LlamaFolder, WrittenShardsReadBackBitForBit) { expect_round_trip<kLlamaMhaUntied>("mha-untied-sharded", 8000, true); }

TEST(LlamaFolder, ConfigContradictingTheWeightsIsAnError) {
  expect_error_naming([] { (void)load_llama_folder<kLlamaGqaTied>(fixture_with("gqa-llama3-tied", "vocab_size", 41).string()); },
                      "contradicts the weights");
  expect_error_naming([] { (void)load_llama_folder<kLlamaGqaTied>(fixture_with("gqa-llama3-tied", "num_key_value_heads", 4).string()); },
                      "num_key_value_heads");
  expect_error_naming([] { (void)load_llama_folder<kLlamaGqaTied>(fixture_with("gqa-llama3-tied", "num_hidden_layers", 3).string()); },
                      "num_hidden_layers = 3, the weights have fewer layers");
  expect_error_naming([] { (void)load_llama_folder<kLlamaMhaUntied>(fixture_with("mha-untied-sharded", "num_hidden_layers", 2).string()); },
                      "have more layers");
  expect_error_naming([] { (void)load_llama_folder<kLlamaGqaTied>(fixture_with("gqa-llama3-tied", "tie_word_embeddings", false).string()); },
                      "no lm_head.weight");
}

TEST(LlamaFolder, AnotherCompiledConfigIsNamed) {
  expect_error_naming([] { (void)load_llama_folder<kLlamaMhaUntied>(llama_fixture("gqa-llama3-tied")); },
                      "hidden_size 16 (compiled 24)");
}

TEST(LlamaFolder, UnsupportedFeaturesAreRefusedByName) {
  expect_error_naming([] { (void)read_llama_config(fixture_with("gqa-llama3-tied", "attention_bias", true).string()); },
                      "attention_bias");
  expect_error_naming([] { (void)read_llama_config(fixture_with("gqa-llama3-tied", "hidden_act", "gelu").string()); },
                      "hidden_act");
  expect_error_naming(
      [] {
        (void)read_llama_config(
            fixture_with("gqa-llama3-tied", "rope_scaling", nlohmann::json{{"rope_type", "yarn"}, {"factor", 2.0}}).string());
      },
      "\"yarn\" is not supported");
  expect_error_naming([] { (void)read_llama_config(fixture_with("gqa-llama3-tied", "model_type", "mistral").string()); },
                      "model_type");
  expect_error_naming([] { (void)read_llama_config(fixture_with("gqa-llama3-tied", "vocab_size", "40").string()); },
                      "vocab_size");
}

TEST(LlamaFolder, BadTokensAreOneLineErrors) {
  const auto m = load_llama_folder<kLlamaGqaTied>(llama_fixture("gqa-llama3-tied"));
  nn::KvCache<kLlamaGqaTied> cache(1, 8);
  Arena arena(m.model->decode_workspace_bytes(1, 9));
  Tensor<float, 2> logits({1, kLlamaGqaTied.vocab_size});
  std::vector<std::int32_t> ids{1, 40, 2};
  expect_error_naming(
      [&] { m.model->decode(arena, HostView<const std::int32_t, 1>(ids.data(), {3}), cache, 1, 3, logits.view()); },
      "token id 40 at 1 is outside the vocabulary of 40");
  ids = {1, -3, 2};
  expect_error_naming(
      [&] { m.model->decode(arena, HostView<const std::int32_t, 1>(ids.data(), {3}), cache, 1, 3, logits.view()); },
      "token id -3");
  EXPECT_EQ(cache.length(), 0) << "a refused step appends nothing";
  const std::vector<std::int32_t> long_prompt(9, 1);
  expect_error_naming(
      [&] {
        m.model->decode(arena, HostView<const std::int32_t, 1>(long_prompt.data(), {9}), cache, 1, 9, logits.view());
      },
      "9 positions exceed the context of 8");
  EXPECT_EQ(cache.length(), 0);
}

TEST(LlamaFolder, Llama32OneBInstantiatesAndRunsAForward) {
  using namespace llama_configs;
  using Model = nn::LlamaModel<kLlama32_1B, cpu_backend>;
  LlamaRuntime rt = llama32_runtime();
  rt.max_positions = 64;  // the table of 131072 positions is not needed for 4 tokens
  auto model = std::make_unique<Model>(rt);
  train::ParameterStore store;
  bind_llama(*model, store, train::Gradients::none);
  EXPECT_EQ(store.parameter_count(), 1'235'814'400);
  EXPECT_FALSE(store.has_gradients());
  // Cheap deterministic weights (a random fill of 1.2B values would dominate the test's time).
  HostView<float, 1> v = store.values();
  const std::int64_t n = v.size(0);
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) v(i) = 0.02f * static_cast<float>((i * 2654435761u) % 2001 - 1000) / 1000.0f;
  nn::KvCache<kLlama32_1B> cache(1, 8);
  Arena arena(Model::decode_workspace_bytes(1, 4));
  Tensor<float, 2> logits({1, kLlama32_1B.vocab_size});
  const std::vector<std::int32_t> ids{128000, 791, 4062, 14198};
  model->decode(arena, HostView<const std::int32_t, 1>(ids.data(), {4}), cache, 1, 4, logits.view());
  std::int64_t finite = 0;
  float spread = 0.0f;
  for (std::int64_t j = 0; j < logits.size(1); ++j) {
    finite += std::isfinite(logits(0, j)) ? 1 : 0;
    spread = std::max(spread, std::fabs(logits(0, j) - logits(0, 0)));
  }
  EXPECT_EQ(finite, kLlama32_1B.vocab_size);
  EXPECT_GT(spread, 0.0f) << "logits must depend on the token";
  EXPECT_EQ(cache.length(), 4);
}

}  // namespace
}  // namespace qlip
