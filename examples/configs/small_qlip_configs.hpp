/// @file small_qlip_configs.hpp
/// @brief Two small QLIP configs that are not released checkpoints: the committed test checkpoints
///        in tests/data/qlip/ (random weights from tools/qlip_reference.py). The demo, the CLI and the
///        tests use them; nothing in include/ knows them, so a user's program never instantiates them.
///
/// This is also what a user's own config looks like: a tag type with a `name` and a `QlipConfig`
/// (every shape the weights fix; run-time values such as LayerNorm eps come from config.json), and a
/// TypeList handed to `with_qlip_model<List>(dir, f)` — or `QlipModel<Tag>::load(dir)` for one config.
#pragma once

#include "configs/demo_qlip_config.hpp"
#include "qlip/model/config.hpp"

namespace qlip {

/// tests/data/qlip/qlip-test-tiny: EVA-02 style towers, every feature on.
struct QlipTestTiny {
  static constexpr const char* name = "qlip-test-tiny";
  static constexpr QlipConfig config{
      .vision = {32, 8, 3, {64, 2, 4, 176, MlpKind::swiglu, true, true, false, true}},
      .quantizer = {28, 64},
      .decoder = {32, 8, 3, {64, 2, 4, 176, MlpKind::swiglu, true, true, false, true}},
      .text = {49408, 77, {32, 2, 2, 128, MlpKind::plain, false, true, true, true}},
      .projection_dim = 32,
      .vision_projection_bias = true,
      .text_projection_bias = false,
  };
};

/// tests/data/qlip/qlip-test-plain: CLIP-style towers, the other branches.
struct QlipTestPlain {
  static constexpr const char* name = "qlip-test-plain";
  static constexpr QlipConfig config{
      .vision = {24, 4, 3, {48, 3, 3, 96, MlpKind::plain, false, true, true, true}},
      .quantizer = {28, 40},
      .decoder = {24, 4, 3, {40, 2, 2, 80, MlpKind::plain, false, true, true, true}},
      .text = {49408, 77, {32, 2, 2, 64, MlpKind::plain, false, true, true, true}},
      .projection_dim = 24,
      .vision_projection_bias = false,
      .text_projection_bias = true,
  };
};

static_assert(qlip_config_tag<QlipTestTiny> && qlip_config_tag<QlipTestPlain>);

/// The small configs alone.
using SmallQlipConfigs = TypeList<QlipTestTiny, QlipTestPlain>;

/// What the example programs dispatch over: the released configs, the small test ones and the demo
/// config qlip-train builds (so `qlip` reads what `qlip-train` writes).
using ExampleQlipConfigs = TypeList<QlipB16_256, QlipB8_256, QlipL14_392, QlipTestTiny, QlipTestPlain, QlipDemoFashion>;

}  // namespace qlip
