/// @file train_io_util.hpp
/// @brief A train-tiny training rig for the checkpoint and training-state tests: the trainable
///        model bound to a ParameterStore (recipe groups as in test_train_parity.cpp), a LAMB
///        optimiser with the parity fixture's hyper-parameters, the fixture batches, scratch folders.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/train_tiny.hpp"
#include "qlip/cpu/activation.hpp"
#include "qlip/cpu/add.hpp"
#include "qlip/cpu/attention.hpp"
#include "qlip/cpu/bsq_loss.hpp"
#include "qlip/cpu/contrastive_loss.hpp"
#include "qlip/cpu/copy.hpp"
#include "qlip/cpu/embedding.hpp"
#include "qlip/cpu/gemm.hpp"
#include "qlip/cpu/l2_norm.hpp"
#include "qlip/cpu/layer_norm.hpp"
#include "qlip/cpu/mse_loss.hpp"
#include "qlip/cpu/patchify.hpp"
#include "qlip/cpu/rope.hpp"
#include "qlip/io/json.hpp"
#include "qlip/io/safetensors.hpp"
#include "qlip/model/checkpoint.hpp"
#include "qlip/model/qlip_trainable.hpp"
#include "qlip/train/checkpoint_writer.hpp"
#include "qlip/train/clip_grad.hpp"
#include "qlip/train/optimizer.hpp"
#include "qlip/train/parameter_store.hpp"

namespace qlip::test {

/// A folder under the system temp folder, removed (with its siblings "<path>.*") on destruction.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag)
      : root_(std::filesystem::temp_directory_path() /
              ("qlip-train-io-" + std::to_string(static_cast<long long>(::getpid())) + "-" + tag)) {
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string path(const std::string& name) const { return (root_ / name).string(); }
  const std::filesystem::path& root() const { return root_; }

 private:
  std::filesystem::path root_;
};

/// The whole file as bytes ("" when it cannot be read).
inline std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

/// The recipe's group of a tensor (QLIP_SPEC §4.2; as in test_train_parity.cpp).
inline int train_tiny_group(const std::string& n) {
  if (n == "logit_scale") return 4;
  if (n.starts_with("vision_decoder.")) return 2;
  if (n.find("quant_embed") != std::string::npos) return 1;
  if (n.starts_with("text_model.") || n.starts_with("text_projection")) return 3;
  return 0;
}

/// The parity fixture's hyper-parameters (tests/data/train/lamb_steps.json).
inline const nlohmann::json& lamb_hyperparameters() {
  static const nlohmann::json hp = read_json(train_data("lamb_steps.json")).at("hyperparameters");
  return hp;
}

/// train-tiny bound to a store, with a LAMB optimiser: registration and binding exactly as the
/// parity test does them. Not movable (the model's views point into the store).
struct TrainTinyRig {
  using Model = QlipTrainable<TrainTinyQlip, cpu_backend>;
  std::unique_ptr<Model> model;
  train::ParameterStore store;
  std::unique_ptr<train::Optimizer> opt;
  Stage1Weights weights;

  /// Registers, freezes and binds; the values stay zero (load them with train::load_checkpoint).
  explicit TrainTinyRig(const QlipRuntimeConfig& rt) {
    const nlohmann::json& hp = lamb_hyperparameters();
    const BsqLossConfig bsq = test::bsq_config_from(hp);
    weights = {hp.at("alpha_a").get<double>(), hp.at("alpha_r").get<double>(), hp.at("alpha_q").get<double>(),
               hp.at("alpha_z").get<double>()};
    model = std::make_unique<Model>(rt, bsq);
    model->visit_parameters([&](const std::string& name, auto& p) {
      const std::vector<std::int64_t> shape(p.shape.begin(), p.shape.end());
      store.add(name, shape, train_tiny_group(name), !train::default_no_decay(name, shape.size()));
    });
    store.freeze();
    model->visit_parameters([&](const std::string& name, auto& p) {
      constexpr int R = static_cast<int>(std::tuple_size_v<decltype(p.shape)>);
      const int i = store.index_of(name);
      p.value = store.template view<R>(i);
      p.grad = store.template grad_view<R>(i);
    });
    train::OptimizerOptions options;
    options.kind = train::OptimizerKind::lamb;
    options.beta1 = hp.at("beta1").get<double>();
    options.beta2 = hp.at("beta2").get<double>();
    options.eps = hp.at("eps").get<double>();
    options.schedule = {hp.at("warmup_steps").get<std::int64_t>(), hp.at("steps").get<std::int64_t>(), 0.0};
    const double wd = hp.at("weight_decay").get<double>();
    std::vector<train::ParamGroup> groups;
    for (const char* g : {"vision", "quantizer", "decoder", "text", "logit_scale"})
      groups.push_back({g, hp.at(std::string("lr_") + g).get<double>(), wd});
    opt = std::make_unique<train::Optimizer>(store, groups, options);
  }
  TrainTinyRig(const TrainTinyRig&) = delete;
  TrainTinyRig& operator=(const TrainTinyRig&) = delete;

  /// One stage-1 step on fixture batch `b` (as the parity test: clip, step, clamp the logit scale).
  void step(std::int64_t b) {
    static const SafetensorsFile batches = SafetensorsFile::open(train_data("batches.safetensors"));
    static const Tensor<float, 5> pixels = batches.to_float<5>("pixel_values");
    const HostView<const std::int32_t, 3> ids = batches.view<std::int32_t, 3>("input_ids");
    const std::int64_t n = pixels.size(1), tokens = ids.size(2);
    if (!prepared_) {
      model->prepare(n, tokens);
      prepared_ = true;
    }
    store.zero_grad();
    const HostView<const float, 4> px = pixels.view().select(0, b);
    const HostView<const std::int32_t, 2> id = ids.select(0, b);
    const HostView<const std::int32_t, 1> flat(id.data(), {n * tokens});
    model->forward_backward(px, id, flat, weights);
    const double norm = train::grad_norm(store);
    opt->step(train::clip_coefficient(norm, lamb_hyperparameters().at("grad_clip").get<double>()));
    float& ls = store.view<1>(store.index_of("logit_scale"))(0);
    ls = clamp_logit_scale(ls);
  }

 private:
  bool prepared_ = false;
};

/// A rig with train-tiny's run-time values, loaded from `dir` (by name, through train::load_checkpoint).
inline std::unique_ptr<TrainTinyRig> load_rig(const std::string& dir, train::LoadedCheckpoint* loaded = nullptr) {
  train::recover_checkpoint_dir(dir);
  Checkpoint ck = open_checkpoint(dir);
  auto rig = std::make_unique<TrainTinyRig>(ck.runtime);
  train::LoadedCheckpoint l =
      train::load_checkpoint(std::move(ck), rig->store, TrainTinyQlip::config, TrainTinyQlip::name);
  if (loaded != nullptr) *loaded = std::move(l);
  return rig;
}

/// True when two float spans hold the same bits.
inline bool same_bits(const float* a, const float* b, std::int64_t n) {
  return std::memcmp(a, b, static_cast<std::size_t>(n) * sizeof(float)) == 0;
}

}  // namespace qlip::test
