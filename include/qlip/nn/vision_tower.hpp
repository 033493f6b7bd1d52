/// @file vision_tower.hpp
/// @brief The trainable vision encoder E_v (MODEL.md §2.2, §2.5): patch embedding, CLS, learned
///        positions, the block stack with 2-D RoPE on patch tokens, and the CLS path
///        post_layernorm → visual_projection. Written once for every backend (ops only).
///
///   x0 = cat(class_embedding, conv_p(pixels)) + position_embedding       [B, N+1, D]
///   h  = blocks(x0)                                                       [B, N+1, D] (last hidden state)
///   image_embeds = visual_projection(post_layernorm(h[:, 0]))            [B, P] (not normalised)
///
/// Contract: forward_train writes h and the embeddings (=) and fills `saved`; backward takes the
/// gradients of the loss with respect to h's patch rows (from the bottleneck; may be empty) and to
/// image_embeds, and accumulates every parameter gradient (+=). Pixels get no gradient.
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
class VisionTower {
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
  static constexpr std::int64_t kT = V.patches() + 1;
  static constexpr std::int64_t kPatchDim = V.patch_dim();

  VisionTower(std::int64_t projection_dim, bool projection_bias, B be = {})
      : be_(be), stack_(be), projection_bias_(projection_bias) {
    class_embedding.shape = {kD};
    patch_w.shape = {kD, V.channels, V.patch_size, V.patch_size};
    patch_b.shape = {kD};
    position.shape = {kT, kD};
    post_ln_g.shape = {kD};
    post_ln_b.shape = {kD};
    proj_w.shape = {projection_dim, kD};
    proj_b.shape = {projection_dim};
  }

  /// `<prefix>.embeddings.*`, `<prefix>.encoder.layers.*`, `<prefix>.post_layernorm.*`.
  template <class Vis>
  void visit_parameters(Vis&& v, const std::string& prefix) {
    v(join_name(prefix, "embeddings.class_embedding"), class_embedding);
    v(join_name(prefix, "embeddings.patch_embedding.weight"), patch_w);
    v(join_name(prefix, "embeddings.patch_embedding.bias"), patch_b);
    v(join_name(prefix, "embeddings.position_embedding.weight"), position);
    stack_.visit_parameters(v, join_name(prefix, "encoder"));
    v(join_name(prefix, "post_layernorm.weight"), post_ln_g);
    v(join_name(prefix, "post_layernorm.bias"), post_ln_b);
  }

  /// The projection, a top-level module of the checkpoint (`visual_projection`), visited where the model's
  /// state_dict order puts it.
  template <class Vis>
  void visit_projection(Vis&& v, const std::string& projection) {
    v(join_name(projection, "weight"), proj_w);
    if (projection_bias_) v(join_name(projection, "bias"), proj_b);
  }

  std::int64_t projection_dim() const { return proj_w.shape[0]; }

  static std::int64_t activation_elements(std::int64_t batch) {
    auto c = Carver<T, Mem>::counting();
    (void)carve_saved(c, batch);
    return c.used();
  }
  static std::int64_t workspace_elements(std::int64_t batch) {
    return std::max<std::int64_t>(Stack::workspace_elements(batch, kT) + 2 * batch * kT * kD,
                                  batch * kN * (kPatchDim + kD));
  }

  /// pixels [B, C, H, W] → h [B·(N+1), D], image_embeds [B, P].
  void forward_train(Arena& arena, CView<4> pixels, View<2> h, View<2> image_embeds, T* saved,
                     std::int64_t saved_size, T* work, std::int64_t work_size, const BlockArgs<T, Mem>& args) const {
    const std::int64_t batch = pixels.size(0);
    check_shape(pixels, {batch, V.channels, V.image_size, V.image_size}, "vision tower: pixels");
    check_shape(h, {batch * kT, kD}, "vision tower: h");
    check_shape(image_embeds, {batch, projection_dim()}, "vision tower: image_embeds");
    Carver<T, Mem> c(saved, saved_size);
    const Saved s = carve_saved(c, batch);
    Carver<T, Mem> cw(work, work_size);
    const View<3> patches = cw.take(Extents<3>{batch, kN, kPatchDim});
    const View<2> tokens = cw.take(Extents<2>{batch * kN, kD});
    patchify(be_, pixels, V.patch_size, patches);
    copy(be_, CView<2>(patches.reshape(Extents<2>{batch * kN, kPatchDim})), s.patches);
    linear(be_, CView<2>(s.patches), CView<2>(patch_matrix(patch_w.value)), CView<1>(patch_b.value), tokens);
    // cat([cls, patches]) + positions, as PyTorch adds (cls + pos[0] is 0 + cls + pos[0], exact).
    const View<3> x0 = s.x0.reshape(Extents<3>{batch, kT, kD});
    fill(be_, x0.slice(1, 0, 1), T(0));
    add_rows_broadcast(be_, x0.slice(1, 0, 1), CView<2>(class_embedding.value.reshape(Extents<2>{1, kD})));
    copy(be_, CView<3>(tokens.reshape(Extents<3>{batch, kN, kD})), x0.slice(1, 1, kT));
    add_rows_broadcast(be_, x0, CView<2>(position.value));
    stack_.forward_train(arena, CView<2>(s.x0), h, s.stack, s.stack_size, batch, kT, args);
    layer_norm_train(be_, cls_rows(CView<2>(h), batch), post_ln_g.value, post_ln_b.value, args.eps, s.cls_ln, s.cls_mean, s.cls_rstd);
    linear(be_, CView<2>(s.cls_ln), proj_w.value, projection_bias_ ? CView<1>(proj_b.value) : CView<1>(), image_embeds);
  }

  /// d_h_patches [B·N, D] (the bottleneck's gradient w.r.t. the patch rows of h; empty: none),
  /// d_image_embeds [B, P] (empty: none). Parameter gradients +=.
  void backward(Arena& arena, CView<2> d_h_patches, CView<2> d_image_embeds, CView<2> h, T* saved,
                std::int64_t saved_size, T* work, std::int64_t work_size, std::int64_t batch,
                const BlockArgs<T, Mem>& args) {
    QLIP_CHECK(work_size >= workspace_elements(batch), "vision tower backward: work buffer has ", work_size,
               " elements, needs ", workspace_elements(batch));
    Carver<T, Mem> c(saved, saved_size);
    const Saved s = carve_saved(c, batch);
    const std::int64_t n = batch * kT;
    const std::int64_t stack_work = Stack::workspace_elements(batch, kT);
    const View<2> dh(work + stack_work, {n, kD}), dx0(work + stack_work + n * kD, {n, kD});
    const View<3> dh3 = dh.reshape(Extents<3>{batch, kT, kD});
    fill(be_, dh, T(0));
    if (!d_h_patches.empty()) {
      check_shape(d_h_patches, {batch * kN, kD}, "vision tower backward: d_h_patches");
      copy(be_, d_h_patches.reshape(Extents<3>{batch, kN, kD}), dh3.slice(1, 1, kT));
    }
    if (!d_image_embeds.empty()) {
      check_shape(d_image_embeds, {batch, projection_dim()}, "vision tower backward: d_image_embeds");
      const View<2> d_cls_ln = dx0.slice(0, 0, batch);  // dx0 is free until the stack's backward
      linear_backward(be_, CView<2>(s.cls_ln), proj_w.value, d_image_embeds, d_cls_ln, proj_w.grad,
                      projection_bias_ ? proj_b.grad : View<1>());
      const View<2> d_cls = dx0.slice(0, batch, 2 * batch);
      layer_norm_backward(be_, cls_rows(h, batch),
                          post_ln_g.value, CView<1>(s.cls_mean), CView<1>(s.cls_rstd), CView<2>(d_cls_ln), d_cls,
                          post_ln_g.grad, post_ln_b.grad);
      add_inplace(be_, CView<2>(d_cls), cls_rows(dh, batch));
    }
    stack_.backward(arena, CView<2>(dh), dx0, s.stack, s.stack_size, work, stack_work, batch, kT, args);
    const View<3> dx03 = dx0.reshape(Extents<3>{batch, kT, kD});
    if (!position.grad.empty()) add_rows_broadcast_backward(be_, CView<3>(dx03), position.grad);
    if (!class_embedding.grad.empty())
      add_rows_broadcast_backward(be_, CView<3>(dx03.slice(1, 0, 1)), class_embedding.grad.reshape(Extents<2>{1, kD}));
    if (!patch_w.grad.empty() || !patch_b.grad.empty()) {
      // The patch rows of dx0 as one [B·N, D] matrix (reuses the front of the work buffer).
      const View<2> d_tokens(work, {batch * kN, kD});
      copy(be_, CView<3>(dx03.slice(1, 1, kT)), d_tokens.reshape(Extents<3>{batch, kN, kD}));
      linear_backward(be_, CView<2>(s.patches), CView<2>(patch_matrix(patch_w.value)), CView<2>(d_tokens), View<2>(),
                      patch_w.grad.empty() ? View<2>() : patch_matrix(patch_w.grad), patch_b.grad);
    }
  }

  P<1> class_embedding, patch_b, post_ln_g, post_ln_b, proj_b;
  P<4> patch_w;
  P<2> position, proj_w;

 private:
  struct Saved {
    View<2> patches;  // [B·N, C·p²]
    View<2> x0;       // [B·T, D] embeddings output
    T* stack = nullptr;
    std::int64_t stack_size = 0;
    View<2> cls_ln;   // [B, D]
    View<1> cls_mean, cls_rstd;
  };
  static Saved carve_saved(Carver<T, Mem>& c, std::int64_t batch) {
    Saved s;
    s.patches = c.take(Extents<2>{batch * kN, kPatchDim});
    s.x0 = c.take(Extents<2>{batch * kT, kD});
    s.cls_ln = c.take(Extents<2>{batch, kD});
    s.cls_mean = c.take(Extents<1>{batch});
    s.cls_rstd = c.take(Extents<1>{batch});
    s.stack_size = Stack::activation_elements(batch, kT);
    s.stack = c.take(Extents<1>{s.stack_size}).data();
    return s;
  }
  /// The Conv2d weight [D, C, p, p] as the [D, C·p²] matrix patchify's (c, kh, kw) order matches.
  static View<2> patch_matrix(const View<4>& w) { return w.reshape(Extents<2>{kD, kPatchDim}); }
  /// Rows b·T (the CLS token of each sequence) of a [B·T, D] buffer, as a strided [B, D] view.
  template <class U>
  static TensorView<U, 2, Mem> cls_rows(const TensorView<U, 2, Mem>& h, std::int64_t batch) {
    return TensorView<U, 2, Mem>(h.base(), {batch, kD}, {kT * h.stride(0), h.stride(1)}, h.offset());
  }

  B be_;
  Stack stack_;
  bool projection_bias_;
};

}  // namespace qlip::nn
