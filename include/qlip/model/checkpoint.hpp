/// @file checkpoint.hpp
/// @brief Reading a QLIP checkpoint folder (config.json + model.safetensors): structure detection
///        from tensor names and shapes (spec 5.4), cross-checks against config.json, the run-time
///        values, and a WeightSource over the safetensors file that converts F32/F16/BF16 to float.
///
/// Error policy (every failure is a qlip::Error):
///  - a tensor the model needs is missing → names the tensor and the file;
///  - a tensor has the wrong shape → names the tensor, the expected and the actual shape;
///  - config.json contradicts the weights → names the config field, both values and the tensor;
///  - no compiled config has the detected structure → names the differences to each compiled
///    config and lists the supported ones (see qlip_model.hpp).
/// Tensors the model does not use produce warnings (collected, never printed by the library).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qlip/core/dtype.hpp"
#include "qlip/core/error.hpp"
#include "qlip/io/safetensors.hpp"
#include "qlip/model/config.hpp"
#include "qlip/nn/parameters.hpp"

namespace qlip {

namespace detail {
inline std::string vec_string(const std::vector<std::int64_t>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}
}  // namespace detail

/// WeightSource over a memory-mapped safetensors file. Records which tensors were read, so the
/// loader can warn about the rest.
class SafetensorsWeights final : public nn::WeightSource {
 public:
  explicit SafetensorsWeights(const SafetensorsFile& file) : file_(file) {}

  bool contains(const std::string& name) const override { return file_.contains(name); }

  std::vector<std::string> names() const override {
    std::vector<std::string> out;
    out.reserve(file_.tensors().size());
    for (const auto& t : file_.tensors()) out.push_back(t.name);
    return out;
  }

  std::vector<std::int64_t> shape_of(const std::string& name) const override { return info(name).shape; }

  void read(const std::string& name, std::span<const std::int64_t> shape, float* dst) override {
    const auto& t = info(name);
    if (!std::equal(t.shape.begin(), t.shape.end(), shape.begin(), shape.end())) {
      QLIP_THROW(file_.path(), ": tensor '", name, "' has shape ", detail::vec_string(t.shape), ", expected ",
                 detail::vec_string(std::vector<std::int64_t>(shape.begin(), shape.end())));
    }
    const std::span<const std::byte> src = file_.bytes(name);
    const std::int64_t n = t.numel();
    switch (t.dtype) {
      case DType::f32:
        if (n > 0) std::memcpy(dst, src.data(), static_cast<std::size_t>(n) * 4);
        break;
      case DType::f16:
      case DType::bf16:
        for (std::int64_t i = 0; i < n; ++i) {
          std::uint16_t b;
          std::memcpy(&b, src.data() + 2 * i, 2);
          dst[i] = t.dtype == DType::f16 ? f16::to_float(b) : bf16::to_float(b);
        }
        break;
      default:
        QLIP_THROW(file_.path(), ": tensor '", name, "' has dtype ", dtype_name(t.dtype),
                   ", expected a floating-point dtype (F32, F16 or BF16)");
    }
    used_.insert(name);
  }

  void warn(const std::string& message) override { warnings_.push_back(message); }

  const std::set<std::string>& used() const { return used_; }
  std::vector<std::string>& warnings() { return warnings_; }

 private:
  const SafetensorsFile::TensorInfo& info(const std::string& name) const {
    if (!file_.contains(name)) QLIP_THROW(file_.path(), ": missing tensor '", name, "' (the model needs it)");
    return file_.info(name);
  }
  const SafetensorsFile& file_;
  std::set<std::string> used_;
  std::vector<std::string> warnings_;
};

/// What a checkpoint folder holds: the detected structure, the run-time values and the open file.
struct Checkpoint {
  std::string dir;
  std::string config_path;
  std::string weights_path;
  nlohmann::json config_json;
  QlipConfig structure{};          ///< detected from the weights (heads from config.json)
  QlipRuntimeConfig runtime{};     ///< read from config.json (+ logit_scale tensor)
  std::optional<SafetensorsFile> file;
  std::vector<std::string> warnings;
  std::map<std::string, std::int64_t> dtype_counts;  ///< "F32" → number of tensors
  std::int64_t tensor_count = 0;
  std::int64_t element_count = 0;  ///< sum of numel over every tensor in the file
};

namespace detail {

/// Reads tensor shapes for detection; a missing tensor is an error naming it and the file.
class ShapeProbe {
 public:
  explicit ShapeProbe(const SafetensorsFile& f) : f_(f) {}
  bool has(const std::string& name) const { return f_.contains(name); }
  const std::vector<std::int64_t>& shape(const std::string& name, std::size_t rank) const {
    if (!f_.contains(name)) QLIP_THROW(f_.path(), ": missing tensor '", name, "' (the model needs it)");
    const auto& s = f_.info(name).shape;
    if (s.size() != rank)
      QLIP_THROW(f_.path(), ": tensor '", name, "' has shape ", vec_string(s), ", expected rank ", rank);
    return s;
  }
  /// 1 + the largest i of "<prefix>.layers.<i>." among the tensor names (i: decimal digits only;
  /// other names are not layers). An index of kMaxLayers or more is an error naming the tensor: no
  /// real model has 4096 layers, and the count sizes allocations and loops.
  int count_layers(const std::string& prefix) const {
    constexpr int kMaxLayers = 4096;
    const std::string p = prefix + ".layers.";
    int n = 0;
    for (const auto& t : f_.tensors()) {
      if (t.name.compare(0, p.size(), p) != 0) continue;
      const std::size_t dot = t.name.find('.', p.size());
      if (dot == std::string::npos || dot == p.size()) continue;
      int index = 0;
      bool digits = true;
      for (std::size_t i = p.size(); i < dot && digits; ++i) {
        const char ch = t.name[i];
        digits = ch >= '0' && ch <= '9';
        if (digits && index < kMaxLayers) index = index * 10 + (ch - '0');  // stops growing at the cap
      }
      if (!digits) continue;
      if (index >= kMaxLayers) {
        QLIP_THROW(f_.path(), ": tensor '", t.name.substr(0, 200), "' has layer index ",
                   t.name.substr(p.size(), std::min<std::size_t>(dot - p.size(), 20)), ", above the limit of ",
                   kMaxLayers - 1);
      }
      n = std::max(n, index + 1);
    }
    if (n == 0) QLIP_THROW(f_.path(), ": no tensors named '", p, "<i>.*' (the model needs them)");
    return n;
  }
  const std::string& path() const { return f_.path(); }

 private:
  const SafetensorsFile& f_;
};

/// config.json access with the QLIP class defaults (spec 1.3) and field-named errors.
class ConfigReader {
 public:
  ConfigReader(const nlohmann::json& j, std::string path) : j_(j), path_(std::move(path)) {}

  template <class T>
  T get(const std::string& section, const std::string& key, T fallback) const {
    const nlohmann::json* node = &j_;
    if (!section.empty()) {
      if (!j_.contains(section) || !j_[section].is_object()) return fallback;
      node = &j_[section];
    }
    if (!node->contains(key) || (*node)[key].is_null()) return fallback;
    try {
      return (*node)[key].get<T>();
    } catch (const std::exception& e) {
      QLIP_THROW(path_, ": field ", field(section, key), " has the wrong type: ", e.what());
    }
  }
  bool has_section(const std::string& s) const { return j_.contains(s) && j_[s].is_object(); }
  const nlohmann::json& json() const { return j_; }
  const std::string& path() const { return path_; }
  static std::string field(const std::string& section, const std::string& key) {
    return section.empty() ? key : section + "." + key;
  }

  /// Throws when config.json states a value that contradicts what the weights say.
  template <class T>
  void expect(const std::string& section, const std::string& key, T fallback, T from_weights,
              const std::string& evidence) const {
    const T stated = get<T>(section, key, fallback);
    if (!(stated == from_weights)) {
      QLIP_THROW(path_, ": config field ", field(section, key), " = ", to_text(stated),
                 " contradicts the weights, which say ", to_text(from_weights), " (", evidence, ")");
    }
  }

 private:
  template <class T>
  static std::string to_text(const T& v) {
    if constexpr (std::is_same_v<T, bool>) {
      return v ? "true" : "false";
    } else {
      return std::to_string(v);
    }
  }
  const nlohmann::json& j_;
  std::string path_;
};

inline Activation parse_activation(const ConfigReader& c, const std::string& section) {
  const std::string a = c.get<std::string>(section, "hidden_act", "gelu");
  if (a == "gelu") return Activation::gelu;
  if (a == "quick_gelu") return Activation::quick_gelu;
  QLIP_THROW(c.path(), ": field ", ConfigReader::field(section, "hidden_act"), " = \"", a,
             "\" is not supported (supported: gelu, quick_gelu)");
}

/// Stack structure of `<prefix>.layers.*` (layer 0 decides the flags; every layer is loaded with the
/// same expectation, so a layer that differs fails with a missing-tensor or shape error).
inline StackConfig detect_stack(const ShapeProbe& p, const ConfigReader& c, const std::string& prefix,
                                const std::string& section, std::int64_t hidden) {
  StackConfig s{};
  s.hidden = static_cast<int>(hidden);
  s.layers = p.count_layers(prefix);
  const std::string l0 = prefix + ".layers.0.";
  s.mlp = p.has(l0 + "mlp.w1.weight") ? MlpKind::swiglu : MlpKind::plain;
  s.intermediate = static_cast<int>(p.shape(l0 + (s.mlp == MlpKind::swiglu ? "mlp.w1.weight" : "mlp.fc1.weight"), 2)[0]);
  s.subln = p.has(l0 + "self_attn.inner_attn_ln.weight");
  s.q_bias = p.has(l0 + "self_attn.q_proj.bias");
  s.k_bias = p.has(l0 + "self_attn.k_proj.bias");
  s.v_bias = p.has(l0 + "self_attn.v_proj.bias");
  s.heads = c.get<int>(section, "num_attention_heads", 0);
  QLIP_CHECK(s.heads > 0, c.path(), ": field ", ConfigReader::field(section, "num_attention_heads"),
             " is missing or not positive (heads cannot be derived from the weights)");
  QLIP_CHECK(hidden % s.heads == 0, c.path(), ": field ", ConfigReader::field(section, "num_attention_heads"), " = ",
             s.heads, " does not divide the width ", hidden, " of the weights");

  const std::string ev = "tensors under " + prefix + ".layers";
  c.expect<std::int64_t>(section, "hidden_size", section == "text_config" ? 512 : 768, hidden, ev);
  c.expect<int>(section, "num_hidden_layers", 12, s.layers, ev);
  c.expect<int>(section, "intermediate_size", section == "text_config" ? 2048 : 3072, s.intermediate,
                l0 + "mlp.*.weight");
  c.expect<bool>(section, "swiglu", false, s.mlp == MlpKind::swiglu, "presence of " + l0 + "mlp.w1.weight");
  c.expect<bool>(section, "subln", false, s.subln, "presence of " + l0 + "self_attn.inner_attn_ln.weight");
  c.expect<bool>(section, "q_bias", true, s.q_bias, "presence of " + l0 + "self_attn.q_proj.bias");
  c.expect<bool>(section, "k_bias", true, s.k_bias, "presence of " + l0 + "self_attn.k_proj.bias");
  c.expect<bool>(section, "v_bias", true, s.v_bias, "presence of " + l0 + "self_attn.v_proj.bias");
  return s;
}

inline TowerRuntime read_tower_runtime(const ConfigReader& c, const std::string& section, bool has_rope) {
  TowerRuntime rt;
  rt.layer_norm_eps = static_cast<float>(c.get<double>(section, "layer_norm_eps", 1e-5));
  rt.act = parse_activation(c, section);
  rt.rope = has_rope ? c.get<bool>(section, "rope", false) : false;
  return rt;
}

/// The exact integer square root of n, or -1 when n is negative, not a perfect square, or its root
/// does not fit int. O(1): a double estimate corrected by at most a few steps in unsigned 64-bit
/// arithmetic, where (r + 1)^2 cannot overflow because r <= 3037000500 for any int64 n.
inline int isqrt_exact(std::int64_t n) {
  if (n < 0) return -1;
  const std::uint64_t u = static_cast<std::uint64_t>(n);
  // __builtin_sqrt and INT32_MAX: this function may not add includes (<cmath>, <limits>) to the file.
  std::uint64_t r = static_cast<std::uint64_t>(__builtin_sqrt(static_cast<double>(u)));
  if (r > 3037000500u) r = 3037000500u;  // sqrt of a double rounded up from INT64_MAX
  while (r > 0 && r * r > u) --r;
  while ((r + 1) * (r + 1) <= u) ++r;
  if (r * r != u || r > static_cast<std::uint64_t>(INT32_MAX)) return -1;
  return static_cast<int>(r);
}

}  // namespace detail

/// Opens a checkpoint folder, detects its structure, cross-checks config.json and reads the
/// run-time values. Does not load the weights (QlipModel does).
/// @throws qlip::Error on a missing/corrupt file, a missing detection tensor or a contradiction
inline Checkpoint open_checkpoint(const std::string& dir) {
  namespace fs = std::filesystem;
  Checkpoint ck;
  ck.dir = dir;
  ck.config_path = (fs::path(dir) / "config.json").string();
  ck.weights_path = (fs::path(dir) / "model.safetensors").string();
  QLIP_CHECK(fs::is_directory(dir), "checkpoint folder '", dir, "' does not exist");
  QLIP_CHECK(fs::exists(ck.config_path), "checkpoint folder '", dir, "' has no config.json");
  QLIP_CHECK(fs::exists(ck.weights_path), "checkpoint folder '", dir, "' has no model.safetensors");
  {
    std::ifstream in(ck.config_path);
    QLIP_CHECK(in.good(), "cannot read ", ck.config_path);
    try {
      ck.config_json = nlohmann::json::parse(in);
    } catch (const std::exception& e) {
      QLIP_THROW(ck.config_path, ": invalid JSON: ", e.what());
    }
  }
  ck.file.emplace(SafetensorsFile::open(ck.weights_path));
  const SafetensorsFile& f = *ck.file;
  for (const auto& t : f.tensors()) {
    ++ck.dtype_counts[dtype_name(t.dtype)];
    ++ck.tensor_count;
    ck.element_count += t.numel();
  }
  const detail::ShapeProbe p(f);
  const detail::ConfigReader c(ck.config_json, ck.config_path);
  for (const char* s : {"vision_config", "decoder_config", "text_config"})
    QLIP_CHECK(c.has_section(s), ck.config_path, ": config.json has no \"", s, "\" object");
  QlipConfig& cfg = ck.structure;

  // ---- vision encoder ----
  {
    const auto& pos = p.shape("vision_model.embeddings.position_embedding.weight", 2);
    const auto& conv = p.shape("vision_model.embeddings.patch_embedding.weight", 4);
    const std::int64_t d = pos[1], tokens = pos[0];
    QLIP_CHECK(conv[0] == d && conv[2] == conv[3], f.path(), ": vision_model.embeddings.patch_embedding.weight has shape ",
               detail::vec_string(conv), ", expected [", d, ", C, p, p]");
    const int grid = detail::isqrt_exact(tokens - 1);
    QLIP_CHECK(grid > 0, f.path(), ": vision_model.embeddings.position_embedding.weight has ", tokens,
               " rows; expected N+1 with N a square patch grid");
    cfg.vision.channels = static_cast<int>(conv[1]);
    cfg.vision.patch_size = static_cast<int>(conv[2]);
    cfg.vision.image_size = grid * cfg.vision.patch_size;
    cfg.vision.stack = detail::detect_stack(p, c, "vision_model.encoder", "vision_config", d);
    const std::string ev = "vision_model.embeddings.*";
    c.expect<int>("vision_config", "image_size", 224, cfg.vision.image_size, ev);
    c.expect<int>("vision_config", "patch_size", 32, cfg.vision.patch_size, ev);
    c.expect<int>("vision_config", "num_channels", 3, cfg.vision.channels, ev);
    const std::string quantizer = c.get<std::string>("vision_config", "quantizer", "none");
    QLIP_CHECK(quantizer == "bsq", ck.config_path, ": field vision_config.quantizer = \"", quantizer,
               "\"; only \"bsq\" is supported (the official code crashes on anything else, spec 10.3)");
    const std::string embed = c.get<std::string>("vision_config", "quantizer_embed_type", "identity");
    QLIP_CHECK(embed == "mlp", ck.config_path, ": field vision_config.quantizer_embed_type = \"", embed,
               "\"; only \"mlp\" is supported");
  }
  // ---- quantizer ----
  {
    const auto& proj = p.shape("vision_model.quant_embed.c_proj.weight", 2);
    const auto& post = p.shape("vision_model.quant_embed_post.c_proj.weight", 2);
    cfg.quantizer.bits = static_cast<int>(proj[0]);
    cfg.quantizer.hidden_post_q = static_cast<int>(post[0]);
    const auto& qc = ck.config_json["vision_config"].value("quantizer_cfg", nlohmann::json::object());
    if (qc.is_object() && qc.contains("embed_dim") && qc["embed_dim"].get<int>() != cfg.quantizer.bits) {
      QLIP_THROW(ck.config_path, ": config field vision_config.quantizer_cfg.embed_dim = ", qc["embed_dim"].get<int>(),
                 " contradicts the weights, which say ", cfg.quantizer.bits,
                 " (vision_model.quant_embed.c_proj.weight rows)");
    }
    c.expect<std::int64_t>("vision_config", "hidden_size_post_q", cfg.vision.stack.hidden, cfg.quantizer.hidden_post_q,
                           "vision_model.quant_embed_post.c_proj.weight rows");
    ck.runtime.quantizer_l2_norm = c.get<bool>("vision_config", "quantizer_l2_norm", false);
    if (qc.is_object()) {
      ck.runtime.group_size = qc.value("group_size", 0);
      ck.runtime.code_scale_l2 = qc.value("l2_norm", true);
    }
    if (!ck.runtime.quantizer_l2_norm)
      ck.warnings.push_back(ck.config_path + ": vision_config.quantizer_l2_norm is false; BSQ codes are then not "
                                             "taken from the unit sphere (following config.json)");
  }
  // ---- pixel decoder ----
  {
    const auto& pos = p.shape("vision_decoder.position_embeddings", 3);
    const auto& out = p.shape("vision_decoder.conv_out.weight", 2);
    const std::int64_t d = pos[2], n = pos[1];
    const int grid = detail::isqrt_exact(n);
    QLIP_CHECK(pos[0] == 1 && grid > 0, f.path(), ": vision_decoder.position_embeddings has shape ",
               detail::vec_string(pos), ", expected [1, N, D] with N a square patch grid");
    cfg.decoder.channels = c.get<int>("decoder_config", "num_channels", 3);
    const int p2 = cfg.decoder.channels > 0 && out[0] % cfg.decoder.channels == 0
                       ? detail::isqrt_exact(out[0] / cfg.decoder.channels)
                       : -1;
    QLIP_CHECK(p2 > 0, f.path(), ": vision_decoder.conv_out.weight has ", out[0], " rows, expected C·p·p with C = ",
               cfg.decoder.channels, " (decoder_config.num_channels)");
    cfg.decoder.patch_size = p2;
    cfg.decoder.image_size = grid * p2;
    cfg.decoder.stack = detail::detect_stack(p, c, "vision_decoder.encoder", "decoder_config", d);
    const auto& ffn = p.shape("vision_decoder.ffn.0.weight", 2);
    QLIP_CHECK(ffn[0] == cfg.decoder.stack.intermediate && ffn[1] == d && out[1] == ffn[0], f.path(),
               ": vision_decoder head tensors ffn.0.weight ", detail::vec_string(ffn), " / conv_out.weight ",
               detail::vec_string(out), " do not match the decoder width ", d, " and intermediate size ",
               cfg.decoder.stack.intermediate);
    const std::string ev = "vision_decoder.position_embeddings / conv_out.weight";
    c.expect<int>("decoder_config", "image_size", 224, cfg.decoder.image_size, ev);
    c.expect<int>("decoder_config", "patch_size", 32, cfg.decoder.patch_size, ev);
  }
  // ---- text ----
  {
    const auto& tok = p.shape("text_model.embeddings.token_embedding.weight", 2);
    const auto& pos = p.shape("text_model.embeddings.position_embedding.weight", 2);
    QLIP_CHECK(pos[1] == tok[1], f.path(), ": text_model.embeddings.position_embedding.weight has shape ",
               detail::vec_string(pos), ", expected [ctx, ", tok[1], "]");
    cfg.text.vocab_size = static_cast<int>(tok[0]);
    cfg.text.context_length = static_cast<int>(pos[0]);
    cfg.text.stack = detail::detect_stack(p, c, "text_model.encoder", "text_config", tok[1]);
    c.expect<int>("text_config", "vocab_size", 49408, cfg.text.vocab_size, "text_model.embeddings.token_embedding.weight");
    c.expect<int>("text_config", "max_position_embeddings", 77, cfg.text.context_length,
                  "text_model.embeddings.position_embedding.weight");
    ck.runtime.eos_token_id = c.get<int>("text_config", "eos_token_id", 49407);
  }
  // ---- projections ----
  {
    const auto& vp = p.shape("visual_projection.weight", 2);
    const auto& tp = p.shape("text_projection.weight", 2);
    QLIP_CHECK(vp[0] == tp[0], f.path(), ": visual_projection.weight ", detail::vec_string(vp),
               " and text_projection.weight ", detail::vec_string(tp), " project to different sizes");
    cfg.projection_dim = static_cast<int>(vp[0]);
    cfg.vision_projection_bias = p.has("visual_projection.bias");
    cfg.text_projection_bias = p.has("text_projection.bias");
    c.expect<int>("", "projection_dim", 512, cfg.projection_dim, "visual_projection.weight rows");
    c.expect<bool>("", "vision_projection_bias", true, cfg.vision_projection_bias, "presence of visual_projection.bias");
    c.expect<bool>("", "text_projection_bias", false, cfg.text_projection_bias, "presence of text_projection.bias");
  }
  // ---- run-time values ----
  ck.runtime.vision = detail::read_tower_runtime(c, "vision_config", true);
  ck.runtime.decoder = detail::read_tower_runtime(c, "decoder_config", true);
  ck.runtime.text = detail::read_tower_runtime(c, "text_config", false);
  if (c.get<bool>("text_config", "rope", false))
    ck.warnings.push_back(ck.config_path + ": text_config.rope is true, but the QLIP text tower never applies RoPE");
  ck.runtime.logit_scale = static_cast<float>(c.get<double>("", "logit_scale_init_value", 2.6592));
  if (f.contains("logit_scale")) {
    const auto& info = f.info("logit_scale");
    if (info.numel() == 1 && (info.dtype == DType::f32 || info.dtype == DType::f16 || info.dtype == DType::bf16)) {
      SafetensorsWeights w(f);  // the shape is [] (rank 0) in PyTorch files, [1] in some exports
      w.read("logit_scale", info.shape, &ck.runtime.logit_scale);
    }
  }
  return ck;
}

}  // namespace qlip
