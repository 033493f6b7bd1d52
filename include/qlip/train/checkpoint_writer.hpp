/// @file checkpoint_writer.hpp
/// @brief Trained checkpoints in the official folder layout (QLIP_SPEC.md §1.2, §5): writing a
///        ParameterStore as config.json (full form) + model.safetensors + preprocessor_config.json
///        (+ tokenizer files, + caller-generated files such as the training state), atomically as a
///        folder; and loading a checkpoint folder back into a ParameterStore by name.
///
/// What is written:
///  - model.safetensors: every store tensor as F32 under its official name and shape (the store
///    keeps `logit_scale` as [1]; the official files hold it as a 0-d tensor [], so every name in
///    CheckpointContents::zero_dim is written with shape []), plus the caller's extra tensors as
///    given (the RoPE buffers `*.rope.freqs_cos/sin` that the official files carry). Tensors are
///    ordered as the Python safetensors library orders them (larger dtypes first, then by name) with
///    metadata {"format": "pt"}, so a store loaded from an official F32 file and saved without
///    training gives back the same bytes.
///  - config.json: the full form (full_config_json): every field of the official config classes,
///    the stated values of the config the model was loaded or built with, the structural values
///    (widths, depths, heads, biases, sizes: everything QlipConfig fixes) taken from the structure
///    of the weights, and a stated value that contradicts them is an error naming the field. Keys
///    are sorted and indented by 2, as `PretrainedConfig.to_json_string` writes them.
///  - preprocessor_config.json: the caller's file (copied byte for byte, e.g. the loaded one),
///    else CLIP's with the vision image size (what io/preprocess.hpp reads); either way its crop
///    size must be the vision image size.
///  - the caller's files (tokenizer files: vocab.json, merges.txt, ...) byte for byte, and the
///    caller's generated files (GeneratedFile, e.g. train_state_file() of train/train_state.hpp).
///
/// Atomicity (never a moment without a valid checkpoint at `<dir>` or `<dir>.old`):
///  1. everything is written into `<dir>.tmp-<pid>` (each file fsync'd, then the folder), and the
///     new folder is opened with open_checkpoint() (a folder the loader refuses is never committed);
///  2. an existing `<dir>` is renamed to `<dir>.old`, `<dir>.tmp-<pid>` to `<dir>`, the parent
///     folder is fsync'd, and `<dir>.old` is removed;
///  3. any failure before step 2 removes the temporary folder and leaves `<dir>` as it was; a
///     failure between the two renames renames `<dir>.old` back. A crash between them leaves
///     `<dir>.old` and no `<dir>`: recover_checkpoint_dir() (called by load_checkpoint) renames it
///     back. A leftover `<dir>.old` beside a `<dir>` is garbage (a `<dir>` only ever appears by the
///     rename of a complete folder) and is removed.
/// The folder is replaced as a whole: files someone else put into `<dir>` do not survive a save.
/// An existing `<dir>` that holds neither config.json nor model.safetensors (and is not empty) is
/// never replaced (a mistyped path must not delete a folder). One writer per folder at a time.
///
/// Errors: every failure is a qlip::Error naming the file (disk full: "error writing <file> ...:
/// No space left on device"), the tensor, or the config field. Loading names a missing tensor, a
/// shape mismatch, or the first config field whose value differs from the expected structure,
/// in one line.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "qlip/core/dtype.hpp"
#include "qlip/core/error.hpp"
#include "qlip/io/detail/file.hpp"
#include "qlip/io/json.hpp"
#include "qlip/io/preprocess.hpp"
#include "qlip/io/safetensors.hpp"
#include "qlip/model/checkpoint.hpp"
#include "qlip/model/config.hpp"
#include "qlip/train/parameter_store.hpp"

namespace qlip::train {

/// A tensor written to model.safetensors as given: a non-trained buffer such as a RoPE table.
struct ExtraTensor {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;  ///< empty for a 0-d tensor
  std::vector<std::byte> bytes;     ///< numel · dtype_size(dtype) little-endian bytes

  /// An F32 tensor from float values (values.size() must be the product of the shape).
  static ExtraTensor from_floats(std::string name, std::vector<std::int64_t> shape, const std::vector<float>& values) {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;
    QLIP_CHECK(static_cast<std::int64_t>(values.size()) == n, "ExtraTensor '", name, "': ", values.size(),
               " values for shape ", qlip::detail::vec_string(shape));
    ExtraTensor t{std::move(name), DType::f32, std::move(shape), {}};
    t.bytes.resize(values.size() * sizeof(float));
    if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
    return t;
  }
};

/// A file copied into the checkpoint folder byte for byte (tokenizer files, preprocessor_config.json).
struct CheckpointFile {
  std::string name;   ///< plain file name inside the folder ("vocab.json")
  std::string bytes;  ///< its contents

  /// Reads `path`; the name in the folder is `name`, or the file name of `path` when empty.
  /// @throws qlip::Error naming the file when it cannot be read
  static CheckpointFile read(const std::string& path, std::string name = {}) {
    const std::vector<std::uint8_t> b = qlip::detail::read_file_bytes(path);
    if (name.empty()) name = std::filesystem::path(path).filename().string();
    return {std::move(name), std::string(reinterpret_cast<const char*>(b.data()), b.size())};
  }
};

/// A file the caller writes into the new folder: write(path) must create `path`, complete and
/// fsync'd (write_safetensors and write_file_atomic do both), or throw.
struct GeneratedFile {
  std::string name;  ///< plain file name inside the folder
  std::function<void(const std::string& path)> write;
};

/// Files of a checkpoint folder that are tokenizer files (copied when present, QLIP_SPEC.md §1.2).
inline const std::vector<std::string>& tokenizer_file_names() {
  static const std::vector<std::string> names = {
      "vocab.json",     "merges.txt",       "tokenizer_config.json", "special_tokens_map.json",
      "tokenizer.json", "added_tokens.json"};
  return names;
}

/// Everything of a checkpoint folder besides the parameter values.
struct CheckpointContents {
  /// config.json as loaded (any form: full, or the diff form save_pretrained writes) or as built
  /// (config_json_from()); written in the full form (full_config_json()).
  nlohmann::json config = nlohmann::json::object();
  /// The structure the weights have (Tag::config, or Checkpoint::structure).
  QlipConfig structure{};
  /// Non-trained tensors written beside the parameters (e.g. vision_model.rope.freqs_cos/sin).
  std::vector<ExtraTensor> extra_tensors;
  /// Files copied byte for byte. One named preprocessor_config.json replaces the generated one.
  std::vector<CheckpointFile> files;
  /// Files written by the caller into the new folder (e.g. the training state).
  std::vector<GeneratedFile> generated_files;
  /// Store tensors of one element written as 0-d tensors (shape []), as in the official files.
  std::vector<std::string> zero_dim = {"logit_scale"};
};

/// Options of write_checkpoint().
struct CheckpointWriteOptions {
  /// Called before each step of the write with the step's name: the name of the file about to be
  /// written into the temporary folder ("model.safetensors", "config.json", ...), "verify" before
  /// the new folder is opened, "commit" before the old folder is renamed away and "swap" between
  /// the two renames. Throwing from it simulates
  /// a failure at that point (tests of the atomicity guarantee); empty: nothing is called.
  std::function<void(const std::string& step)> before_step;
};

// ---------------------------------------------------------------------------------------------
// config.json
// ---------------------------------------------------------------------------------------------

namespace ckpt_detail {

/// One config.json field whose value the structure of the weights fixes.
struct StructuralField {
  std::string section;  ///< "" (top level), "vision_config", ..., "vision_config.quantizer_cfg"
  std::string key;
  nlohmann::json value;
};

/// Every structural field of `c`, with the official section and key names (QLIP_SPEC.md §1.3).
inline std::vector<StructuralField> structural_fields(const QlipConfig& c) {
  std::vector<StructuralField> f;
  auto stack = [&](const std::string& s, const StackConfig& x) {
    f.push_back({s, "hidden_size", x.hidden});
    f.push_back({s, "num_hidden_layers", x.layers});
    f.push_back({s, "num_attention_heads", x.heads});
    f.push_back({s, "intermediate_size", x.intermediate});
    f.push_back({s, "swiglu", x.mlp == MlpKind::swiglu});
    f.push_back({s, "subln", x.subln});
    f.push_back({s, "q_bias", x.q_bias});
    f.push_back({s, "k_bias", x.k_bias});
    f.push_back({s, "v_bias", x.v_bias});
  };
  auto vit = [&](const std::string& s, const VisionConfig& v) {
    f.push_back({s, "image_size", v.image_size});
    f.push_back({s, "patch_size", v.patch_size});
    f.push_back({s, "num_channels", v.channels});
    stack(s, v.stack);
  };
  vit("vision_config", c.vision);
  f.push_back({"vision_config", "hidden_size_post_q", c.quantizer.hidden_post_q});
  // quant_embed / quant_embed_post exist only for these two values (checkpoint.hpp refuses others).
  f.push_back({"vision_config", "quantizer", "bsq"});
  f.push_back({"vision_config", "quantizer_embed_type", "mlp"});
  f.push_back({"vision_config.quantizer_cfg", "embed_dim", c.quantizer.bits});
  vit("decoder_config", c.decoder);
  f.push_back({"text_config", "vocab_size", c.text.vocab_size});
  f.push_back({"text_config", "max_position_embeddings", c.text.context_length});
  stack("text_config", c.text.stack);
  f.push_back({"", "projection_dim", c.projection_dim});
  f.push_back({"", "vision_projection_bias", c.vision_projection_bias});
  f.push_back({"", "text_projection_bias", c.text_projection_bias});
  return f;
}

/// A qlip::Error message without its leading "file.hpp:123: " (when a message is wrapped into
/// another, so the line still reads as one sentence).
inline std::string without_location(const std::string& what) {
  const std::size_t colon = what.find(':');
  if (colon == std::string::npos) return what;
  std::size_t i = colon + 1;
  while (i < what.size() && what[i] >= '0' && what[i] <= '9') ++i;
  if (i == colon + 1 || what.compare(i, 2, ": ") != 0) return what;
  return what.substr(i + 2);
}

inline std::string field_name(const std::string& section, const std::string& key) {
  return section.empty() ? key : section + "." + key;
}

/// The fields of the official config classes that qlip::detail::official_config_defaults() leaves out because
/// the loader never reads them (QLIP_SPEC.md §1.3: vision and decoder configs share one field set).
inline const nlohmann::json& unread_official_defaults() {
  static const nlohmann::json d = nlohmann::json::parse(R"({
    "": {"architectures": ["QLIPModel"], "model_type": "clip"},
    "text_config": {"attention_dropout": 0.0, "post_layernorm": false},
    "vision_config": {"attention_dropout": 0.0, "post_layernorm": false, "quantizer_cfg": {}},
    "decoder_config": {"attention_dropout": 0.0, "post_layernorm": false, "quantizer": "none",
                       "quantizer_l2_norm": false, "quantizer_embed_type": "identity",
                       "hidden_size_post_q": null, "quantizer_cfg": {}}
  })");
  return d;
}

/// The object at a dotted section of `j`, created when absent or null.
/// @throws qlip::Error naming the field when it holds something else than an object
inline nlohmann::json& section_of(nlohmann::json& j, const std::string& section) {
  nlohmann::json* node = &j;
  std::size_t start = 0;
  while (start < section.size()) {
    const std::size_t dot = section.find('.', start);
    const std::string part = section.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    nlohmann::json& child = (*node)[part];
    if (child.is_null()) child = nlohmann::json::object();
    QLIP_CHECK(child.is_object(), "config field ", section.substr(0, dot), " must be a JSON object, not ",
               child.type_name());
    node = &child;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return *node;
}

}  // namespace ckpt_detail

/// config.json in the full form: the official class defaults (official_config_defaults() and the
/// fields the loader does not read), overlaid with every value `stated` holds, with the structural
/// values of `structure` (ckpt_detail::structural_fields) and "torch_dtype": "float32" (parameters are
/// written as F32). A sub-config's projection_dim that is not stated takes the top-level one, as
/// the official release's configs do (no code reads it).
/// @param stated    config.json as loaded or built: any form (a diff form's fields are kept, the
///                  rest filled in)
/// @param structure what the weights are
/// @throws qlip::Error when `stated` is not an object, a section is not an object, or a stated
///         structural value contradicts `structure` (naming the field and both values)
inline nlohmann::json full_config_json(const nlohmann::json& stated, const QlipConfig& structure) {
  QLIP_CHECK(stated.is_object(), "config.json must hold a JSON object, not ", stated.type_name());
  nlohmann::json out = stated;
  // A null value means "absent" to the loader (HF writes None as null); fill it like an absent one.
  auto fill = [&](const nlohmann::json& defaults) {
    for (const auto& [section, fields] : defaults.items()) {
      nlohmann::json& node = ckpt_detail::section_of(out, section);
      for (const auto& [key, value] : fields.items()) {
        const auto it = node.find(key);
        if (it == node.end() || it->is_null()) node[key] = value;
      }
    }
  };
  for (const auto& f : ckpt_detail::structural_fields(structure)) {
    nlohmann::json& node = ckpt_detail::section_of(out, f.section);
    const auto it = node.find(f.key);
    if (it != node.end() && !it->is_null() && *it != f.value) {
      QLIP_THROW("config field ", ckpt_detail::field_name(f.section, f.key), " = ", json_excerpt(*it),
                 " contradicts the weights, which have ", f.value.dump());
    }
    node[f.key] = f.value;
  }
  for (const char* s : {"text_config", "vision_config", "decoder_config"}) {
    nlohmann::json& node = ckpt_detail::section_of(out, s);
    const auto it = node.find("projection_dim");
    if (it == node.end() || it->is_null()) node["projection_dim"] = structure.projection_dim;
  }
  fill(qlip::detail::official_config_defaults());
  fill(ckpt_detail::unread_official_defaults());
  out["torch_dtype"] = "float32";
  return out;
}

/// A stated config.json for a model built from a structure and run-time values (no checkpoint to
/// copy one from): the run-time fields (LayerNorm eps, hidden_act, rope per tower; the BSQ flags and
/// group size; eos_token_id; logit_scale_init_value), quantizer "bsq" with the "mlp" embedding.
/// full_config_json() adds the structural values and the defaults.
inline nlohmann::json config_json_from(const QlipConfig& structure, const QlipRuntimeConfig& rt) {
  nlohmann::json j = nlohmann::json::object();
  auto tower = [&](const char* s, const TowerRuntime& t, bool rope) {
    nlohmann::json& n = j[s];
    n["layer_norm_eps"] = shortest_double(t.layer_norm_eps);
    n["hidden_act"] = activation_name(t.act);
    n["rope"] = rope && t.rope;
  };
  tower("vision_config", rt.vision, true);
  tower("decoder_config", rt.decoder, true);
  tower("text_config", rt.text, false);
  j["vision_config"]["quantizer"] = "bsq";
  j["vision_config"]["quantizer_embed_type"] = "mlp";
  j["vision_config"]["quantizer_l2_norm"] = rt.quantizer_l2_norm;
  nlohmann::json& qc = j["vision_config"]["quantizer_cfg"];
  qc["embed_dim"] = structure.quantizer.bits;
  qc["l2_norm"] = rt.code_scale_l2;
  if (rt.group_size > 0) qc["group_size"] = rt.group_size;
  j["text_config"]["eos_token_id"] = rt.eos_token_id;
  j["logit_scale_init_value"] = shortest_double(rt.logit_scale);
  return j;
}

/// CLIP's preprocessor_config.json for images of `image_size` pixels (the file the official
/// releases and tools/qlip_reference.py write).
inline std::string default_preprocessor_config(int image_size) {
  nlohmann::ordered_json j;
  j["crop_size"] = image_size;
  j["do_center_crop"] = true;
  j["do_normalize"] = true;
  j["do_resize"] = true;
  j["feature_extractor_type"] = "CLIPFeatureExtractor";
  j["image_mean"] = {0.48145466, 0.4578275, 0.40821073};
  j["image_std"] = {0.26862954, 0.26130258, 0.27577711};
  j["resample"] = 3;
  j["size"] = image_size;
  return j.dump(2) + "\n";
}

/// "field = a in the checkpoint, b in <name>" for every structural field where `got` and `want`
/// differ, in config.json order (official field names).
inline std::vector<std::string> config_differences(const QlipConfig& got, const QlipConfig& want,
                                                   std::string_view want_name) {
  const auto a = ckpt_detail::structural_fields(got), b = ckpt_detail::structural_fields(want);
  std::vector<std::string> out;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].value != b[i].value)
      out.push_back(ckpt_detail::field_name(a[i].section, a[i].key) + " = " + a[i].value.dump() +
                    " in the checkpoint, " + b[i].value.dump() + " in " + std::string(want_name));
  return out;
}

// ---------------------------------------------------------------------------------------------
// The folder
// ---------------------------------------------------------------------------------------------

namespace ckpt_detail {

namespace fs = std::filesystem;

/// `dir` without a trailing separator ("a/b/" → "a/b"), so that "<dir>.old" is a sibling.
inline fs::path checkpoint_path(const std::string& dir) {
  QLIP_CHECK(!dir.empty(), "checkpoint folder: empty path");
  fs::path p = fs::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  QLIP_CHECK(!p.empty() && p.filename() != "." && p.filename() != "..", "checkpoint folder '", dir,
             "' does not name a folder");
  return p;
}

inline fs::path sibling(const fs::path& p, const std::string& suffix) {
  return fs::path(p.string() + suffix);
}

/// fsync of a folder, so a rename or a new entry in it survives a power cut.
inline void fsync_dir(const fs::path& dir) {
  const fs::path d = dir.empty() ? fs::path(".") : dir;
  const int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) QLIP_THROW("cannot open folder ", d.string(), " to fsync it: ", qlip::detail::errno_string(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // EINVAL: the filesystem cannot sync folders (some network and FUSE ones); nothing to do then.
  if (rc != 0 && err != EINVAL)
    QLIP_THROW("fsync failed for folder ", d.string(), ": ", qlip::detail::errno_string(err));
}

inline void rename_or_throw(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    QLIP_THROW("cannot rename ", from.string(), " to ", to.string(), ": ", qlip::detail::errno_string(errno));
}

/// A plain file name (no separators, not "." or ".."), not one the writer owns.
inline void check_file_name(const std::string& name, const char* what) {
  QLIP_CHECK(!name.empty() && name.find('/') == std::string::npos && name != "." && name != "..", what, " '", name,
             "' is not a plain file name");
  QLIP_CHECK(name != "config.json" && name != "model.safetensors", what, " '", name,
             "' is written by write_checkpoint itself");
}

/// dtype size first (larger first), then name: the order of safetensors.torch.save_file.
inline bool safetensors_order(const SafetensorsEntry& a, const SafetensorsEntry& b) {
  const std::size_t sa = dtype_size(a.dtype), sb = dtype_size(b.dtype);
  return sa != sb ? sa > sb : a.name < b.name;
}

}  // namespace ckpt_detail

/// Recovers from a save interrupted between its two renames: when `<dir>` does not exist and
/// `<dir>.old` does, renames `<dir>.old` to `<dir>`. When both exist, `<dir>.old` is a leftover
/// (`<dir>` is complete) and is removed.
/// @return true when `<dir>` was recovered from `<dir>.old`
/// @throws qlip::Error naming the folders when a rename fails
inline bool recover_checkpoint_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path p = ckpt_detail::checkpoint_path(dir);
  const fs::path old = ckpt_detail::sibling(p, ".old");
  std::error_code ec;
  if (!fs::is_directory(old, ec)) return false;
  if (fs::exists(p, ec)) {
    fs::remove_all(old, ec);  // garbage; failing to remove it changes nothing for this load
    return false;
  }
  ckpt_detail::rename_or_throw(old, p);
  ckpt_detail::fsync_dir(p.parent_path());
  return true;
}

/// Writes a folder with the protocol of the file comment ("Atomicity"): `fill(tmp)` writes every
/// file into the fresh folder `tmp` (each fsync'd), `verify(tmp)` may refuse the result by throwing,
/// then the folder replaces `dir` by two renames. `replaceable(dir)` says whether an existing `dir`
/// may be replaced (a mistyped path must not delete a folder); `refusal` is the error otherwise.
/// `before_step` sees "verify", "commit" and "swap" (failure injection for tests).
/// @throws qlip::Error naming the folder or file; `dir` is then unchanged (or recoverable from
///         `<dir>.old` by recover_checkpoint_dir after a crash between the renames)
inline void write_folder_atomic(const std::string& dir, const std::function<void(const std::filesystem::path&)>& fill,
                                const std::function<void(const std::filesystem::path&)>& verify,
                                const std::function<bool(const std::filesystem::path&)>& replaceable,
                                const std::string& refusal,
                                const std::function<void(const std::string&)>& before_step = {}) {
  namespace fs = std::filesystem;
  const fs::path p = ckpt_detail::checkpoint_path(dir);
  const fs::path tmp = ckpt_detail::sibling(p, ".tmp-" + std::to_string(static_cast<long long>(::getpid())));
  const fs::path old = ckpt_detail::sibling(p, ".old");
  auto step = [&](const std::string& name) {
    if (before_step) before_step(name);
  };
  std::error_code ec;
  const bool replacing = fs::exists(p, ec);
  if (replacing) {
    QLIP_CHECK(fs::is_directory(p, ec), "write_checkpoint: '", p.string(), "' exists and is not a folder");
    QLIP_CHECK(replaceable(p), "write_checkpoint: '", p.string(), "' exists and ", refusal, "; refusing to replace it");
  }

  // ---- 1. the temporary folder ----
  try {
    if (!p.parent_path().empty()) fs::create_directories(p.parent_path());
    fs::remove_all(tmp);  // a leftover of a crashed process that had our pid
    fs::create_directory(tmp);
  } catch (const fs::filesystem_error& e) {
    QLIP_THROW("write_checkpoint: cannot create ", tmp.string(), ": ", e.code().message());
  }
  try {
    fill(tmp);
    ckpt_detail::fsync_dir(tmp);
    step("verify");
    verify(tmp);
    step("commit");
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }

  // ---- 2. the swap ----
  try {
    if (replacing) {
      fs::remove_all(old, ec);  // a leftover beside a complete <dir> (recover_checkpoint_dir)
      ckpt_detail::rename_or_throw(p, old);
    }
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  try {
    step("swap");
    ckpt_detail::rename_or_throw(tmp, p);
  } catch (...) {
    if (replacing && ::rename(old.c_str(), p.c_str()) != 0) {
      // <dir>.old stays the valid checkpoint; recover_checkpoint_dir() renames it back on load.
      QLIP_CHECK_NOTHROW(false, "could not rename ", old.string(), " back to ", p.string(), ": ",
                         qlip::detail::errno_string(errno));
    }
    fs::remove_all(tmp, ec);
    throw;
  }
  ckpt_detail::fsync_dir(p.parent_path());
  // <dir> is complete now, so <dir>.old (the replaced folder, or a leftover of an interrupted save)
  // is garbage; failing to remove it leaves what the next load removes.
  fs::remove_all(old, ec);
}

/// Writes a checkpoint folder from a frozen store (file comment: layout, atomicity, errors).
/// @param dir      the folder to create or replace
/// @param store    the parameters, written under their names as F32
/// @param contents config, structure, extra tensors, files (see CheckpointContents)
/// @param options  failure injection for tests
/// @throws qlip::Error naming the file, tensor or config field at fault; `dir` is then unchanged
inline void write_checkpoint(const std::string& dir, const ParameterStore& store, const CheckpointContents& contents,
                             const CheckpointWriteOptions& options = {}) {
  namespace fs = std::filesystem;
  QLIP_CHECK(store.frozen(), "write_checkpoint('", dir, "'): the ParameterStore is not frozen");
  (void)ckpt_detail::checkpoint_path(dir);  // a path that names no folder fails before any work
  auto step = [&](const std::string& name) {
    if (options.before_step) options.before_step(name);
  };

  // ---- everything that can be checked is checked before the disk is touched ----
  const std::string config_text = [&] {
    try {
      return full_config_json(contents.config, contents.structure).dump(2) + "\n";
    } catch (const Error& e) {
      QLIP_THROW("write_checkpoint('", dir, "'): config.json: ", ckpt_detail::without_location(e.what()));
    }
  }();
  std::vector<const CheckpointFile*> files;
  std::string preprocessor = default_preprocessor_config(contents.structure.vision.image_size);
  for (const CheckpointFile& f : contents.files) {
    ckpt_detail::check_file_name(f.name, "write_checkpoint: file");
    for (const CheckpointFile* g : files)
      QLIP_CHECK(g->name != f.name, "write_checkpoint: file '", f.name, "' given twice");
    if (f.name == "preprocessor_config.json") {
      preprocessor = f.bytes;
    } else {
      files.push_back(&f);
    }
  }
  for (const GeneratedFile& g : contents.generated_files) {
    ckpt_detail::check_file_name(g.name, "write_checkpoint: generated file");
    QLIP_CHECK(g.write, "write_checkpoint: generated file '", g.name, "' has no writer");
    QLIP_CHECK(g.name != "preprocessor_config.json" &&
                   std::none_of(files.begin(), files.end(), [&](const CheckpointFile* f) { return f->name == g.name; }),
               "write_checkpoint: generated file '", g.name, "' is also given as a copied file");
    QLIP_CHECK(std::count_if(contents.generated_files.begin(), contents.generated_files.end(),
                             [&](const GeneratedFile& h) { return h.name == g.name; }) == 1,
               "write_checkpoint: two generated files are named '", g.name, "' (the second would overwrite the first)");
  }
  {
    const std::string where = "write_checkpoint('" + dir + "'): preprocessor_config.json";
    ClipPreprocessConfig pc;
    try {
      pc = ClipPreprocessConfig::from_json(parse_json(preprocessor, where));
    } catch (const Error& e) {
      QLIP_THROW(where, ": ", ckpt_detail::without_location(e.what()));
    }
    const int size = contents.structure.vision.image_size;
    QLIP_CHECK(pc.crop_height == size && pc.crop_width == size, where, ": crop size ", pc.crop_height, "x",
               pc.crop_width, " is not the model's image size ", size);
  }
  std::vector<SafetensorsEntry> entries;
  const HostView<const float, 1> values = store.values();
  for (const ParameterInfo& info : store.infos()) {
    std::vector<std::int64_t> shape = info.shape;
    if (std::find(contents.zero_dim.begin(), contents.zero_dim.end(), info.name) != contents.zero_dim.end()) {
      QLIP_CHECK(info.numel == 1, "write_checkpoint: '", info.name, "' is listed as 0-d but has shape ",
                 qlip::detail::vec_string(info.shape));
      shape.clear();
    }
    entries.push_back({info.name, DType::f32, std::move(shape), values.data() + info.offset});
  }
  for (const ExtraTensor& t : contents.extra_tensors) {
    QLIP_CHECK(!store.contains(t.name), "write_checkpoint: extra tensor '", t.name,
               "' is also a parameter of the store");
    std::int64_t n = 1;
    for (std::int64_t d : t.shape) n *= d;
    QLIP_CHECK(static_cast<std::int64_t>(t.bytes.size()) == n * static_cast<std::int64_t>(dtype_size(t.dtype)),
               "write_checkpoint: extra tensor '", t.name, "' has ", t.bytes.size(), " bytes, shape ",
               qlip::detail::vec_string(t.shape), " of ", dtype_name(t.dtype), " needs ",
               n * static_cast<std::int64_t>(dtype_size(t.dtype)));
    entries.push_back({t.name, t.dtype, t.shape, t.bytes.data()});
  }
  std::sort(entries.begin(), entries.end(), ckpt_detail::safetensors_order);

  const auto fill = [&](const fs::path& tmp) {
    step("model.safetensors");
    write_safetensors((tmp / "model.safetensors").string(), entries, {{"format", "pt"}});
    step("config.json");
    qlip::detail::write_file_atomic((tmp / "config.json").string(), config_text.data(), config_text.size());
    step("preprocessor_config.json");
    qlip::detail::write_file_atomic((tmp / "preprocessor_config.json").string(), preprocessor.data(),
                                    preprocessor.size());
    for (const CheckpointFile* f : files) {
      step(f->name);
      qlip::detail::write_file_atomic((tmp / f->name).string(), f->bytes.data(), f->bytes.size());
    }
    std::error_code ec;
    for (const GeneratedFile& g : contents.generated_files) {
      step(g.name);
      const std::string path = (tmp / g.name).string();
      g.write(path);
      QLIP_CHECK(fs::is_regular_file(path, ec), "write_checkpoint: the writer of '", g.name, "' did not create ", path);
    }
  };
  // What is committed must load: the loader's own detection and cross-checks on the new folder,
  // and the structure it detects must be the one config.json was written for.
  const auto verify = [&](const fs::path& tmp) {
    const Checkpoint written = open_checkpoint(tmp.string());
    const std::vector<std::string> diff = config_differences(written.structure, contents.structure, "the config");
    QLIP_CHECK(diff.empty(), "write_checkpoint('", dir, "'): the store's tensors do not have the structure of ",
               "CheckpointContents::structure: ", diff.empty() ? "" : diff.front());
  };
  const auto is_checkpoint = [](const fs::path& p) {
    std::error_code ec;
    return fs::exists(p / "config.json", ec) || fs::exists(p / "model.safetensors", ec) || fs::is_empty(p, ec);
  };
  write_folder_atomic(dir, fill, verify, is_checkpoint, "holds neither config.json nor model.safetensors",
                      options.before_step);
}

// ---------------------------------------------------------------------------------------------
// Loading into a ParameterStore
// ---------------------------------------------------------------------------------------------

/// A checkpoint folder loaded into a ParameterStore.
struct LoadedCheckpoint {
  Checkpoint checkpoint;                   ///< the opened folder (structure, run-time values, file)
  std::vector<ExtraTensor> extra_tensors;  ///< tensors of the file that are not store parameters
  std::vector<CheckpointFile> files;       ///< preprocessor_config.json and tokenizer files present
  bool recovered = false;                  ///< the folder was recovered from `<dir>.old`

  /// What write_checkpoint needs to write this folder again (config as loaded, its structure,
  /// the extra tensors and the files).
  CheckpointContents contents() const {
    CheckpointContents c;
    c.config = checkpoint.config_json;
    c.structure = checkpoint.structure;
    c.extra_tensors = extra_tensors;
    c.files = files;
    return c;
  }
};

/// Loads an opened checkpoint into a frozen store by name. Every store tensor must be in the file
/// with its shape (a 0-d tensor and a [1] one are the same) and a floating-point dtype (F16/BF16
/// are converted to float); the file's other tensors are returned as extra tensors, and the
/// folder's preprocessor_config.json and tokenizer files as files. Nothing in the store changes
/// unless everything checks out.
/// @param ck          from open_checkpoint (after recover_checkpoint_dir; the other overload does both)
/// @param store       a frozen store
/// @param expected    the structure the run is compiled for (Tag::config)
/// @param config_name its name for messages (Tag::name)
/// @throws qlip::Error, one line: the first config field that differs from `expected`, a missing
///         tensor, a shape or dtype mismatch (naming the tensor and the file)
inline LoadedCheckpoint load_checkpoint(Checkpoint ck, ParameterStore& store, const QlipConfig& expected,
                                        std::string_view config_name) {
  namespace fs = std::filesystem;
  QLIP_CHECK(store.frozen(), "load_checkpoint('", ck.dir, "'): the ParameterStore is not frozen");
  QLIP_CHECK(ck.file.has_value(), "load_checkpoint('", ck.dir, "'): the checkpoint is not open");
  const std::vector<std::string> diff = config_differences(ck.structure, expected, config_name);
  if (!diff.empty()) {
    QLIP_THROW("checkpoint '", ck.dir, "' is not a ", std::string(config_name), " checkpoint: ", diff.front(),
               diff.size() > 1 ? " (and " + std::to_string(diff.size() - 1) + " more differences)" : "");
  }
  const SafetensorsFile& f = *ck.file;
  for (const ParameterInfo& info : store.infos()) {
    if (!f.contains(info.name))
      QLIP_THROW(f.path(), ": missing tensor '", info.name, "' (a parameter of the ", std::string(config_name),
                 " model)");
    const auto& t = f.info(info.name);
    const bool scalar_alias = t.numel() == 1 && info.numel == 1 && t.shape.size() <= 1 && info.shape.size() <= 1;
    if (t.shape != info.shape && !scalar_alias)
      QLIP_THROW(f.path(), ": tensor '", info.name, "' has shape ", qlip::detail::vec_string(t.shape), ", the ",
                 std::string(config_name), " model expects ", qlip::detail::vec_string(info.shape));
    if (t.dtype != DType::f32 && t.dtype != DType::f16 && t.dtype != DType::bf16)
      QLIP_THROW(f.path(), ": tensor '", info.name, "' has dtype ", dtype_name(t.dtype),
                 ", expected a floating-point dtype (F32, F16 or BF16)");
  }
  LoadedCheckpoint out;
  for (const ParameterInfo& info : store.infos()) {
    const std::vector<float> v = f.to_float_vector(info.name);
    std::copy(v.begin(), v.end(), store.values().data() + info.offset);
  }
  for (const auto& t : f.tensors()) {
    if (store.contains(t.name)) continue;
    const std::span<const std::byte> b = f.bytes(t.name);
    out.extra_tensors.push_back({t.name, t.dtype, t.shape, std::vector<std::byte>(b.begin(), b.end())});
  }
  std::vector<std::string> names = {"preprocessor_config.json"};
  names.insert(names.end(), tokenizer_file_names().begin(), tokenizer_file_names().end());
  std::error_code ec;
  for (const std::string& n : names) {
    const fs::path path = fs::path(ck.dir) / n;
    if (fs::is_regular_file(path, ec)) out.files.push_back(CheckpointFile::read(path.string(), n));
  }
  out.checkpoint = std::move(ck);
  return out;
}

/// recover_checkpoint_dir(dir), open_checkpoint(dir), then the overload above.
inline LoadedCheckpoint load_checkpoint(const std::string& dir, ParameterStore& store, const QlipConfig& expected,
                                        std::string_view config_name) {
  const bool recovered = recover_checkpoint_dir(dir);
  LoadedCheckpoint out = load_checkpoint(open_checkpoint(dir), store, expected, config_name);
  out.recovered = recovered;
  return out;
}

}  // namespace qlip::train
