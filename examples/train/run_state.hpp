/// @file run_state.hpp
/// @brief Saving and resuming a qlip-train run: one checkpoint folder in the official layout that
///        also holds the training state (optimiser moments, step, loader position), committed
///        together atomically (train/checkpoint_writer.hpp), so a kill at any moment leaves either
///        the previous save or the new one, never a mix.
#pragma once

#include <charconv>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/train/checkpoint_writer.hpp"
#include "qlip/reference/rope.hpp"
#include "qlip/train/train_state.hpp"
#include "train/data_source.hpp"

namespace qlip::train_cli {

/// The settings that decide what a run computes, as (command-line flag, value) pairs: a resumed run
/// continues bit-exactly only with the same ones. Stored in the training state's metadata; flags that
/// change no result (--threads, --max-minutes, --save-every, ...) are not among them.
using RunSettings = std::vector<std::pair<std::string, std::string>>;

/// A number as the shortest text that reads back as the same double (std::to_chars), so equal
/// settings compare equal as strings and messages show 0.0002, not 0.00020000000000000001.
inline std::string setting_text(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

/// Refuses to resume with settings that differ from the saved run's, naming the first flag that
/// does. Checkpoints written before settings were stored have none, and pass.
/// @throws qlip::Error "--resume: the run in DIR was started with --alpha-recon 1000, not 100 ..."
inline void check_resume_settings(const std::string& dir, const std::map<std::string, std::string>& saved,
                                  const RunSettings& now) {
  for (const auto& [flag, value] : now) {
    const auto it = saved.find(flag);
    if (it == saved.end() || it->second == value) continue;
    QLIP_THROW("--resume: the run in ", dir, " was started with ", flag, " ", it->second, ", not ", value,
               " (a resumed run continues exactly only with its own settings; start a new --out to change them)");
  }
}

/// Writes `dir` (config.json, model.safetensors, preprocessor_config.json, the CLIP vocabulary,
/// training_state.safetensors with `settings` and `extra` (state that is not a flag) in its
/// metadata, and `more_files`: the discriminator's in stage 2) for the state after `step` steps.
inline void save_run(const std::string& dir, const std::string& vocab_gz, const char* config_name,
                     const QlipConfig& structure, const QlipRuntimeConfig& rt, train::ParameterStore& store,
                     train::Optimizer& opt, const TrainData& data, std::uint64_t seed, const RunSettings& settings,
                     const RunSettings& extra = {}, std::vector<train::GeneratedFile> more_files = {}) {
  train::CheckpointContents c;
  c.config = train::config_json_from(structure, rt);
  c.structure = structure;
  c.files.push_back(train::CheckpointFile::read(vocab_gz, "bpe_simple_vocab_16e6.txt.gz"));
  // The official files carry each rotary tower's table as buffers (MODEL.md §5.2); the PyTorch
  // reference loads strictly, so they are written (computed as PyTorch computes them, §2.4).
  const auto add_rope = [&](const char* tower, const VisionConfig& v) {
    const RopeTable t = reference::rope2d_table(v.grid(), v.stack.head_dim());
    const std::vector<std::int64_t> shape(t.cos.shape().begin(), t.cos.shape().end());
    c.extra_tensors.push_back(train::ExtraTensor::from_floats(std::string(tower) + ".rope.freqs_cos", shape,
                                                              std::vector<float>(t.cos.data(), t.cos.data() + t.cos.numel())));
    c.extra_tensors.push_back(train::ExtraTensor::from_floats(std::string(tower) + ".rope.freqs_sin", shape,
                                                              std::vector<float>(t.sin.data(), t.sin.data() + t.sin.numel())));
  };
  if (rt.vision.rope) add_rope("vision_model", structure.vision);
  if (rt.decoder.rope) add_rope("vision_decoder", structure.decoder);
  const data::LoaderPosition pos = data.loader->position();
  const train::TrainProgress progress{static_cast<std::int64_t>(pos.epoch), pos.batch, seed, 0};
  std::map<std::string, std::string> user(settings.begin(), settings.end());
  user.insert(extra.begin(), extra.end());
  c.generated_files.push_back(train::train_state_file(config_name, opt, progress, user));
  for (train::GeneratedFile& f : more_files) c.generated_files.push_back(std::move(f));
  train::write_checkpoint(dir, store, c);
}

/// Loads the parameters and the training state of `dir` into store and opt, moves the loader to
/// where the saved run stood, and returns the step to continue from.
/// @throws qlip::Error when `dir` holds no checkpoint, one of another config (naming the field that
///         differs), a training state of another optimiser or layout, or one saved with other
///         `settings` (naming the flag)
inline std::int64_t restore_run(const std::string& dir, const char* config_name, const QlipConfig& structure,
                                train::ParameterStore& store, train::Optimizer& opt, TrainData& data,
                                const RunSettings& settings, std::map<std::string, std::string>* saved = nullptr) {
  (void)train::load_checkpoint(dir, store, structure, config_name);
  const train::TrainStateInfo info =
      train::read_train_state(dir + "/" + train::kTrainStateFileName, config_name, opt);
  check_resume_settings(dir, info.user, settings);
  if (saved) *saved = info.user;
  data.loader->seek({static_cast<std::uint64_t>(info.progress.epoch), info.progress.batch_index});
  return info.step;
}

}  // namespace qlip::train_cli
