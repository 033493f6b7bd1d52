/// @file checkpoint.hpp
/// @brief Reading a QLIP checkpoint folder (config.json + model.safetensors): structure detection
///        from tensor names and shapes (MODEL.md §5.4), cross-checks against config.json, the run-time
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
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qlip/core/dtype.hpp"
#include "qlip/core/error.hpp"
#include "qlip/io/json.hpp"
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
  /// config.json fields that were absent and took the official class default ("field = value"),
  /// in the order they were read; `qlip info` prints them.
  std::vector<std::string> defaulted_fields;
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

/// The defaults of the official config classes (docs/MODEL.md §1.3), as config.json spells them.
/// `PretrainedConfig.save_pretrained` writes only the fields that differ from these, so a field
/// that is absent means exactly this value (what `from_pretrained` would use). Section "" is the
/// top-level QLIPConfig. quantizer_cfg holds the kwargs of the BSQ module; its `l2_norm` default
/// is not known from the official code and is taken as true, the value BSQ needs (listed as
/// assumed like every other default).
inline const nlohmann::json& official_config_defaults() {
  static const nlohmann::json defaults = nlohmann::json::parse(R"({
    "": {"projection_dim": 512, "logit_scale_init_value": 2.6592},
    "text_config": {
      "vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "projection_dim": 512,
      "num_hidden_layers": 12, "num_attention_heads": 8, "max_position_embeddings": 77,
      "hidden_act": "gelu", "layer_norm_eps": 1e-5, "q_bias": true, "k_bias": true, "v_bias": true,
      "subln": false, "swiglu": false, "rope": false, "pad_token_id": 1, "bos_token_id": 49406,
      "eos_token_id": 49407},
    "vision_config": {
      "hidden_size": 768, "intermediate_size": 3072, "projection_dim": 512, "num_hidden_layers": 12,
      "num_attention_heads": 12, "num_channels": 3, "image_size": 224, "patch_size": 32,
      "hidden_act": "gelu", "layer_norm_eps": 1e-5, "q_bias": true, "k_bias": true, "v_bias": true,
      "subln": false, "swiglu": false, "rope": false, "quantizer": "none",
      "quantizer_l2_norm": false, "quantizer_embed_type": "identity", "hidden_size_post_q": null},
    "decoder_config": {
      "hidden_size": 768, "intermediate_size": 3072, "projection_dim": 512, "num_hidden_layers": 12,
      "num_attention_heads": 12, "num_channels": 3, "image_size": 224, "patch_size": 32,
      "hidden_act": "gelu", "layer_norm_eps": 1e-5, "q_bias": true, "k_bias": true, "v_bias": true,
      "subln": false, "swiglu": false, "rope": false},
    "vision_config.quantizer_cfg": {"l2_norm": true}
  })");
  return defaults;
}

/// Every config.json value goes through here: one typed getter per kind that names the file and
/// the field, checks the JSON type, integrality and range, and takes the official default when the
/// field is absent (recording it). Sections are "" (top level), "vision_config", ... or
/// "vision_config.quantizer_cfg".
class ConfigReader {
 public:
  /// @param defaults the config class's defaults, {section: {key: value}} (QLIP's by default)
  ConfigReader(const nlohmann::json& j, std::string path, const nlohmann::json& defaults = official_config_defaults())
      : j_(j), path_(std::move(path)), defaults_(defaults) {
    QLIP_CHECK(j_.is_object(), path_, ": config.json must hold a JSON object, not ", j_.type_name());
  }

  /// The value config.json states for `key`, or nullptr (absent or null, as HF writes None).
  const nlohmann::json* stated(const std::string& section, const std::string& key) const {
    const nlohmann::json* node = section_node(section);
    if (node == nullptr) return nullptr;
    const auto it = node->find(key);
    return it == node->end() || it->is_null() ? nullptr : &*it;
  }

  /// An integer in [lo, hi]. JSON floats are accepted when integral (12.0), never truncated.
  std::int64_t integer(const std::string& section, const std::string& key, std::int64_t lo, std::int64_t hi) const {
    const nlohmann::json& v = value_or_default(section, key);
    std::int64_t out = 0;
    if (v.is_number_unsigned()) {
      const std::uint64_t u = v.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(hi)) out_of_range(section, key, v, lo, hi);
      out = static_cast<std::int64_t>(u);
    } else if (v.is_number_integer()) {
      out = v.get<std::int64_t>();
    } else if (v.is_number_float()) {
      const double d = v.get<double>();
      if (!std::isfinite(d) || std::floor(d) != d)
        QLIP_THROW(path_, ": field ", field(section, key), " = ", excerpt(v), " is not an integer");
      // |d| < 2^63 before the cast (a double cannot hold INT64_MAX, so compare with 9.2e18 instead).
      if (d < -9.2e18 || d > 9.2e18) out_of_range(section, key, v, lo, hi);
      out = static_cast<std::int64_t>(d);
    } else {
      wrong_type(section, key, v, "an integer");
    }
    if (out < lo || out > hi) out_of_range(section, key, v, lo, hi);
    return out;
  }

  /// integer() narrowed to int (the bounds must fit int).
  int int_in(const std::string& section, const std::string& key, int lo, int hi) const {
    return static_cast<int>(integer(section, key, lo, hi));
  }

  /// A finite number with lo < x < hi (open) or lo <= x <= hi (closed).
  double number(const std::string& section, const std::string& key, double lo, double hi, bool open) const {
    const nlohmann::json& v = value_or_default(section, key);
    if (!v.is_number()) wrong_type(section, key, v, "a number");
    const double d = v.get<double>();
    const bool ok = std::isfinite(d) && (open ? (d > lo && d < hi) : (d >= lo && d <= hi));
    if (!ok)
      QLIP_THROW(path_, ": field ", field(section, key), " = ", excerpt(v), " is out of range (expected ", lo,
                 open ? " < x < " : " <= x <= ", hi, ")");
    return d;
  }

  bool boolean(const std::string& section, const std::string& key) const {
    const nlohmann::json& v = value_or_default(section, key);
    if (!v.is_boolean()) wrong_type(section, key, v, "true or false");
    return v.get<bool>();
  }

  std::string text(const std::string& section, const std::string& key) const {
    const nlohmann::json& v = value_or_default(section, key);
    if (!v.is_string()) wrong_type(section, key, v, "a string");
    return v.get<std::string>();
  }

  /// Throws when config.json *states* a value that contradicts what the weights say. An absent
  /// field is not checked: the weights decide (its default may differ, e.g. a hand-written file).
  template <class T>
  void expect(const std::string& section, const std::string& key, T from_weights, const std::string& evidence) const {
    if (stated(section, key) == nullptr) return;
    T value{};
    if constexpr (std::is_same_v<T, bool>) {
      value = boolean(section, key);
    } else {
      value = static_cast<T>(integer(section, key, std::numeric_limits<T>::min(), std::numeric_limits<T>::max()));
    }
    if (!(value == from_weights)) {
      QLIP_THROW(path_, ": config field ", field(section, key), " = ", to_text(value),
                 " contradicts the weights, which say ", to_text(from_weights), " (", evidence, ")");
    }
  }

  /// "field = value" for every field read with its default, in reading order.
  const std::vector<std::string>& defaulted() const { return defaulted_; }
  const std::string& path() const { return path_; }
  static std::string field(const std::string& section, const std::string& key) {
    return section.empty() ? key : section + "." + key;
  }

 private:
  /// The object of a section, or nullptr when config.json has none (then every field defaults).
  const nlohmann::json* section_node(const std::string& section) const {
    const nlohmann::json* node = &j_;
    std::size_t start = 0;
    while (start < section.size()) {
      const std::size_t dot = section.find('.', start);
      const std::string part = section.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      const auto it = node->find(part);
      if (it == node->end() || it->is_null()) return nullptr;
      if (!it->is_object())
        QLIP_THROW(path_, ": field ", section.substr(0, dot), " must be a JSON object, not ", it->type_name());
      node = &*it;
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    return node;
  }

  const nlohmann::json& value_or_default(const std::string& section, const std::string& key) const {
    if (const nlohmann::json* v = stated(section, key)) return *v;
    const auto sec = defaults_.find(section);
    QLIP_CHECK(sec != defaults_.end() && sec->contains(key), "internal: no official default for config field ",
               field(section, key));
    const nlohmann::json& d = (*sec)[key];
    const std::string note = field(section, key) + " = " + d.dump();
    if (std::find(defaulted_.begin(), defaulted_.end(), note) == defaulted_.end()) defaulted_.push_back(note);
    return d;
  }

  /// A bounded rendering of a value for messages (never a deep dump of nested input).
  static std::string excerpt(const nlohmann::json& v) { return json_excerpt(v, 60); }
  [[noreturn]] void wrong_type(const std::string& section, const std::string& key, const nlohmann::json& v,
                               const char* expected) const {
    QLIP_THROW(path_, ": field ", field(section, key), " is ", excerpt(v), " (", v.type_name(), "), expected ",
               expected);
  }
  [[noreturn]] void out_of_range(const std::string& section, const std::string& key, const nlohmann::json& v,
                                 std::int64_t lo, std::int64_t hi) const {
    QLIP_THROW(path_, ": field ", field(section, key), " = ", excerpt(v), " is out of range (", lo, " to ", hi, ")");
  }
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
  const nlohmann::json& defaults_;
  mutable std::vector<std::string> defaulted_;
};

/// Bounds of the structural values read from config.json or tensor shapes: generous for any real
/// model, small enough that products of them (grid × patch, hidden × layers) cannot overflow.
inline constexpr std::int64_t kMaxWidth = 1 << 20;       ///< hidden / intermediate / vocab sizes
inline constexpr std::int64_t kMaxImageSide = 1 << 16;   ///< image_size / patch_size in pixels
inline constexpr std::int64_t kMaxVocab = 1 << 24;

/// A tensor dimension used as a structural value: 1 <= v <= max, else an error naming the tensor.
inline int checked_dim(std::int64_t v, std::int64_t max, const std::string& file, const std::string& tensor,
                       const char* what) {
  if (v < 1 || v > max)
    QLIP_THROW(file, ": tensor '", tensor, "' gives ", what, " = ", v, ", outside 1 to ", max);
  return static_cast<int>(v);
}

inline Activation parse_activation(const ConfigReader& c, const std::string& section) {
  const std::string a = c.text(section, "hidden_act");
  if (a == "gelu") return Activation::gelu;
  if (a == "quick_gelu") return Activation::quick_gelu;
  QLIP_THROW(c.path(), ": field ", ConfigReader::field(section, "hidden_act"), " = \"", a,
             "\" is not supported (supported: gelu, quick_gelu)");
}

/// Stack structure of `<prefix>.layers.*` (layer 0 decides the flags; every layer is loaded with the
/// same expectation, so a layer that differs fails with a missing-tensor or shape error). The head
/// count cannot be seen in the weights: it comes from config.json, or the class default.
inline StackConfig detect_stack(const ShapeProbe& p, const ConfigReader& c, const std::string& prefix,
                                const std::string& section, std::int64_t hidden) {
  StackConfig s{};
  const std::string l0 = prefix + ".layers.0.";
  s.hidden = static_cast<int>(hidden);
  s.layers = p.count_layers(prefix);
  s.mlp = p.has(l0 + "mlp.w1.weight") ? MlpKind::swiglu : MlpKind::plain;
  const std::string inner = l0 + (s.mlp == MlpKind::swiglu ? "mlp.w1.weight" : "mlp.fc1.weight");
  s.intermediate = checked_dim(p.shape(inner, 2)[0], kMaxWidth, p.path(), inner, "the MLP width");
  s.subln = p.has(l0 + "self_attn.inner_attn_ln.weight");
  s.q_bias = p.has(l0 + "self_attn.q_proj.bias");
  s.k_bias = p.has(l0 + "self_attn.k_proj.bias");
  s.v_bias = p.has(l0 + "self_attn.v_proj.bias");
  s.heads = c.int_in(section, "num_attention_heads", 1, s.hidden);
  QLIP_CHECK(hidden % s.heads == 0, c.path(), ": field ", ConfigReader::field(section, "num_attention_heads"), " = ",
             s.heads, " does not divide the width ", hidden, " of the weights");

  const std::string ev = "tensors under " + prefix + ".layers";
  c.expect<std::int64_t>(section, "hidden_size", hidden, ev);
  c.expect<int>(section, "num_hidden_layers", s.layers, ev);
  c.expect<int>(section, "intermediate_size", s.intermediate, l0 + "mlp.*.weight");
  c.expect<bool>(section, "swiglu", s.mlp == MlpKind::swiglu, "presence of " + l0 + "mlp.w1.weight");
  c.expect<bool>(section, "subln", s.subln, "presence of " + l0 + "self_attn.inner_attn_ln.weight");
  c.expect<bool>(section, "q_bias", s.q_bias, "presence of " + l0 + "self_attn.q_proj.bias");
  c.expect<bool>(section, "k_bias", s.k_bias, "presence of " + l0 + "self_attn.k_proj.bias");
  c.expect<bool>(section, "v_bias", s.v_bias, "presence of " + l0 + "self_attn.v_proj.bias");
  return s;
}

/// LayerNorm eps, plain-MLP activation and (vision/decoder) RoPE of one tower.
inline TowerRuntime read_tower_runtime(const ConfigReader& c, const std::string& section, bool has_rope) {
  TowerRuntime rt;
  rt.layer_norm_eps = static_cast<float>(c.number(section, "layer_norm_eps", 0.0, 1.0, true));
  rt.act = parse_activation(c, section);
  rt.rope = has_rope ? c.boolean(section, "rope") : false;
  return rt;
}

/// The exact integer square root of n, or -1 when n is negative, not a perfect square, or its root
/// does not fit int. O(1): a double estimate corrected by at most a few steps in unsigned 64-bit
/// arithmetic, where (r + 1)^2 cannot overflow because r <= 3037000500 for any int64 n.
inline int isqrt_exact(std::int64_t n) {
  if (n < 0) return -1;
  const std::uint64_t u = static_cast<std::uint64_t>(n);
  std::uint64_t r = static_cast<std::uint64_t>(std::sqrt(static_cast<double>(u)));
  if (r > 3037000500u) r = 3037000500u;  // sqrt of a double rounded up from INT64_MAX
  while (r > 0 && r * r > u) --r;
  while ((r + 1) * (r + 1) <= u) ++r;
  if (r * r != u || r > static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max())) return -1;
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
  if (!fs::is_directory(dir)) QLIP_THROW("checkpoint folder '", dir, "' does not exist");
  if (!fs::exists(ck.config_path)) QLIP_THROW("checkpoint folder '", dir, "' has no config.json");
  if (!fs::exists(ck.weights_path)) QLIP_THROW("checkpoint folder '", dir, "' has no model.safetensors");
  ck.config_json = read_json(ck.config_path);
  ck.file.emplace(SafetensorsFile::open(ck.weights_path));
  const SafetensorsFile& f = *ck.file;
  for (const auto& t : f.tensors()) {
    ++ck.dtype_counts[dtype_name(t.dtype)];
    ++ck.tensor_count;
    ck.element_count += t.numel();
  }
  const detail::ShapeProbe p(f);
  const detail::ConfigReader c(ck.config_json, ck.config_path);
  QlipConfig& cfg = ck.structure;
  using detail::checked_dim;
  using detail::kMaxImageSide;
  using detail::kMaxWidth;

  // ---- vision encoder ----
  {
    const std::string pos_name = "vision_model.embeddings.position_embedding.weight";
    const std::string conv_name = "vision_model.embeddings.patch_embedding.weight";
    const auto& pos = p.shape(pos_name, 2);
    const auto& conv = p.shape(conv_name, 4);
    const int d = checked_dim(pos[1], kMaxWidth, f.path(), pos_name, "the vision width");
    const int tokens = checked_dim(pos[0], kMaxWidth, f.path(), pos_name, "the token count");
    QLIP_CHECK(conv[0] == d && conv[2] == conv[3], f.path(), ": ", conv_name, " has shape ", detail::vec_string(conv),
               ", expected [", d, ", C, p, p]");
    const int grid = detail::isqrt_exact(tokens - 1);
    QLIP_CHECK(grid > 0, f.path(), ": ", pos_name, " has ", tokens, " rows; expected N+1 with N a square patch grid");
    cfg.vision.channels = checked_dim(conv[1], 64, f.path(), conv_name, "the channel count");
    cfg.vision.patch_size = checked_dim(conv[2], kMaxImageSide, f.path(), conv_name, "the patch size");
    cfg.vision.image_size =
        checked_dim(std::int64_t{grid} * cfg.vision.patch_size, kMaxImageSide, f.path(), pos_name, "the image size");
    cfg.vision.stack = detail::detect_stack(p, c, "vision_model.encoder", "vision_config", d);
    const std::string ev = "vision_model.embeddings.*";
    c.expect<int>("vision_config", "image_size", cfg.vision.image_size, ev);
    c.expect<int>("vision_config", "patch_size", cfg.vision.patch_size, ev);
    c.expect<int>("vision_config", "num_channels", cfg.vision.channels, ev);
    const std::string quantizer = c.text("vision_config", "quantizer");
    auto absent = [&](const char* key) {
      return c.stated("vision_config", key) ? "" : " (absent from config.json, so the class default applies)";
    };
    if (quantizer != "bsq")
      QLIP_THROW(ck.config_path, ": field vision_config.quantizer = \"", quantizer, "\"", absent("quantizer"),
                 "; only \"bsq\" is supported (the official code crashes on anything else, MODEL.md §10.3)");
    const std::string embed = c.text("vision_config", "quantizer_embed_type");
    if (embed != "mlp")
      QLIP_THROW(ck.config_path, ": field vision_config.quantizer_embed_type = \"", embed, "\"",
                 absent("quantizer_embed_type"), "; only \"mlp\" is supported");
  }
  // ---- quantizer ----
  {
    const std::string proj_name = "vision_model.quant_embed.c_proj.weight";
    const std::string post_name = "vision_model.quant_embed_post.c_proj.weight";
    cfg.quantizer.bits = checked_dim(p.shape(proj_name, 2)[0], 32, f.path(), proj_name, "the code width");
    cfg.quantizer.hidden_post_q = checked_dim(p.shape(post_name, 2)[0], kMaxWidth, f.path(), post_name, "the width");
    const std::string qc = "vision_config.quantizer_cfg";
    c.expect<int>(qc, "embed_dim", cfg.quantizer.bits, proj_name + " rows");
    c.expect<std::int64_t>("vision_config", "hidden_size_post_q", cfg.quantizer.hidden_post_q, post_name + " rows");
    ck.runtime.quantizer_l2_norm = c.boolean("vision_config", "quantizer_l2_norm");
    if (c.stated(qc, "group_size") != nullptr) {
      ck.runtime.group_size = c.int_in(qc, "group_size", 1, cfg.quantizer.bits);
      QLIP_CHECK(cfg.quantizer.bits % ck.runtime.group_size == 0, ck.config_path, ": field ", qc, ".group_size = ",
                 ck.runtime.group_size, " does not divide the ", cfg.quantizer.bits, "-bit code");
    }
    ck.runtime.code_scale_l2 = c.boolean(qc, "l2_norm");
    if (!ck.runtime.quantizer_l2_norm)
      ck.warnings.push_back(ck.config_path + ": vision_config.quantizer_l2_norm is false; BSQ codes are then not "
                                             "taken from the unit sphere (following config.json)");
  }
  // ---- pixel decoder ----
  {
    const std::string pos_name = "vision_decoder.position_embeddings";
    const std::string out_name = "vision_decoder.conv_out.weight";
    const auto& pos = p.shape(pos_name, 3);
    const auto& out = p.shape(out_name, 2);
    const int d = checked_dim(pos[2], kMaxWidth, f.path(), pos_name, "the decoder width");
    const int n = checked_dim(pos[1], kMaxWidth, f.path(), pos_name, "the token count");
    const int rows = checked_dim(out[0], kMaxWidth, f.path(), out_name, "the pixels per patch");
    const int grid = detail::isqrt_exact(n);
    QLIP_CHECK(pos[0] == 1 && grid > 0, f.path(), ": ", pos_name, " has shape ", detail::vec_string(pos),
               ", expected [1, N, D] with N a square patch grid");
    cfg.decoder.channels = c.int_in("decoder_config", "num_channels", 1, 64);
    const int p2 = rows % cfg.decoder.channels == 0 ? detail::isqrt_exact(rows / cfg.decoder.channels) : -1;
    QLIP_CHECK(p2 > 0, f.path(), ": ", out_name, " has ", rows, " rows, expected C·p·p with C = ",
               cfg.decoder.channels, " (decoder_config.num_channels)");
    cfg.decoder.patch_size = p2;
    cfg.decoder.image_size =
        checked_dim(std::int64_t{grid} * p2, kMaxImageSide, f.path(), pos_name, "the decoded image size");
    cfg.decoder.stack = detail::detect_stack(p, c, "vision_decoder.encoder", "decoder_config", d);
    const auto& ffn = p.shape("vision_decoder.ffn.0.weight", 2);
    QLIP_CHECK(ffn[0] == cfg.decoder.stack.intermediate && ffn[1] == d && out[1] == ffn[0], f.path(),
               ": vision_decoder head tensors ffn.0.weight ", detail::vec_string(ffn), " / conv_out.weight ",
               detail::vec_string(out), " do not match the decoder width ", d, " and intermediate size ",
               cfg.decoder.stack.intermediate);
    const std::string ev = "vision_decoder.position_embeddings / conv_out.weight";
    c.expect<int>("decoder_config", "image_size", cfg.decoder.image_size, ev);
    c.expect<int>("decoder_config", "patch_size", cfg.decoder.patch_size, ev);
  }
  // ---- text ----
  {
    const std::string tok_name = "text_model.embeddings.token_embedding.weight";
    const std::string pos_name = "text_model.embeddings.position_embedding.weight";
    const auto& tok = p.shape(tok_name, 2);
    const auto& pos = p.shape(pos_name, 2);
    QLIP_CHECK(pos[1] == tok[1], f.path(), ": ", pos_name, " has shape ", detail::vec_string(pos), ", expected [ctx, ",
               tok[1], "]");
    cfg.text.vocab_size = checked_dim(tok[0], detail::kMaxVocab, f.path(), tok_name, "the vocabulary size");
    cfg.text.context_length = checked_dim(pos[0], kMaxWidth, f.path(), pos_name, "the context length");
    const int width = checked_dim(tok[1], kMaxWidth, f.path(), tok_name, "the text width");
    cfg.text.stack = detail::detect_stack(p, c, "text_model.encoder", "text_config", width);
    c.expect<int>("text_config", "vocab_size", cfg.text.vocab_size, tok_name);
    c.expect<int>("text_config", "max_position_embeddings", cfg.text.context_length, pos_name);
    ck.runtime.eos_token_id = c.int_in("text_config", "eos_token_id", 0, cfg.text.vocab_size - 1);
  }
  // ---- projections ----
  {
    const auto& vp = p.shape("visual_projection.weight", 2);
    const auto& tp = p.shape("text_projection.weight", 2);
    QLIP_CHECK(vp[0] == tp[0], f.path(), ": visual_projection.weight ", detail::vec_string(vp),
               " and text_projection.weight ", detail::vec_string(tp), " project to different sizes");
    cfg.projection_dim = checked_dim(vp[0], kMaxWidth, f.path(), "visual_projection.weight", "the projection size");
    cfg.vision_projection_bias = p.has("visual_projection.bias");
    cfg.text_projection_bias = p.has("text_projection.bias");
    c.expect<int>("", "projection_dim", cfg.projection_dim, "visual_projection.weight rows");
    c.expect<bool>("", "vision_projection_bias", cfg.vision_projection_bias, "presence of visual_projection.bias");
    c.expect<bool>("", "text_projection_bias", cfg.text_projection_bias, "presence of text_projection.bias");
  }
  // ---- run-time values ----
  ck.runtime.vision = detail::read_tower_runtime(c, "vision_config", true);
  ck.runtime.decoder = detail::read_tower_runtime(c, "decoder_config", true);
  ck.runtime.text = detail::read_tower_runtime(c, "text_config", false);
  if (c.boolean("text_config", "rope"))
    ck.warnings.push_back(ck.config_path + ": text_config.rope is true, but the QLIP text tower never applies RoPE");
  ck.runtime.logit_scale = static_cast<float>(c.number("", "logit_scale_init_value", -100.0, 100.0, false));
  if (f.contains("logit_scale")) {
    const auto& info = f.info("logit_scale");
    if (info.numel() == 1 && (info.dtype == DType::f32 || info.dtype == DType::f16 || info.dtype == DType::bf16)) {
      SafetensorsWeights w(f);  // the shape is [] (rank 0) in PyTorch files, [1] in some exports
      w.read("logit_scale", info.shape, &ck.runtime.logit_scale);
    }
  }
  ck.defaulted_fields = c.defaulted();
  return ck;
}

}  // namespace qlip
