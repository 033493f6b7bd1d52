/// @file decoder_tower.hpp
/// @brief The trainable pixel decoder G (MODEL.md §2.7): learned positions + zhat, the block stack
///        (2-D RoPE on every token when enabled), LayerNorm, Linear → tanh → Linear (conv_out),
///        unpatchify to CLIP-normalised pixels. Written once for every backend (ops only).
///
/// Contract: forward_train writes the image (=) and fills `saved`; backward takes d_image, writes
/// d_zhat (=) and accumulates every parameter gradient (+=).
#pragma once

#include <cstdint>
#include <string>

#include "qlip/core/carve.hpp"
#include "qlip/nn/block_stack.hpp"
#include "qlip/reference/ops.hpp"
#include "qlip/nn/tower_config.hpp"

namespace qlip::nn {

template <VisionConfig V, backend B>
  requires valid_vit<V>
class DecoderTower {
 public:
  using Stack = BlockStack<V.stack, B>;
  using T = typename Stack::T;
  using Mem = typename Stack::Mem;
  template <int R>
  using View = TensorView<T, R, Mem>;
  template <int R>
  using CView = TensorView<const T, R, Mem>;
  template <int R>
  using P = Param<T, R, Mem>;
  static constexpr std::int64_t kD = V.stack.hidden;
  static constexpr std::int64_t kN = V.patches();
  static constexpr std::int64_t kI = V.stack.intermediate;
  static constexpr std::int64_t kPatchDim = V.patch_dim();

  explicit DecoderTower(B be = {}) : be_(be), stack_(be) {
    position.shape = {1, kN, kD};
    norm_g.shape = {kD};
    norm_b.shape = {kD};
    ffn_w.shape = {kI, kD};
    ffn_b.shape = {kI};
    out_w.shape = {kPatchDim, kI};
    out_b.shape = {kPatchDim};
  }

  /// `<prefix>.position_embeddings`, `<prefix>.encoder.layers.*`, `<prefix>.norm.*`, `<prefix>.ffn.0.*`,
  /// `<prefix>.conv_out.*`.
  template <class Vis>
  void visit_parameters(Vis&& v, const std::string& prefix) {
    v(join_name(prefix, "position_embeddings"), position);
    stack_.visit_parameters(v, join_name(prefix, "encoder"));
    v(join_name(prefix, "norm.weight"), norm_g);
    v(join_name(prefix, "norm.bias"), norm_b);
    v(join_name(prefix, "ffn.0.weight"), ffn_w);
    v(join_name(prefix, "ffn.0.bias"), ffn_b);
    v(join_name(prefix, "conv_out.weight"), out_w);
    v(join_name(prefix, "conv_out.bias"), out_b);
  }

  static std::int64_t activation_elements(std::int64_t batch) {
    auto c = Carver<T, Mem>::counting();
    (void)carve_saved(c, batch);
    return c.used();
  }
  static std::int64_t workspace_elements(std::int64_t batch) {
    const std::int64_t n = batch * kN;
    return std::max<std::int64_t>(n * kPatchDim, Stack::workspace_elements(batch, kN)) + 2 * n * kD + 2 * n * kI +
           n * kPatchDim;
  }

  /// zhat [B·N, D] → image [B, C, H, W].
  void forward_train(Arena& arena, CView<2> zhat, View<4> image, T* saved, std::int64_t saved_size, T* work,
                     std::int64_t work_size, const BlockArgs<T, Mem>& args) const {
    const std::int64_t batch = image.size(0), n = batch * kN;
    check_shape(zhat, {n, kD}, "decoder: zhat");
    check_shape(image, {batch, V.channels, V.image_size, V.image_size}, "decoder: image");
    Carver<T, Mem> c(saved, saved_size);
    const Saved s = carve_saved(c, batch);
    Carver<T, Mem> cw(work, work_size);
    const View<2> patches = cw.take(Extents<2>{n, kPatchDim});
    // x0 = position_embeddings + zhat (the official code adds in this order; addition commutes exactly)
    copy(be_, zhat, s.x0);
    add_rows_broadcast(be_, s.x0.reshape(Extents<3>{batch, kN, kD}), CView<2>(position_table(position.value)));
    stack_.forward_train(arena, CView<2>(s.x0), s.h, s.stack, s.stack_size, batch, kN, args);
    layer_norm_train(be_, CView<2>(s.h), norm_g.value, norm_b.value, args.eps, s.norm_out, s.norm_mean, s.norm_rstd);
    linear(be_, CView<2>(s.norm_out), ffn_w.value, ffn_b.value, s.ffn_pre);
    tanh_act(be_, CView<2>(s.ffn_pre), s.ffn_act);
    linear(be_, CView<2>(s.ffn_act), out_w.value, out_b.value, patches);
    unpatchify(be_, CView<3>(patches.reshape(Extents<3>{batch, kN, kPatchDim})), V.patch_size, image);
  }

  /// d_image [B, C, H, W] → d_zhat [B·N, D] (=); parameter gradients +=.
  void backward(Arena& arena, CView<4> d_image, View<2> d_zhat, T* saved, std::int64_t saved_size, T* work,
                std::int64_t work_size, const BlockArgs<T, Mem>& args) {
    const std::int64_t batch = d_image.size(0), n = batch * kN;
    check_shape(d_image, {batch, V.channels, V.image_size, V.image_size}, "decoder backward: d_image");
    check_shape(d_zhat, {n, kD}, "decoder backward: d_zhat");
    Carver<T, Mem> c(saved, saved_size);
    const Saved s = carve_saved(c, batch);
    const std::int64_t front = std::max<std::int64_t>(n * kPatchDim, Stack::workspace_elements(batch, kN));
    Carver<T, Mem> cw(work + front, work_size - front);
    const View<2> d_h = cw.take(Extents<2>{n, kD}), d_norm = cw.take(Extents<2>{n, kD});
    const View<2> d_act = cw.take(Extents<2>{n, kI}), d_pre = cw.take(Extents<2>{n, kI});
    const View<2> d_patches = cw.take(Extents<2>{n, kPatchDim});
    unpatchify_backward(be_, d_image, V.patch_size, d_patches.reshape(Extents<3>{batch, kN, kPatchDim}));
    linear_backward(be_, CView<2>(s.ffn_act), out_w.value, CView<2>(d_patches), d_act, out_w.grad, out_b.grad);
    tanh_act_backward(be_, CView<2>(s.ffn_pre), CView<2>(d_act), d_pre);
    linear_backward(be_, CView<2>(s.norm_out), ffn_w.value, CView<2>(d_pre), d_norm, ffn_w.grad, ffn_b.grad);
    layer_norm_backward(be_, CView<2>(s.h), norm_g.value, CView<1>(s.norm_mean), CView<1>(s.norm_rstd),
                        CView<2>(d_norm), d_h, norm_g.grad, norm_b.grad);
    stack_.backward(arena, CView<2>(d_h), d_zhat, s.stack, s.stack_size, work, front, batch, kN, args);
    if (!position.grad.empty())
      add_rows_broadcast_backward(be_, CView<3>(d_zhat.reshape(Extents<3>{batch, kN, kD})),
                                  position_table(position.grad));
  }

  P<3> position;
  P<1> norm_g, norm_b, ffn_b, out_b;
  P<2> ffn_w, out_w;

 private:
  struct Saved {
    View<2> x0, h, norm_out, ffn_pre, ffn_act;
    View<1> norm_mean, norm_rstd;
    T* stack = nullptr;
    std::int64_t stack_size = 0;
  };
  static Saved carve_saved(Carver<T, Mem>& c, std::int64_t batch) {
    const std::int64_t n = batch * kN;
    Saved s;
    s.x0 = c.take(Extents<2>{n, kD});
    s.h = c.take(Extents<2>{n, kD});
    s.norm_out = c.take(Extents<2>{n, kD});
    s.norm_mean = c.take(Extents<1>{n});
    s.norm_rstd = c.take(Extents<1>{n});
    s.ffn_pre = c.take(Extents<2>{n, kI});
    s.ffn_act = c.take(Extents<2>{n, kI});
    s.stack_size = Stack::activation_elements(batch, kN);
    s.stack = c.take(Extents<1>{s.stack_size}).data();
    return s;
  }
  /// The [1, N, D] position parameter as the [N, D] table add_rows_broadcast takes.
  static View<2> position_table(const View<3>& p) { return p.reshape(Extents<2>{kN, kD}); }

  B be_;
  Stack stack_;
};

}  // namespace qlip::nn
