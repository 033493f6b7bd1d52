/// @file train_tiny.hpp
/// @brief The config tag of tests/data/train/train-tiny (tools/qlip_reference.py, config
///        "train-tiny"), shared by the tests that train it or load it for inference.
#pragma once

#include <string>

#include "qlip/model/config.hpp"

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
}  // namespace test

}  // namespace qlip
