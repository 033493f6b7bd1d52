/// @file demo_qlip_config.hpp
/// @brief The config the main job (scripts/demo.sh) trains from scratch on Fashion-MNIST: the
///        released architecture's features (EVA-02 vision encoder and decoder with SwiGLU, sub-LN, no
///        k bias, 2-D RoPE; CLIP text tower; 28-bit BSQ) at a size that trains in minutes on 2 cores.
#pragma once

#include "qlip/core/dispatch.hpp"
#include "qlip/model/config.hpp"
#include "qlip/nn/discriminator.hpp"

namespace qlip {

/// 32×32 RGB, 4×4 patches (64 tokens + CLS), width 64, 2 layers per tower; the CLIP BPE vocabulary
/// with a 16-token context (every caption template fits).
struct QlipDemoFashion {
  static constexpr const char* name = "qlip-demo-fashion";
  static constexpr QlipConfig config{
      .vision = {32, 4, 3, {64, 2, 2, 128, MlpKind::swiglu, true, true, false, true}},
      .quantizer = {28, 64},
      .decoder = {32, 4, 3, {64, 2, 2, 128, MlpKind::swiglu, true, true, false, true}},
      .text = {49408, 16, {64, 2, 2, 128, MlpKind::plain, false, true, true, true}},
      .projection_dim = 64,
      .vision_projection_bias = true,
      .text_projection_bias = false,
  };
};

/// Stage 2's discriminator for the demo's 32×32 images: StyleGAN2's structure (blocks at 32, 16, 8 and
/// the 4×4 epilogue, QLIP_SPEC §4.3) at 32 channels throughout (channel_base 1024, channel_max 32)
/// instead of 512: 84,673 parameters.
inline constexpr nn::DiscriminatorConfig kDemoDiscriminator{32, 3, 1024, 32, 4};

/// The configs qlip-train can build from scratch.
using TrainableQlipConfigs = TypeList<QlipDemoFashion>;

}  // namespace qlip
