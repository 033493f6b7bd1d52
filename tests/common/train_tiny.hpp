/// @file train_tiny.hpp
/// @brief The config tag of tests/data/train/train-tiny (tools/qlip_reference.py, config
///        "train-tiny"), shared by the tests that train it or load it for inference.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "qlip/model/config.hpp"
#include "qlip/reference/bsq_loss.hpp"

namespace qlip {

/// tests/data/train/train-tiny: EVA-02 vision/decoder (width 32, 2 layers, SwiGLU 64, no k bias),
/// a plain text tower (width 32, 2 layers, vocab 512, context 16, no k bias), 28-bit BSQ.
struct TrainTinyQlip {
  static constexpr const char* name = "train-tiny";
  static constexpr QlipConfig config{
      .vision = {16, 4, 3, {32, 2, 2, 64, MlpKind::swiglu, true, true, false, true}},
      .quantizer = {28, 32},
      .decoder = {16, 4, 3, {32, 2, 2, 64, MlpKind::swiglu, true, true, false, true}},
      .text = {512, 16, {32, 2, 2, 64, MlpKind::plain, false, true, false, true}},
      .projection_dim = 16,
      .vision_projection_bias = true,
      .text_projection_bias = false,
  };
};

namespace test {
/// A file or folder under tests/data/train/.
inline std::string train_data(const std::string& p) {
  return std::string(QLIP_TEST_DATA_DIR) + "/train/" + p;
}

/// The BSQ loss settings of a PyTorch fixture's "hyperparameters" (tools/qlip_train_reference.py).
inline BsqLossConfig bsq_config_from(const nlohmann::json& hp) {
  BsqLossConfig bsq;
  bsq.inv_temperature = hp.at("inv_temperature").get<double>();
  bsq.group_size = hp.at("group_size").get<int>();
  bsq.gamma0 = hp.at("gamma_0").get<double>();
  bsq.gamma1 = hp.at("gamma_1").get<double>();
  bsq.beta = hp.at("beta").get<double>();
  bsq.mode = hp.at("persample_entropy_compute").get<std::string>() == "group" ? BsqEntropyMode::group
                                                                             : BsqEntropyMode::analytical;
  return bsq;
}
}  // namespace test

}  // namespace qlip
