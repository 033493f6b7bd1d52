/// @file pixel_decoder.hpp
/// @brief QLIP's pixel decoder (QLIPVisionTransformerDecoder, MODEL.md §2.7): absolute positions added to
///        zhat, pre-LN blocks with optional 2-D RoPE on all tokens, final LayerNorm, Linear→tanh→
///        Linear head, unpatchify. Output is in CLIP-normalised pixel space and NOT clamped (MODEL.md §10.1).
///
/// Accumulation contract: outputs written with `=`; the residual stream is updated in place (`+=`).
/// Ops are called unqualified on the backend the decoder was built with.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/profile.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/nn/encoder_layer.hpp"
#include "qlip/nn/parameters.hpp"
#include "qlip/nn/rope_table.hpp"
#include "qlip/nn/tower_config.hpp"
#include "qlip/reference/ops.hpp"

namespace qlip::nn {

/// @tparam V decoder config (geometry and stack; width = hidden_size_post_q)
/// @tparam B backend (host, float32)
template <VisionConfig V, host_float_backend B>
  requires valid_vit<V>
class PixelDecoder {
 public:
  static constexpr std::int64_t kD = V.stack.hidden;
  static constexpr std::int64_t kN = V.patches();
  static constexpr std::int64_t kI = V.stack.intermediate;  // head width = decoder intermediate_size
  static constexpr std::int64_t kPatchDim = V.patch_dim();
  using Stack = EncoderStack<V.stack, B>;

  explicit PixelDecoder(B be = {}) : be_(be), stack_(be) {}

  /// Loads `<prefix>.position_embeddings` [1, N, D], `<prefix>.encoder.*`, `<prefix>.norm`,
  /// `<prefix>.ffn.0`, `<prefix>.conv_out` and the RoPE table when rt.rope.
  void load(WeightSource& src, const std::string& prefix, const TowerRuntime& rt) {
    rt_ = rt;
    position_ = Tensor<float, 2>({kN, kD});
    const std::int64_t pos_shape[3] = {1, kN, kD};
    src.read(prefix + ".position_embeddings", pos_shape, position_.data());
    stack_.load(src, prefix + ".encoder", rt.layer_norm_eps);
    norm_.load(src, prefix + ".norm", kD, rt.layer_norm_eps);
    ffn_.load(src, prefix + ".ffn.0", kI, kD, Bias::present);
    conv_out_.load(src, prefix + ".conv_out", kPatchDim, kI, Bias::present);
    rope_source_ = rt.rope ? load_rope_table(src, prefix + ".", V.grid(), V.stack.head_dim(), rope_) : RopeSource::none;
  }

  std::int64_t parameter_count() const {
    return position_.numel() + stack_.parameter_count() + norm_.parameter_count() + ffn_.parameter_count() +
           conv_out_.parameter_count();
  }
  RopeSource rope_source() const { return rope_source_; }

  /// Arena bytes forward() needs (excluding its output image).
  static std::size_t workspace_bytes(std::int64_t batch) {
    const std::int64_t m = batch * kN;
    const std::size_t head = arena_bytes<float>(m * kD) + arena_bytes<float>(m * kI) + arena_bytes<float>(m * kPatchDim);
    return arena_bytes<float>(m * kD) + std::max(Stack::workspace_bytes(batch, kN), head);
  }

  /// zhat[B, N, D] → img[B, C, H, W]. keep[k] (k = 0..layers), when non-empty, receives decoder
  /// hidden state k (0 = positions + zhat).
  InferenceContext forward(Arena& ws, HostView<const float, 3> zhat, HostView<float, 4> img,
                           std::span<const HostView<float, 3>> keep = {}) const {
    const std::int64_t batch = zhat.size(0), m = batch * kN;
    check_shape(zhat, {batch, kN, kD}, "pixel decoder: zhat");
    check_shape(img, {batch, V.channels, V.image_size, V.image_size}, "pixel decoder: img");
    ArenaScope scope(ws);
    HostView<float, 3> x = ws.tensor<float, 3>({batch, kN, kD});  // [B, N, D]
    {
      QLIP_PROFILE_SCOPE("decoder positions");
      // zhat + positions (PyTorch adds positions + zhat: the same float sums)
      copy(be_, zhat, x);
      add_rows_broadcast(be_, x, position_.view());
    }
    if (!keep.empty() && !keep[0].empty()) stack_.keep_hidden_state(x, keep[0]);
    const RopeTableView<host_memory> rope{rope_.cos.view(), rope_.sin.view(), 0};
    const LayerArgs args{rt_.layer_norm_eps, rt_.act, AttentionMask::none, rt_.rope ? &rope : nullptr};
    stack_.forward(ws, x, args, keep);
    HostView<float, 2> x2 = x.template reshape<2>({m, kD});
    HostView<float, 2> h = ws.tensor<float, 2>({m, kD});          // [M, D]
    HostView<float, 2> f = ws.tensor<float, 2>({m, kI});          // [M, I]
    HostView<float, 2> p = ws.tensor<float, 2>({m, kPatchDim});   // [M, C·p·p]
    QLIP_PROFILE_SCOPE("decoder head");
    norm_.forward(be_, x2, h);
    ffn_.forward(be_, h, f);
    tanh_act(be_, f, f);
    conv_out_.forward(be_, f, p);
    unpatchify(be_, p.template reshape<3>({batch, kN, kPatchDim}), V.patch_size, img);
    return {};
  }

 private:
  B be_;
  TowerRuntime rt_{};
  Tensor<float, 2> position_;  // [N, D]
  RopeTable rope_;
  RopeSource rope_source_ = RopeSource::none;
  Stack stack_;
  LayerNorm norm_;
  Linear ffn_;       // ffn.0 [I, D]
  Linear conv_out_;  // [C·p·p, I]
};

}  // namespace qlip::nn
