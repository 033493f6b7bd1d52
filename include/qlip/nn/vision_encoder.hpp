/// @file vision_encoder.hpp
/// @brief QLIP's visual encoder (QLIPVisionTransformer without the quantizer, MODEL.md §2.2, §2.5):
///        patch embedding as patchify + linear, CLS token, absolute positions, 2-D RoPE on the patch
///        tokens, pre-LN blocks, post-LN on the CLS token and the visual projection.
///
/// Accumulation contract: every output is written with `=`; the residual stream inside the stack
/// is updated in place (`+=`). Nothing is allocated in forward: temporaries come from the Arena.
/// Ops are called unqualified on the backend the tower was built with (argument-dependent lookup).
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

/// The vision tower up to the CLS embedding.
/// @tparam V vision config (geometry and stack)
/// @tparam B backend (host, float32)
template <VisionConfig V, host_float_backend B>
  requires valid_vit<V>
class VisionEncoder {
 public:
  static constexpr std::int64_t kD = V.stack.hidden;
  static constexpr std::int64_t kN = V.patches();      // patch tokens
  static constexpr std::int64_t kT = V.patches() + 1;  // with CLS
  static constexpr std::int64_t kPatchDim = V.patch_dim();
  using Stack = EncoderStack<V.stack, B>;

  explicit VisionEncoder(B be = {}) : be_(be), stack_(be) {}

  /// Loads `<prefix>.embeddings.*`, `<prefix>.encoder.*`, `<prefix>.post_layernorm.*`, the RoPE table
  /// (if rt.rope) and the projection `<projection>` [proj_dim, D] (+ bias).
  void load(WeightSource& src, const std::string& prefix, const TowerRuntime& rt, const std::string& projection,
            std::int64_t proj_dim, Bias proj_bias) {
    rt_ = rt;
    class_embedding_ = load_tensor<1>(src, prefix + ".embeddings.class_embedding", {kD});
    // Conv2d weight [D, C, p, p] read as the [D, C·p·p] matrix patchify's (c, kh, kw) order matches.
    patch_.weight = Tensor<float, 2>({kD, kPatchDim});
    const std::int64_t conv_shape[4] = {kD, V.channels, V.patch_size, V.patch_size};
    src.read(prefix + ".embeddings.patch_embedding.weight", conv_shape, patch_.weight.data());
    patch_.bias = load_tensor<1>(src, prefix + ".embeddings.patch_embedding.bias", {kD});
    position_ = load_tensor<2>(src, prefix + ".embeddings.position_embedding.weight", {kT, kD});
    stack_.load(src, prefix + ".encoder", rt.layer_norm_eps);
    post_layernorm_.load(src, prefix + ".post_layernorm", kD, rt.layer_norm_eps);
    projection_.load(src, projection, proj_dim, kD, proj_bias);
    rope_source_ = rt.rope ? load_rope_table(src, prefix + ".", V.grid(), V.stack.head_dim(), rope_) : RopeSource::none;
  }

  std::int64_t parameter_count() const {
    return class_embedding_.numel() + patch_.parameter_count() + position_.numel() + stack_.parameter_count() +
           post_layernorm_.parameter_count() + projection_.parameter_count();
  }
  RopeSource rope_source() const { return rope_source_; }
  std::int64_t projection_dim() const { return projection_.out_features(); }

  /// Arena bytes forward() needs beyond its output x.
  static std::size_t workspace_bytes(std::int64_t batch) {
    return std::max(arena_bytes<float>(batch * kN * kPatchDim), Stack::workspace_bytes(batch, kT));
  }

  /// Embeddings and every block: pixels[B, C, H, W] (CLIP-normalised) → x[B, N+1, D] = last hidden
  /// state. keep[k] (k = 0..layers), when non-empty, receives HF hidden_states[k].
  InferenceContext forward(Arena& ws, HostView<const float, 4> pixels, HostView<float, 3> x,
                           std::span<const HostView<float, 3>> keep = {}) const {
    const std::int64_t batch = pixels.size(0);
    check_shape(pixels, {batch, V.channels, V.image_size, V.image_size}, "vision encoder: pixels");
    check_shape(x, {batch, kT, kD}, "vision encoder: x");
    QLIP_CHECK(x.is_contiguous(), "vision encoder: x must be contiguous");
    embed(ws, pixels, x);
    if (!keep.empty() && !keep[0].empty()) stack_.keep_hidden_state(x, keep[0]);
    const RopeTableView<host_memory> rope{rope_.cos.view(), rope_.sin.view(), 1};  // CLS (token 0) is not rotated
    const LayerArgs args{rt_.layer_norm_eps, rt_.act, AttentionMask::none, rt_.rope ? &rope : nullptr};
    return stack_.forward(ws, x, args, keep);
  }

  /// CLS path: cls[B, D] = post_layernorm(x[:, 0]); embeds[B, P] = visual_projection(cls) (raw).
  void project_cls(HostView<const float, 3> x, HostView<float, 2> cls, HostView<float, 2> embeds) const {
    QLIP_PROFILE_SCOPE("cls projection");
    post_layernorm_.forward(be_, x.select(1, 0), cls);
    projection_.forward(be_, cls, embeds);
  }

 private:
  /// x[B, N+1, D] = cat(class_embedding, conv_p(pixels)) + position_embedding, added element by
  /// element as PyTorch adds (cls + pos[0] is cls copied, then the table added).
  void embed(Arena& ws, HostView<const float, 4> pixels, HostView<float, 3> x) const {
    QLIP_PROFILE_SCOPE("patch embed");
    const std::int64_t batch = pixels.size(0);
    ArenaScope scope(ws);
    HostView<float, 3> patches = ws.tensor<float, 3>({batch, kN, kPatchDim});  // [B, N, C·p·p]
    patchify(be_, pixels, V.patch_size, patches);
    const HostView<const float, 2> cls(class_embedding_.data(), {1, kD});
    for (std::int64_t b = 0; b < batch; ++b) {
      // conv(x) + bias straight into tokens 1..N of sequence b (a contiguous [N, D] block)
      patch_.forward(be_, patches.select(0, b), x.select(0, b).slice(0, 1, kT));
      copy(be_, cls, x.select(0, b).slice(0, 0, 1));
    }
    add_rows_broadcast(be_, x, position_.view());
  }

  B be_;
  TowerRuntime rt_{};
  Tensor<float, 1> class_embedding_;  // [D]
  Linear patch_;                      // [D, C·p·p] + [D]
  Tensor<float, 2> position_;         // [N+1, D]
  RopeTable rope_;                    // [N, Dh] each
  RopeSource rope_source_ = RopeSource::none;
  Stack stack_;
  LayerNorm post_layernorm_;
  Linear projection_;  // visual_projection [P, D]
};

}  // namespace qlip::nn
