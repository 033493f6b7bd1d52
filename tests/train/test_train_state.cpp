/// @file test_train_state.cpp
/// @brief train/train_state.hpp: a run saved after k steps (checkpoint + training state in one
///        folder) and resumed in fresh objects ends, after N − k more steps, with the same bits as a
///        run that never stopped; resuming against another config, layout or optimiser is refused
///        with one line naming what differs, and changes nothing.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "common/compare.hpp"
#include "common/train_tiny.hpp"
#include "qlip/train/checkpoint_writer.hpp"
#include "qlip/train/train_state.hpp"
#include "train/train_io_util.hpp"

namespace qlip {
namespace {

namespace fs = std::filesystem;
using test::load_rig;
using test::same_bits;
using test::ScratchDir;
using test::train_data;

const std::string kSource = train_data("train-tiny");

void expect_same_state(test::TrainTinyRig& a, test::TrainTinyRig& b) {
  ASSERT_EQ(a.store.buffer_size(), b.store.buffer_size());
  const std::int64_t n = a.store.buffer_size();
  for (const auto& info : a.store.infos())
    EXPECT_TRUE(same_bits(a.store.values().data() + info.offset, b.store.values().data() + info.offset, info.numel))
        << info.name;
  EXPECT_TRUE(same_bits(a.opt->state().exp_avg.data(), b.opt->state().exp_avg.data(), n));
  EXPECT_TRUE(same_bits(a.opt->state().exp_avg_sq.data(), b.opt->state().exp_avg_sq.data(), n));
  EXPECT_EQ(a.opt->step_count(), b.opt->step_count());
}

TEST(TrainState, ResumedRunIsBitIdenticalToAnUninterruptedOne) {
  constexpr std::int64_t kSteps = 4, kSaveAt = 2;
  ScratchDir scratch("resume");
  // Straight through.
  auto straight = load_rig(kSource);
  for (std::int64_t s = 0; s < kSteps; ++s) straight->step(s);

  // k steps, saved (weights and training state committed together), objects destroyed.
  const std::string dir = scratch.path("ckpt");
  const train::TrainProgress progress{0, kSaveAt, 0x1234abcdull, 77};
  {
    train::LoadedCheckpoint loaded;
    auto first = load_rig(kSource, &loaded);
    for (std::int64_t s = 0; s < kSaveAt; ++s) first->step(s);
    train::CheckpointContents c = loaded.contents();
    c.generated_files.push_back(
        train::train_state_file(TrainTinyQlip::name, *first->opt, progress, {{"lr_vision", "2e-4"}}));
    train::write_checkpoint(dir, first->store, c);
  }
  EXPECT_TRUE(open_checkpoint(dir).structure == TrainTinyQlip::config);  // the state file is ignored there

  // Fresh objects: load the weights, restore the state, continue from the saved position.
  auto resumed = load_rig(dir);
  const train::TrainStateInfo info =
      train::read_train_state(dir + "/" + train::kTrainStateFileName, TrainTinyQlip::name, *resumed->opt);
  EXPECT_EQ(info.step, kSaveAt);
  EXPECT_EQ(resumed->opt->step_count(), kSaveAt);
  EXPECT_TRUE(info.progress == progress);
  EXPECT_EQ(info.config_name, "train-tiny");
  EXPECT_EQ(info.optimizer, train::OptimizerKind::lamb);
  EXPECT_EQ(info.user, (std::map<std::string, std::string>{{"lr_vision", "2e-4"}}));
  EXPECT_EQ(info.layout_hash, train::parameter_layout_hash(resumed->store));
  for (std::int64_t s = info.progress.batch_index; s < kSteps; ++s) resumed->step(s);
  expect_same_state(*straight, *resumed);
}

/// A store with train-tiny's layout, one tensor's shape replaced (or dropped when shape is empty),
/// and an optimiser of `kind` over it.
struct OtherRun {
  train::ParameterStore store;
  std::unique_ptr<train::Optimizer> opt;
  OtherRun(const train::ParameterStore& like, const std::string& change, std::vector<std::int64_t> shape,
           train::OptimizerKind kind) {
    for (const auto& info : like.infos()) {
      if (info.name != change) {
        store.add(info.name, info.shape, info.group, info.decay);
      } else if (!shape.empty()) {
        store.add(info.name, shape, info.group, info.decay);
      }
    }
    store.freeze();
    train::OptimizerOptions o;
    o.kind = kind;
    std::vector<train::ParamGroup> groups(5, train::ParamGroup{"g", 1e-3, 0.0});
    opt = std::make_unique<train::Optimizer>(store, groups, o);
  }
};

TEST(TrainState, ResumeOfAnotherRunIsRefusedNamingWhatDiffers) {
  ScratchDir scratch("refuse");
  auto rig = load_rig(kSource);
  rig->step(0);
  const std::string path = scratch.path("state.safetensors");
  train::write_train_state(path, TrainTinyQlip::name, *rig->opt, {1, 3, 5, 9});

  auto fresh = load_rig(kSource);
  const auto lamb = train::OptimizerKind::lamb;
  test::expect_error_naming([&] { train::read_train_state(path, "qlip-test-tiny", *fresh->opt); },
                            "state.safetensors: the training state is of config 'train-tiny', this run is "
                            "'qlip-test-tiny'");
  {
    OtherRun other(rig->store, "visual_projection.weight", {16, 31}, lamb);
    test::expect_error_naming([&] { train::read_train_state(path, TrainTinyQlip::name, *other.opt); },
                              "does not fit this run's parameters: parameter 'visual_projection.weight' has shape "
                              "[16, 32] in the training state, [16, 31] in this run");
    EXPECT_EQ(other.opt->step_count(), 0);
  }
  {
    OtherRun other(rig->store, "text_projection.weight", {}, lamb);
    test::expect_error_naming([&] { train::read_train_state(path, TrainTinyQlip::name, *other.opt); },
                              "the training state's parameter 'text_projection.weight' is not in this run");
  }
  {
    OtherRun other(rig->store, "", {}, train::OptimizerKind::adamw);
    test::expect_error_naming([&] { train::read_train_state(path, TrainTinyQlip::name, *other.opt); },
                              "the training state is of the lamb optimiser, this run uses adamw");
  }
  test::expect_error_naming(
      [&] { train::read_train_state(kSource + "/model.safetensors", TrainTinyQlip::name, *fresh->opt); },
      "not a qlip training state");
  // Refusals changed nothing.
  EXPECT_EQ(fresh->opt->step_count(), 0);
  const auto st = fresh->opt->state();
  for (std::int64_t i = 0; i < st.exp_avg.size(0); ++i) ASSERT_EQ(st.exp_avg(i), 0.0f);

  // Every refusal is one line.
  try {
    train::read_train_state(path, "qlip-test-tiny", *fresh->opt);
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
  }
}

TEST(TrainState, MalformedMetadataIsRefused) {
  ScratchDir scratch("malformed");
  auto rig = load_rig(kSource);
  const std::string path = scratch.path("state.safetensors");
  train::write_train_state(path, TrainTinyQlip::name, *rig->opt, {});
  const SafetensorsFile good = SafetensorsFile::open(path);
  // Rewrites the file with one metadata value replaced.
  auto with = [&](const std::string& key, const std::string& value) {
    std::map<std::string, std::string> meta = good.metadata();
    meta[key] = value;
    SafetensorsWriter w;
    for (const auto& t : good.tensors()) w.add_raw(t.name, t.dtype, t.shape, good.bytes(t.name).data());
    const std::string p = scratch.path(key + ".safetensors");
    w.write(p, meta);
    return p;
  };
  test::expect_error_naming([&] { train::read_train_state_info(with("step", "12x")); },
                            "metadata 'step' = \"12x\" is not an integer");
  test::expect_error_naming([&] { train::read_train_state_info(with("version", "2")); },
                            "training state version 2, this build reads version 1");
  test::expect_error_naming(
      [&] { train::read_train_state(with("layout_hash", "0000000000000001"), TrainTinyQlip::name, *rig->opt); },
      "the file is corrupt");
  test::expect_error_naming([&] { train::write_train_state(path, "", *rig->opt, {}); }, "empty config name");
}

}  // namespace
}  // namespace qlip
