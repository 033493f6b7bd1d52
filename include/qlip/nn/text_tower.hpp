/// @file text_tower.hpp
/// @brief The trainable CLIP text tower E_t (MODEL.md §2.8): token + position embeddings, causal
///        blocks, final LayerNorm, pooling at the first EOS (or argmax when eos_token_id == 2),
///        text_projection. Written once for every backend (ops only).
///
/// Contract: forward_train writes text_embeds (=) and fills `saved`; backward takes d_text_embeds
/// and accumulates every parameter gradient (+=). Token ids get no gradient.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "qlip/core/carve.hpp"
#include "qlip/nn/block_stack.hpp"
#include "qlip/reference/ops.hpp"
#include "qlip/nn/tower_config.hpp"

namespace qlip::nn {

template <TextConfig C, backend B>
  requires valid_text<C>
class TextTower {
 public:
  using Stack = BlockStack<C.stack, B>;
  using T = typename Stack::T;
  using Mem = typename Stack::Mem;
  template <int R>
  using View = TensorView<T, R, Mem>;
  template <int R>
  using CView = TensorView<const T, R, Mem>;
  template <int R>
  using P = Param<T, R, Mem>;
  static constexpr std::int64_t kD = C.stack.hidden;

  TextTower(std::int64_t projection_dim, bool projection_bias, int eos_token_id, B be = {})
      : be_(be), stack_(be), projection_bias_(projection_bias), eos_(eos_token_id) {
    token_embedding.shape = {C.vocab_size, kD};
    position.shape = {C.context_length, kD};
    final_ln_g.shape = {kD};
    final_ln_b.shape = {kD};
    proj_w.shape = {projection_dim, kD};
    proj_b.shape = {projection_dim};
  }

  template <class V>
  void visit_parameters(V&& v, const std::string& prefix) {
    v(join_name(prefix, "embeddings.token_embedding.weight"), token_embedding);
    v(join_name(prefix, "embeddings.position_embedding.weight"), position);
    stack_.visit_parameters(v, join_name(prefix, "encoder"));
    v(join_name(prefix, "final_layer_norm.weight"), final_ln_g);
    v(join_name(prefix, "final_layer_norm.bias"), final_ln_b);
  }

  /// The projection, a top-level module of the checkpoint (`text_projection`), visited where the model's
  /// state_dict order puts it.
  template <class Vis>
  void visit_projection(Vis&& v, const std::string& projection) {
    v(join_name(projection, "weight"), proj_w);
    if (projection_bias_) v(join_name(projection, "bias"), proj_b);
  }

  std::int64_t projection_dim() const { return proj_w.shape[0]; }

  static std::int64_t activation_elements(std::int64_t batch, std::int64_t tokens) {
    auto c = Carver<T, Mem>::counting();
    (void)carve_saved(c, batch, tokens);
    return c.used();
  }
  static std::int64_t workspace_elements(std::int64_t batch, std::int64_t tokens) {
    return Stack::workspace_elements(batch, tokens) + 3 * batch * tokens * kD;
  }

  /// The pooled row of each sequence (MODEL.md §2.8 step 4): the first EOS, or argmax(ids) when
  /// eos_token_id == 2; a sequence without EOS pools its last token.
  std::vector<std::int64_t> pool_rows(HostView<const std::int32_t, 2> ids) const {
    const std::int64_t batch = ids.size(0), tokens = ids.size(1);
    std::vector<std::int64_t> rows(static_cast<std::size_t>(batch));
    for (std::int64_t b = 0; b < batch; ++b) {
      std::int64_t at = tokens - 1;
      if (eos_ == 2) {
        at = 0;
        for (std::int64_t t = 1; t < tokens; ++t)
          if (ids(b, t) > ids(b, at)) at = t;
      } else {
        for (std::int64_t t = 0; t < tokens; ++t)
          if (ids(b, t) == eos_) {
            at = t;
            break;
          }
      }
      rows[static_cast<std::size_t>(b)] = b * tokens + at;
    }
    return rows;
  }

  /// ids [B, T] (host; also as `ids_flat`, the same ids as one [B·T] view in the backend's memory)
  /// → text_embeds [B, P].
  void forward_train(Arena& arena, HostView<const std::int32_t, 2> ids, TensorView<const std::int32_t, 1, Mem> ids_flat,
                     View<2> text_embeds, T* saved, std::int64_t saved_size, const BlockArgs<T, Mem>& args) {
    const std::int64_t batch = ids.size(0), tokens = ids.size(1), n = batch * tokens;
    QLIP_CHECK(tokens >= 1 && tokens <= C.context_length, "text tower: ", tokens,
               " tokens per sequence, the model takes 1..", C.context_length);
    check_shape(ids_flat, {n}, "text tower: ids_flat");
    check_shape(text_embeds, {batch, projection_dim()}, "text tower: text_embeds");
    Carver<T, Mem> c(saved, saved_size);
    const Saved s = carve_saved(c, batch, tokens);
    rows_ = pool_rows(ids);
    embedding(be_, CView<2>(token_embedding.value), ids_flat, s.x0);
    add_rows_broadcast(be_, s.x0.reshape(Extents<3>{batch, tokens, kD}), CView<2>(position.value.slice(0, 0, tokens)));
    stack_.forward_train(arena, CView<2>(s.x0), s.h, s.stack, s.stack_size, batch, tokens, args);
    layer_norm_train(be_, CView<2>(s.h), final_ln_g.value, final_ln_b.value, args.eps, s.final_out, s.final_mean,
                     s.final_rstd);
    gather_rows(be_, CView<2>(s.final_out), rows_view(), s.pooled);
    linear(be_, CView<2>(s.pooled), proj_w.value, projection_bias_ ? CView<1>(proj_b.value) : CView<1>(), text_embeds);
  }

  void backward(Arena& arena, TensorView<const std::int32_t, 1, Mem> ids_flat, CView<2> d_text_embeds, T* saved,
                std::int64_t saved_size, T* work, std::int64_t work_size, std::int64_t batch, std::int64_t tokens,
                const BlockArgs<T, Mem>& args) {
    const std::int64_t n = batch * tokens;
    check_shape(d_text_embeds, {batch, projection_dim()}, "text tower backward: d_text_embeds");
    Carver<T, Mem> c(saved, saved_size);
    const Saved s = carve_saved(c, batch, tokens);
    const std::int64_t stack_work = Stack::workspace_elements(batch, tokens);
    Carver<T, Mem> cw(work + stack_work, work_size - stack_work);
    const View<2> d_final = cw.take(Extents<2>{n, kD}), d_h = cw.take(Extents<2>{n, kD}),
                  d_x0 = cw.take(Extents<2>{n, kD});
    const View<2> d_pooled = d_h.slice(0, 0, batch);  // d_h is free until the LayerNorm backward
    linear_backward(be_, CView<2>(s.pooled), proj_w.value, d_text_embeds, d_pooled, proj_w.grad,
                    projection_bias_ ? proj_b.grad : View<1>());
    fill(be_, d_final, T(0));
    gather_rows_backward(be_, rows_view(), CView<2>(d_pooled), d_final);
    layer_norm_backward(be_, CView<2>(s.h), final_ln_g.value, CView<1>(s.final_mean), CView<1>(s.final_rstd),
                        CView<2>(d_final), d_h, final_ln_g.grad, final_ln_b.grad);
    stack_.backward(arena, CView<2>(d_h), d_x0, s.stack, s.stack_size, work, stack_work, batch, tokens, args);
    if (!position.grad.empty())
      add_rows_broadcast_backward(be_, CView<3>(d_x0.reshape(Extents<3>{batch, tokens, kD})),
                                  position.grad.slice(0, 0, tokens));
    if (!token_embedding.grad.empty()) embedding_backward(be_, ids_flat, CView<2>(d_x0), token_embedding.grad);
  }

  P<2> token_embedding, position, proj_w;
  P<1> final_ln_g, final_ln_b, proj_b;

 private:
  struct Saved {
    View<2> x0, h, final_out, pooled;
    View<1> final_mean, final_rstd;
    T* stack = nullptr;
    std::int64_t stack_size = 0;
  };
  static Saved carve_saved(Carver<T, Mem>& c, std::int64_t batch, std::int64_t tokens) {
    const std::int64_t n = batch * tokens;
    Saved s;
    s.x0 = c.take(Extents<2>{n, kD});
    s.h = c.take(Extents<2>{n, kD});
    s.final_out = c.take(Extents<2>{n, kD});
    s.final_mean = c.take(Extents<1>{n});
    s.final_rstd = c.take(Extents<1>{n});
    s.pooled = c.take(Extents<2>{batch, kD});
    s.stack_size = Stack::activation_elements(batch, tokens);
    s.stack = c.take(Extents<1>{s.stack_size}).data();
    return s;
  }
  HostView<const std::int64_t, 1> rows_view() const {
    return HostView<const std::int64_t, 1>(rows_.data(), {static_cast<std::int64_t>(rows_.size())});
  }

  B be_;
  Stack stack_;
  bool projection_bias_;
  int eos_;
  std::vector<std::int64_t> rows_;  // pooled rows of the last forward_train (host: they index the batch)
};

}  // namespace qlip::nn
