/// @file train_state.hpp
/// @brief The training-state file: what a run needs besides the parameter values to continue
///        exactly where it stopped — the optimiser moments and step count, the data loader's
///        position, the RNG state — plus what identifies the run (config name, parameter layout),
///        so that resuming against a checkpoint of another config is refused.
///
/// Format: a safetensors file (default name kTrainStateFileName), written atomically (temp file +
/// fsync + rename, io/safetensors.hpp). Tensors, one pair per store tensor, with its store shape:
///   "exp_avg/<name>", "exp_avg_sq/<name>"   F32   the optimiser's m and v (train/optimizer.hpp)
/// Metadata (all strings; integers in decimal):
///   format = "qlip-train-state", version = "1", config_name, optimizer ("adamw" | "lamb"),
///   step (optimiser steps taken), epoch, batch_index (the loader position the caller passes:
///   the next batch to draw), rng_seed, rng_counter (Philox is counter-based, core/philox.hpp:
///   a key and the next counter are its whole state), layout_hash (16 hex digits, FNV-1a 64 of
///   the names and shapes, parameter_layout_hash()), layout (JSON [[name, [shape...]], ...]: lets a
///   refusal name the tensor that differs), and the caller's own entries under "user.<key>".
///
/// Where: inside the checkpoint folder (train_state_file() passed to write_checkpoint as a
/// generated file), so the weights and the moments are committed by the same rename and can never
/// come from two different steps; write_train_state() writes a file anywhere.
///
/// Resuming: load the checkpoint into the store (load_checkpoint), build the Optimizer as for a
/// fresh run (same groups and options), then read_train_state() restores the moments and the step
/// count and returns the loader position and RNG state. Continuing then gives bit-identical
/// parameters to a run that never stopped (the step is deterministic for a given thread count).
#pragma once

#include <charconv>
#include <cstdint>
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "qlip/core/error.hpp"
#include "qlip/io/json.hpp"
#include "qlip/io/safetensors.hpp"
#include "qlip/train/checkpoint_writer.hpp"
#include "qlip/train/optimizer.hpp"
#include "qlip/train/parameter_store.hpp"

namespace qlip::train {

/// File name of the training state inside a checkpoint folder.
inline constexpr const char* kTrainStateFileName = "training_state.safetensors";
/// The "format" metadata value, and the version this header writes and reads.
inline constexpr const char* kTrainStateFormat = "qlip-train-state";
inline constexpr int kTrainStateVersion = 1;

/// Where the run is, besides the optimiser: plain integers the caller owns.
struct TrainProgress {
  std::int64_t epoch = 0;         ///< passes over the data completed
  std::int64_t batch_index = 0;   ///< the next batch of the current epoch
  std::uint64_t rng_seed = 0;     ///< Philox key
  std::uint64_t rng_counter = 0;  ///< next Philox counter
  constexpr bool operator==(const TrainProgress&) const = default;
};

/// What a training-state file says besides the moments.
struct TrainStateInfo {
  std::string config_name;
  OptimizerKind optimizer = OptimizerKind::adamw;
  std::int64_t step = 0;
  TrainProgress progress;
  std::uint64_t layout_hash = 0;
  std::map<std::string, std::string> user;  ///< the caller's metadata ("user." prefix removed)
};

/// FNV-1a 64 over "name:d0,d1,...;" of every store tensor in order (store shapes, so logit_scale
/// is [1]). Two stores with the same hash have the same layout (collisions aside: the file also
/// carries the layout itself, which read_train_state compares).
inline std::uint64_t parameter_layout_hash(const ParameterStore& store) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&](std::string_view s) {
    for (const char c : s) {
      h ^= static_cast<unsigned char>(c);
      h *= 0x100000001b3ull;
    }
  };
  for (const ParameterInfo& info : store.infos()) {
    mix(info.name);
    mix(":");
    for (std::size_t d = 0; d < info.shape.size(); ++d) {
      if (d > 0) mix(",");  // mixed apart: GCC 12 misreads `"," + std::to_string(n)` as an overlapping memcpy
      mix(std::to_string(info.shape[d]));
    }
    mix(";");
  }
  return h;
}

namespace state_detail {

inline const char* optimizer_name(OptimizerKind k) {
  return k == OptimizerKind::lamb ? "lamb" : "adamw";
}

inline std::string hex64(std::uint64_t v) {
  static const char* digits = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) s[static_cast<std::size_t>(i)] = digits[v & 15];
  return s;
}

inline nlohmann::json layout_json(const ParameterStore& store) {
  nlohmann::json j = nlohmann::json::array();
  for (const ParameterInfo& info : store.infos()) j.push_back({info.name, info.shape});
  return j;
}

/// The metadata map of a training state.
inline std::map<std::string, std::string> train_state_metadata(std::string_view config_name, const Optimizer& opt,
                                                               std::int64_t step, const ParameterStore& store,
                                                               const TrainProgress& progress,
                                                               const std::map<std::string, std::string>& user) {
  QLIP_CHECK(!config_name.empty(), "training state: empty config name");
  QLIP_CHECK(progress.epoch >= 0 && progress.batch_index >= 0, "training state: negative loader position (epoch ",
             progress.epoch, ", batch_index ", progress.batch_index, ")");
  std::map<std::string, std::string> m;
  m["format"] = kTrainStateFormat;
  m["version"] = std::to_string(kTrainStateVersion);
  m["config_name"] = std::string(config_name);
  m["optimizer"] = optimizer_name(opt.options().kind);
  m["step"] = std::to_string(step);
  m["epoch"] = std::to_string(progress.epoch);
  m["batch_index"] = std::to_string(progress.batch_index);
  m["rng_seed"] = std::to_string(progress.rng_seed);
  m["rng_counter"] = std::to_string(progress.rng_counter);
  m["layout_hash"] = hex64(parameter_layout_hash(store));
  m["layout"] = layout_json(store).dump();
  for (const auto& [k, v] : user) {
    QLIP_CHECK(!k.empty(), "training state: empty user metadata key");
    m["user." + k] = v;
  }
  return m;
}

/// An unsigned/signed integer from a metadata string, the whole string (no sign for unsigned).
template <class I>
I metadata_integer(const SafetensorsFile& f, const std::string& key) {
  const auto it = f.metadata().find(key);
  if (it == f.metadata().end()) QLIP_THROW(f.path(), ": training state has no metadata '", key, "'");
  const std::string& s = it->second;
  I v{};
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v, key == "layout_hash" ? 16 : 10);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || s.empty())
    QLIP_THROW(f.path(), ": training state metadata '", key, "' = \"", qlip::detail::utf8_prefix(s, 40),
               "\" is not an integer");
  return v;
}

inline const std::string& metadata_text(const SafetensorsFile& f, const std::string& key) {
  const auto it = f.metadata().find(key);
  if (it == f.metadata().end()) QLIP_THROW(f.path(), ": training state has no metadata '", key, "'");
  return it->second;
}

/// The first difference between the layout a file lists and the store's, or "" when none.
inline std::string layout_difference(const SafetensorsFile& f, const ParameterStore& store) {
  const nlohmann::json layout = parse_json(metadata_text(f, "layout"), f.path() + ": metadata 'layout'");
  QLIP_CHECK(layout.is_array(), f.path(), ": metadata 'layout' is not a JSON array");
  std::map<std::string, std::vector<std::int64_t>> listed;
  std::vector<std::string> order;
  for (const auto& e : layout) {
    QLIP_CHECK(e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_array(), f.path(),
               ": metadata 'layout' has an entry that is not [name, shape]: ", json_excerpt(e));
    std::vector<std::int64_t> shape;
    for (const auto& d : e[1]) {
      QLIP_CHECK(d.is_number_integer(), f.path(), ": metadata 'layout': shape of '", e[0].get<std::string>(),
                 "' is not a list of integers");
      shape.push_back(d.get<std::int64_t>());
    }
    order.push_back(e[0].get<std::string>());
    listed[order.back()] = std::move(shape);
  }
  for (const ParameterInfo& info : store.infos()) {
    const auto it = listed.find(info.name);
    if (it == listed.end()) return "this run's parameter '" + info.name + "' is not in the training state";
    if (it->second != info.shape)
      return "parameter '" + info.name + "' has shape " + qlip::detail::vec_string(it->second) +
             " in the training state, " + qlip::detail::vec_string(info.shape) + " in this run";
  }
  for (const std::string& n : order)
    if (!store.contains(n)) return "the training state's parameter '" + n + "' is not in this run";
  for (std::size_t i = 0; i < order.size(); ++i)
    if (order[i] != store.infos()[i].name)
      return "the parameters are in another order (#" + std::to_string(i) + " is '" + order[i] +
             "' in the training state, '" + store.infos()[i].name + "' in this run)";
  return {};
}

}  // namespace state_detail

/// Writes the training state of `opt` (its store's layout, moments and step count) to `path`
/// atomically.
/// @param path        the file to create or replace
/// @param config_name the run's config (Tag::name); resuming under another name is refused
/// @param opt         the optimiser (its moments are written without a copy)
/// @param progress    loader position and RNG state
/// @param user        extra metadata, stored as "user.<key>"
/// @throws qlip::Error naming the file on any write error (an existing file is then unchanged)
inline void write_train_state(const std::string& path, std::string_view config_name, Optimizer& opt,
                              const TrainProgress& progress, const std::map<std::string, std::string>& user = {}) {
  const OptimizerState st = opt.state();
  const ParameterStore& store = opt.store();
  const auto meta = state_detail::train_state_metadata(config_name, opt, st.step, store, progress, user);
  std::vector<SafetensorsEntry> entries;
  entries.reserve(2 * store.infos().size());
  for (const auto& [prefix, base] : {std::pair<std::string, const float*>{"exp_avg/", st.exp_avg.data()},
                                     std::pair<std::string, const float*>{"exp_avg_sq/", st.exp_avg_sq.data()}})
    for (const ParameterInfo& info : store.infos())
      entries.push_back({prefix + info.name, DType::f32, info.shape, base + info.offset});
  write_safetensors(path, entries, meta);
}

/// write_train_state() as a file of a checkpoint folder: pass it in
/// CheckpointContents::generated_files so the state is committed with the weights. `opt` must
/// outlive the write_checkpoint call.
inline GeneratedFile train_state_file(std::string config_name, Optimizer& opt, const TrainProgress& progress,
                                      std::map<std::string, std::string> user = {}) {
  return {kTrainStateFileName, [name = std::move(config_name), &opt, progress, user = std::move(user)](
                                   const std::string& path) { write_train_state(path, name, opt, progress, user); }};
}

/// Reads the metadata of a training-state file without restoring anything (e.g. to print it, or to
/// know the step before building the optimiser).
/// @throws qlip::Error naming the file: not a training state, another version, malformed metadata
inline TrainStateInfo read_train_state_info(const std::string& path) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  const auto fmt = f.metadata().find("format");
  QLIP_CHECK(fmt != f.metadata().end() && fmt->second == kTrainStateFormat, path,
             ": not a qlip training state (metadata 'format' is not \"", kTrainStateFormat, "\")");
  const int version = state_detail::metadata_integer<int>(f, "version");
  QLIP_CHECK(version == kTrainStateVersion, path, ": training state version ", version, ", this build reads version ",
             kTrainStateVersion);
  TrainStateInfo info;
  info.config_name = state_detail::metadata_text(f, "config_name");
  const std::string& opt = state_detail::metadata_text(f, "optimizer");
  QLIP_CHECK(opt == "adamw" || opt == "lamb", path, ": training state metadata 'optimizer' = \"",
             qlip::detail::utf8_prefix(opt, 40), "\", expected \"adamw\" or \"lamb\"");
  info.optimizer = opt == "lamb" ? OptimizerKind::lamb : OptimizerKind::adamw;
  info.step = state_detail::metadata_integer<std::int64_t>(f, "step");
  info.progress.epoch = state_detail::metadata_integer<std::int64_t>(f, "epoch");
  info.progress.batch_index = state_detail::metadata_integer<std::int64_t>(f, "batch_index");
  info.progress.rng_seed = state_detail::metadata_integer<std::uint64_t>(f, "rng_seed");
  info.progress.rng_counter = state_detail::metadata_integer<std::uint64_t>(f, "rng_counter");
  info.layout_hash = state_detail::metadata_integer<std::uint64_t>(f, "layout_hash");
  QLIP_CHECK(info.step >= 0 && info.progress.epoch >= 0 && info.progress.batch_index >= 0, path,
             ": training state has a negative step, epoch or batch index");
  for (const auto& [k, v] : f.metadata())
    if (k.rfind("user.", 0) == 0) info.user[k.substr(5)] = v;
  return info;
}

/// Restores a training state into `opt` (moments and step count) after checking, in this order,
/// that it is one (format, version), of config `config_name`, of the same optimiser kind, and of
/// the same parameter layout as opt's store. Nothing changes unless every check passes.
/// @return the file's metadata: the loader position and RNG state to continue from
/// @throws qlip::Error, one line naming what differs (the two config names, the two optimisers,
///         the first tensor whose presence or shape differs) or what is malformed, and the file
inline TrainStateInfo read_train_state(const std::string& path, std::string_view config_name, Optimizer& opt) {
  const TrainStateInfo info = read_train_state_info(path);
  QLIP_CHECK(info.config_name == config_name, path, ": the training state is of config '", info.config_name,
             "', this run is '", std::string(config_name), "'");
  QLIP_CHECK(info.optimizer == opt.options().kind, path, ": the training state is of the ",
             state_detail::optimizer_name(info.optimizer), " optimiser, this run uses ",
             state_detail::optimizer_name(opt.options().kind));
  const SafetensorsFile f = SafetensorsFile::open(path);
  const ParameterStore& store = opt.store();
  const std::string diff = state_detail::layout_difference(f, store);
  QLIP_CHECK(diff.empty(), path, ": the training state does not fit this run's parameters: ", diff);
  QLIP_CHECK(info.layout_hash == parameter_layout_hash(store), path, ": metadata 'layout_hash' ",
             state_detail::hex64(info.layout_hash), " does not match its own layout (",
             state_detail::hex64(parameter_layout_hash(store)), "): the file is corrupt");
  for (const char* which : {"exp_avg/", "exp_avg_sq/"})
    for (const ParameterInfo& p : store.infos()) {
      const std::string name = which + p.name;
      QLIP_CHECK(f.contains(name), path, ": training state has no tensor '", name, "'");
      const auto& t = f.info(name);
      QLIP_CHECK(t.dtype == DType::f32 && t.shape == p.shape, path, ": tensor '", name, "' is ", dtype_name(t.dtype),
                 " ", qlip::detail::vec_string(t.shape), ", expected F32 ", qlip::detail::vec_string(p.shape));
    }
  OptimizerState st = opt.state();
  for (const auto& [prefix, base] : {std::pair<std::string, float*>{"exp_avg/", st.exp_avg.data()},
                                     std::pair<std::string, float*>{"exp_avg_sq/", st.exp_avg_sq.data()}})
    for (const ParameterInfo& p : store.infos()) {
      const std::span<const std::byte> b = f.bytes(prefix + p.name);
      if (!b.empty()) std::memcpy(base + p.offset, b.data(), b.size());
    }
  opt.set_step_count(info.step);
  return info;
}

}  // namespace qlip::train
