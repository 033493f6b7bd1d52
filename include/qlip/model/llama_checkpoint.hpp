/// @file llama_checkpoint.hpp
/// @brief Hugging Face Llama folders (config.json + model.safetensors, or shards listed by
///        model.safetensors.index.json): reading the config with LlamaConfig's class defaults for
///        absent fields (save_pretrained may omit them), checking it against the weights and the
///        compiled config, loading weights by name into a LlamaModel, and writing a folder that
///        transformers' LlamaForCausalLM.from_pretrained loads (MODEL.md §8.3).
///
/// Both spellings of the RoPE settings are read: `rope_theta` + `rope_scaling` (transformers 4,
/// the released Llama-3.2 files) and `rope_parameters` (transformers 5). Only the "default" and
/// "llama3" RoPE types exist here; any other is refused by name. Written folders use the
/// transformers-4 spelling, which transformers 5 also reads.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qlip/core/error.hpp"
#include "qlip/io/json.hpp"
#include "qlip/io/safetensors.hpp"
#include "qlip/model/checkpoint.hpp"
#include "qlip/nn/llama.hpp"
#include "qlip/nn/llama_config.hpp"
#include "qlip/train/parameter_store.hpp"

namespace qlip {

/// What a folder's config.json says, with every absent field at LlamaConfig's default.
struct LlamaFolderConfig {
  LlamaConfig structure{};
  LlamaRuntime runtime{};
  std::vector<std::string> defaulted;  ///< "field = value" for each field config.json left out
};

/// transformers' LlamaConfig defaults, as config.json spells them. num_key_value_heads and head_dim
/// default to null: the class then derives them (heads, hidden / heads).
inline const nlohmann::json& llama_config_defaults() {
  static const nlohmann::json defaults = nlohmann::json::parse(R"({"": {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": false, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2,
    "attention_bias": false, "mlp_bias": false, "hidden_act": "silu"}})");
  return defaults;
}

namespace detail {

/// rope_type of a rope_scaling / rope_parameters object ("type" is the older key).
inline std::string rope_type_of(const nlohmann::json& r, const std::string& path, const char* field) {
  for (const char* key : {"rope_type", "type"}) {
    const auto it = r.find(key);
    if (it != r.end() && !it->is_null()) {
      QLIP_CHECK(it->is_string(), path, ": field ", field, ".", key, " must be a string");
      return it->get<std::string>();
    }
  }
  return "default";
}

/// Reads the llama3 frequency-scaling fields of a rope object (section = its field name).
inline Llama3Scaling read_llama3_scaling(const ConfigReader& c, const std::string& section) {
  auto need = [&](const char* key) {
    QLIP_CHECK(c.stated(section, key) != nullptr, c.path(), ": field ", section, ".", key,
               " is required for rope_type llama3");
  };
  for (const char* key : {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
    need(key);
  Llama3Scaling s;
  s.enabled = true;
  s.factor = static_cast<float>(c.number(section, "factor", 0.0, 1e9, true));
  s.low_freq_factor = static_cast<float>(c.number(section, "low_freq_factor", 0.0, 1e9, true));
  s.high_freq_factor = static_cast<float>(c.number(section, "high_freq_factor", 0.0, 1e9, true));
  s.original_max_position = c.int_in(section, "original_max_position_embeddings", 1, 1 << 24);
  QLIP_CHECK(s.high_freq_factor > s.low_freq_factor, c.path(), ": field ", section,
             ".high_freq_factor must exceed low_freq_factor");
  return s;
}

/// The first id of an id field that may be an integer or a list of integers (Llama-3 instruct
/// files list several eos ids; generation stops at the first here).
inline std::int32_t first_token_id(const ConfigReader& c, const nlohmann::json& j, const char* key,
                                   std::int32_t fallback) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  const nlohmann::json& v = it->is_array() && !it->empty() ? it->front() : *it;
  QLIP_CHECK(v.is_number_integer() && v.get<std::int64_t>() >= 0 && v.get<std::int64_t>() < (1 << 30), c.path(),
             ": field ", key, " must be a token id or a list of them, got ", json_excerpt(*it, 60));
  return static_cast<std::int32_t>(v.get<std::int64_t>());
}

}  // namespace detail

/// Reads `<dir>/config.json`. Throws (naming the file and the field) on a wrong type, a value out
/// of range, a model type or feature this model does not have (biases, another activation or RoPE).
inline LlamaFolderConfig read_llama_config(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  const nlohmann::json j = read_json(path);
  const detail::ConfigReader c(j, path, llama_config_defaults());
  if (const nlohmann::json* mt = c.stated("", "model_type"))
    QLIP_CHECK(mt->is_string() && mt->get<std::string>() == "llama", path, ": model_type is ", json_excerpt(*mt, 40),
               ", expected \"llama\"");
  QLIP_CHECK(c.text("", "hidden_act") == "silu", path, ": hidden_act must be \"silu\" (SwiGLU), got \"",
             c.text("", "hidden_act"), "\"");
  QLIP_CHECK(!c.boolean("", "attention_bias") && !c.boolean("", "mlp_bias"), path,
             ": attention_bias and mlp_bias must be false (this Llama has no biases)");
  LlamaFolderConfig out;
  LlamaConfig& s = out.structure;
  constexpr int kMax = 1 << 20;
  s.vocab_size = c.int_in("", "vocab_size", 1, 1 << 24);
  s.hidden = c.int_in("", "hidden_size", 1, kMax);
  s.intermediate = c.int_in("", "intermediate_size", 1, kMax);
  s.layers = c.int_in("", "num_hidden_layers", 1, 4096);
  s.heads = c.int_in("", "num_attention_heads", 1, 4096);
  s.kv_heads = c.stated("", "num_key_value_heads") ? c.int_in("", "num_key_value_heads", 1, 4096) : s.heads;
  QLIP_CHECK(s.heads % s.kv_heads == 0, path, ": num_attention_heads (", s.heads,
             ") must be a multiple of num_key_value_heads (", s.kv_heads, ")");
  if (c.stated("", "head_dim")) {
    s.head_dim = c.int_in("", "head_dim", 2, 4096);
  } else {
    QLIP_CHECK(s.hidden % s.heads == 0, path, ": hidden_size (", s.hidden, ") is not a multiple of ",
               "num_attention_heads (", s.heads, ") and head_dim is absent");
    s.head_dim = s.hidden / s.heads;
  }
  QLIP_CHECK(s.head_dim % 2 == 0, path, ": head_dim must be even for RoPE, got ", s.head_dim);
  s.tied = c.boolean("", "tie_word_embeddings");
  LlamaRuntime& rt = out.runtime;
  rt.max_positions = c.integer("", "max_position_embeddings", 1, std::int64_t{1} << 24);
  rt.rms_eps = static_cast<float>(c.number("", "rms_norm_eps", 0.0, 1.0, true));
  rt.bos_token_id = detail::first_token_id(c, j, "bos_token_id", 1);
  rt.eos_token_id = detail::first_token_id(c, j, "eos_token_id", 2);
  // RoPE: transformers 5 nests θ and the scaling in rope_parameters; transformers 4 spells them
  // rope_theta and rope_scaling.
  const bool v5 = c.stated("", "rope_parameters") != nullptr;
  const std::string rope_section = v5 ? "rope_parameters" : "rope_scaling";
  rt.rope_theta = static_cast<float>(v5 && c.stated(rope_section, "rope_theta")
                                         ? c.number(rope_section, "rope_theta", 0.0, 1e12, true)
                                         : c.number("", "rope_theta", 0.0, 1e12, true));
  if (const nlohmann::json* r = c.stated("", rope_section)) {
    QLIP_CHECK(r->is_object(), path, ": field ", rope_section, " must be a JSON object or null");
    const std::string type = detail::rope_type_of(*r, path, rope_section.c_str());
    if (type == "llama3")
      rt.scaling = detail::read_llama3_scaling(c, rope_section);
    else
      QLIP_CHECK(type == "default", path, ": ", rope_section, ".rope_type \"", type,
                 "\" is not supported (only \"default\" and \"llama3\")");
  }
  out.defaulted = c.defaulted();
  return out;
}

/// The weights of a folder: model.safetensors, or the shards model.safetensors.index.json lists.
/// A WeightSource that routes each name to its file.
class LlamaFolderWeights final : public nn::WeightSource {
 public:
  explicit LlamaFolderWeights(const std::string& dir) {
    namespace fs = std::filesystem;
    const fs::path index = fs::path(dir) / "model.safetensors.index.json";
    if (fs::exists(index)) {
      const nlohmann::json j = read_json(index.string());
      const auto map = j.find("weight_map");
      QLIP_CHECK(map != j.end() && map->is_object(), index.string(), ": no weight_map object");
      std::map<std::string, int> file_index;
      for (const auto& [name, file] : map->items()) {
        QLIP_CHECK(file.is_string(), index.string(), ": weight_map entry '", name, "' is not a file name");
        const std::string f = file.get<std::string>();
        QLIP_CHECK(f.find('/') == std::string::npos && f.find("..") == std::string::npos, index.string(),
                   ": weight_map entry '", name, "' names a file outside the folder: ", f);
        auto [it, added] = file_index.emplace(f, static_cast<int>(files_.size()));
        if (added) open_file((fs::path(dir) / f).string());
        route_[name] = it->second;
      }
      for (const auto& [name, i] : route_)
        QLIP_CHECK(files_[i]->contains(name), index.string(), ": tensor '", name, "' is listed in ",
                   files_[i]->path(), ", which does not hold it");
    } else {
      const fs::path single = fs::path(dir) / "model.safetensors";
      QLIP_CHECK(fs::exists(single), dir, ": no model.safetensors or model.safetensors.index.json");
      open_file(single.string());
      for (const auto& t : files_[0]->tensors()) route_[t.name] = 0;
    }
  }

  bool contains(const std::string& name) const override { return route_.count(name) > 0; }
  std::vector<std::string> names() const override {
    std::vector<std::string> out;
    for (const auto& [name, i] : route_) out.push_back(name);
    return out;
  }
  std::vector<std::int64_t> shape_of(const std::string& name) const override { return source(name).shape_of(name); }
  void read(const std::string& name, std::span<const std::int64_t> shape, float* dst) override {
    source(name).read(name, shape, dst);
  }

 private:
  void open_file(const std::string& path) {
    files_.push_back(std::make_unique<SafetensorsFile>(SafetensorsFile::open(path)));
    sources_.push_back(std::make_unique<SafetensorsWeights>(*files_.back()));
  }
  SafetensorsWeights& source(const std::string& name) const {
    const auto it = route_.find(name);
    QLIP_CHECK(it != route_.end(), "llama folder: missing tensor '", name, "' (the model needs it)");
    return *sources_[static_cast<std::size_t>(it->second)];
  }
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<std::unique_ptr<SafetensorsWeights>> sources_;
  std::map<std::string, int> route_;
};

/// Throws when the folder's config contradicts its weights: the shapes of the embedding, of layer
/// 0's projections, the number of layers and whether lm_head.weight is present.
inline void check_llama_weights(const LlamaFolderConfig& cfg, const nn::WeightSource& w, const std::string& dir) {
  const LlamaConfig& s = cfg.structure;
  auto expect_shape = [&](const std::string& name, std::vector<std::int64_t> want, const char* fields) {
    QLIP_CHECK(w.contains(name), dir, ": missing tensor '", name, "'");
    const std::vector<std::int64_t> got = w.shape_of(name);
    QLIP_CHECK(got == want, dir, ": config.json (", fields, ") contradicts the weights: '", name, "' has shape ",
               detail::vec_string(got), ", the config says ", detail::vec_string(want));
  };
  expect_shape("model.embed_tokens.weight", {s.vocab_size, s.hidden}, "vocab_size, hidden_size");
  expect_shape("model.layers.0.self_attn.q_proj.weight", {s.q_width(), s.hidden}, "num_attention_heads, head_dim");
  expect_shape("model.layers.0.self_attn.k_proj.weight", {s.kv_width(), s.hidden}, "num_key_value_heads, head_dim");
  expect_shape("model.layers.0.mlp.gate_proj.weight", {s.intermediate, s.hidden}, "intermediate_size");
  const std::string last = "model.layers." + std::to_string(s.layers - 1) + ".input_layernorm.weight";
  const std::string beyond = "model.layers." + std::to_string(s.layers) + ".input_layernorm.weight";
  QLIP_CHECK(w.contains(last) && !w.contains(beyond), dir, ": config.json says num_hidden_layers = ", s.layers,
             ", the weights ", w.contains(beyond) ? "have more layers" : "have fewer layers");
  QLIP_CHECK(s.tied || w.contains("lm_head.weight"), dir,
             ": tie_word_embeddings is false but the weights have no lm_head.weight");
}

/// Throws unless the folder's structure is the compiled config C, naming each difference.
template <LlamaConfig C>
void check_compiled_llama(const LlamaFolderConfig& cfg, const std::string& dir) {
  const LlamaConfig& s = cfg.structure;
  std::string diff;
  auto cmp = [&](const char* field, std::int64_t got, std::int64_t want) {
    if (got != want) diff += std::string(diff.empty() ? "" : ", ") + field + " " + std::to_string(got) + " (compiled " +
                             std::to_string(want) + ")";
  };
  cmp("vocab_size", s.vocab_size, C.vocab_size);
  cmp("hidden_size", s.hidden, C.hidden);
  cmp("num_hidden_layers", s.layers, C.layers);
  cmp("num_attention_heads", s.heads, C.heads);
  cmp("num_key_value_heads", s.kv_heads, C.kv_heads);
  cmp("head_dim", s.head_dim, C.head_dim);
  cmp("intermediate_size", s.intermediate, C.intermediate);
  cmp("tie_word_embeddings", s.tied ? 1 : 0, C.tied ? 1 : 0);
  QLIP_CHECK(diff.empty(), dir, ": this Llama is not the compiled config: ", diff);
}

/// A loaded Llama: its parameters in a flat store (values only unless gradients are asked for).
template <LlamaConfig C, backend B>
struct LoadedLlama {
  train::ParameterStore store;
  std::unique_ptr<nn::LlamaModel<C, B>> model;  // heap: Llama-sized arrays of blocks stay off the stack
  LlamaFolderConfig config;
};

/// Registers the model's parameters in a new store and binds them (decay as the default rule).
template <LlamaConfig C, backend B>
void bind_llama(nn::LlamaModel<C, B>& model, train::ParameterStore& store, train::Gradients gradients) {
  train::bind_parameters(
      model, store,
      [](const std::string& name, std::size_t rank) { return std::pair{0, !train::default_no_decay(name, rank)}; },
      gradients);
}

/// Copies every parameter of `model` from `src` by HF name (converting F16/BF16 to float32).
template <LlamaConfig C, backend B>
void read_llama_weights(nn::LlamaModel<C, B>& model, nn::WeightSource& src) {
  model.visit_parameters([&](const std::string& name, auto& p) {
    src.read(name, std::span<const std::int64_t>(p.shape.data(), p.shape.size()), p.value.data());
  });
}

/// Opens a HF Llama folder for the compiled config C: config.json (defaults applied), checked
/// against the weights and against C, then every weight read by name.
template <LlamaConfig C, backend B = cpu_backend>
LoadedLlama<C, B> load_llama_folder(const std::string& dir, train::Gradients gradients = train::Gradients::none) {
  LoadedLlama<C, B> out;
  out.config = read_llama_config(dir);
  LlamaFolderWeights weights(dir);
  check_llama_weights(out.config, weights, dir);
  check_compiled_llama<C>(out.config, dir);
  out.model = std::make_unique<nn::LlamaModel<C, B>>(out.config.runtime);
  bind_llama(*out.model, out.store, gradients);
  read_llama_weights(*out.model, weights);
  return out;
}

/// config.json of a folder written by qlip: every field stated (nothing left to a default).
template <LlamaConfig C>
nlohmann::json llama_config_json(const LlamaRuntime& rt) {
  nlohmann::json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["vocab_size"] = C.vocab_size;
  j["hidden_size"] = C.hidden;
  j["intermediate_size"] = C.intermediate;
  j["num_hidden_layers"] = C.layers;
  j["num_attention_heads"] = C.heads;
  j["num_key_value_heads"] = C.kv_heads;
  j["head_dim"] = C.head_dim;
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = rt.max_positions;
  j["rms_norm_eps"] = shortest_double(rt.rms_eps);
  j["rope_theta"] = shortest_double(rt.rope_theta);
  if (rt.scaling.enabled) {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", shortest_double(rt.scaling.factor)},
                         {"low_freq_factor", shortest_double(rt.scaling.low_freq_factor)},
                         {"high_freq_factor", shortest_double(rt.scaling.high_freq_factor)},
                         {"original_max_position_embeddings", rt.scaling.original_max_position}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["tie_word_embeddings"] = C.tied;
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["bos_token_id"] = rt.bos_token_id;
  j["eos_token_id"] = rt.eos_token_id;
  j["torch_dtype"] = "float32";
  return j;
}

/// Writes a HF Llama folder (float32): the weights in shards of at most max_shard_bytes
/// (model.safetensors when one suffices, else model-0000i-of-0000n.safetensors and the index),
/// then config.json. Each file is written atomically.
template <LlamaConfig C, backend B>
void save_llama_folder(const std::string& dir, nn::LlamaModel<C, B>& model,
                       std::int64_t max_shard_bytes = std::int64_t{5} << 30) {
  namespace fs = std::filesystem;
  QLIP_CHECK(max_shard_bytes > 0, "save_llama_folder: max_shard_bytes must be positive");
  fs::create_directories(dir);
  std::vector<std::vector<SafetensorsEntry>> shards(1);
  std::int64_t in_shard = 0, total = 0;
  model.visit_parameters([&](const std::string& name, auto& p) {
    const std::int64_t bytes = p.value.numel() * static_cast<std::int64_t>(sizeof(float));
    if (in_shard > 0 && in_shard + bytes > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(safetensors_entry(name, p.value));
    in_shard += bytes;
    total += bytes;
  });
  const std::map<std::string, std::string> meta{{"format", "pt"}};
  if (shards.size() == 1) {
    write_safetensors((fs::path(dir) / "model.safetensors").string(), shards[0], meta);
  } else {
    nlohmann::json index;
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = nlohmann::json::object();
    const std::size_t n = shards.size();
    for (std::size_t i = 0; i < n; ++i) {
      char file[64];
      std::snprintf(file, sizeof file, "model-%05zu-of-%05zu.safetensors", i + 1, n);
      write_safetensors((fs::path(dir) / file).string(), shards[i], meta);
      for (const SafetensorsEntry& e : shards[i]) index["weight_map"][e.name] = file;
    }
    const std::string text = index.dump(2) + "\n";
    detail::write_file_atomic((fs::path(dir) / "model.safetensors.index.json").string(), text.data(), text.size());
  }
  const std::string config = llama_config_json<C>(model.runtime()).dump(2) + "\n";
  detail::write_file_atomic((fs::path(dir) / "config.json").string(), config.data(), config.size());
}

}  // namespace qlip
