/// @file quantizer.hpp
/// @brief The trainable BSQ bottleneck Q (MODEL.md §2.6, §3.1): quant_embed MLP D→D→L, L2
///        normalisation, sign with the straight-through estimator, 1/√L, quant_embed_post L→Dq→Dq.
///        Written once for every backend (ops only).
///
///   u    = normalize(c_proj(GELU(c_fc(z))))          [M, L]  (what the BSQ losses see)
///   q    = sign(u)·c,  c = 1/√L (or 1)               [M, L]  straight-through: ∂q/∂u = c·I
///   zhat = c_proj'(GELU(c_fc'(q)))                    [M, Dq] (what the decoder sees)
///
/// Contract: forward_train writes u, q, zhat (=) and fills `saved`; backward takes d_zhat and the
/// losses' gradient with respect to u (either may be empty), writes dz (=) and accumulates every
/// parameter gradient (+=).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "qlip/core/carve.hpp"
#include "qlip/nn/param.hpp"
#include "qlip/reference/ops.hpp"
#include "qlip/nn/tower_config.hpp"

namespace qlip::nn {

/// @tparam D encoder width
/// @tparam Q quantizer config (L bits, Dq)
template <int D, QuantizerConfig Q, backend B>
class Quantizer {
 public:
  using T = typename B::scalar;
  using Mem = typename B::memory;
  template <int R>
  using View = TensorView<T, R, Mem>;
  template <int R>
  using CView = TensorView<const T, R, Mem>;
  template <int R>
  using P = Param<T, R, Mem>;
  static constexpr std::int64_t kD = D;
  static constexpr std::int64_t kL = Q.bits;
  static constexpr std::int64_t kDq = Q.hidden_post_q;

  explicit Quantizer(B be = {}) : be_(be) {
    fc_w.shape = {kD, kD};
    fc_b.shape = {kD};
    proj_w.shape = {kL, kD};
    proj_b.shape = {kL};
    post_fc_w.shape = {kDq, kL};
    post_fc_b.shape = {kDq};
    post_proj_w.shape = {kDq, kDq};
    post_proj_b.shape = {kDq};
  }

  /// `<prefix>.quant_embed.{c_fc,c_proj}.*` and `<prefix>.quant_embed_post.{c_fc,c_proj}.*`.
  template <class V>
  void visit_parameters(V&& v, const std::string& prefix) {
    v(join_name(prefix, "quant_embed.c_fc.weight"), fc_w);
    v(join_name(prefix, "quant_embed.c_fc.bias"), fc_b);
    v(join_name(prefix, "quant_embed.c_proj.weight"), proj_w);
    v(join_name(prefix, "quant_embed.c_proj.bias"), proj_b);
    v(join_name(prefix, "quant_embed_post.c_fc.weight"), post_fc_w);
    v(join_name(prefix, "quant_embed_post.c_fc.bias"), post_fc_b);
    v(join_name(prefix, "quant_embed_post.c_proj.weight"), post_proj_w);
    v(join_name(prefix, "quant_embed_post.c_proj.bias"), post_proj_b);
  }

  static std::int64_t activation_elements(std::int64_t m) {
    auto c = Carver<T, Mem>::counting();
    (void)carve_saved(c, m);
    return c.used();
  }
  static std::int64_t workspace_elements(std::int64_t m) { return 2 * m * kD + 2 * m * kDq + m * kL; }

  /// The code scale c: 1/√L when the codes are L2-scaled (quantizer_cfg.l2_norm), else 1.
  static T code_scale(bool l2) { return l2 ? static_cast<T>(1.0 / std::sqrt(static_cast<double>(kL))) : T(1); }

  /// z [M, D] (any row stride) → u [M, L], q [M, L], zhat [M, Dq].
  void forward_train(CView<2> z, View<2> u, View<2> q, View<2> zhat, T* saved, std::int64_t saved_size,
                     bool code_l2 = true) const {
    const std::int64_t m = z.size(0);
    check_shape(z, {m, kD}, "quantizer: z");
    check_shape(u, {m, kL}, "quantizer: u");
    check_shape(q, {m, kL}, "quantizer: q");
    check_shape(zhat, {m, kDq}, "quantizer: zhat");
    Carver<T, Mem> c(saved, saved_size);
    const Saved s = carve_saved(c, m);
    copy(be_, z, s.z);
    linear(be_, CView<2>(s.z), fc_w.value, fc_b.value, s.fc);
    gelu(be_, CView<2>(s.fc), s.fc_act);
    linear(be_, CView<2>(s.fc_act), proj_w.value, proj_b.value, s.h);
    l2_normalize_rows(be_, CView<2>(s.h), u, T(1e-12));
    bsq_straight_through(be_, CView<2>(u), code_scale(code_l2), q);
    linear(be_, CView<2>(q), post_fc_w.value, post_fc_b.value, s.post_fc);
    gelu(be_, CView<2>(s.post_fc), s.post_act);
    linear(be_, CView<2>(s.post_act), post_proj_w.value, post_proj_b.value, zhat);
  }

  /// d_zhat [M, Dq] and d_u [M, L] (each may be empty) → dz [M, D] (=); parameter gradients +=.
  /// q is what forward_train wrote (the input of quant_embed_post).
  void backward(CView<2> q, CView<2> d_zhat, CView<2> d_u, View<2> dz, T* saved, std::int64_t saved_size, T* work,
                std::int64_t work_size, bool code_l2 = true) {
    const std::int64_t m = dz.size(0);
    check_shape(dz, {m, kD}, "quantizer backward: dz");
    Carver<T, Mem> c(saved, saved_size);
    const Saved s = carve_saved(c, m);
    Carver<T, Mem> cw(work, work_size);
    const View<2> d_post_act = cw.take(Extents<2>{m, kDq}), d_post_fc = cw.take(Extents<2>{m, kDq});
    const View<2> d_uq = cw.take(Extents<2>{m, kL});
    const View<2> d_fc_act = cw.take(Extents<2>{m, kD}), d_fc = cw.take(Extents<2>{m, kD});
    fill(be_, d_uq, T(0));
    if (!d_zhat.empty()) {
      check_shape(d_zhat, {m, kDq}, "quantizer backward: d_zhat");
      linear_backward(be_, CView<2>(s.post_act), post_proj_w.value, d_zhat, d_post_act, post_proj_w.grad,
                      post_proj_b.grad);
      gelu_backward(be_, CView<2>(s.post_fc), CView<2>(d_post_act), d_post_fc);
      const View<2> d_q = d_fc_act.slice(1, 0, kL);  // free until the quant_embed backward
      linear_backward(be_, q, post_fc_w.value, CView<2>(d_post_fc), d_q, post_fc_w.grad, post_fc_b.grad);
      bsq_straight_through_backward(be_, CView<2>(d_q), code_scale(code_l2), d_uq);
    }
    if (!d_u.empty()) {
      check_shape(d_u, {m, kL}, "quantizer backward: d_u");
      add_inplace(be_, d_u, d_uq);
    }
    const View<2> d_h = d_fc_act.slice(1, 0, kL);
    l2_normalize_rows_backward(be_, CView<2>(s.h), CView<2>(d_uq), d_h, T(1e-12));
    linear_backward(be_, CView<2>(s.fc_act), proj_w.value, CView<2>(d_h), d_fc, proj_w.grad, proj_b.grad);
    gelu_backward(be_, CView<2>(s.fc), CView<2>(d_fc), d_fc_act);
    linear_backward(be_, CView<2>(s.z), fc_w.value, CView<2>(d_fc_act), dz, fc_w.grad, fc_b.grad);
  }

  P<2> fc_w, proj_w, post_fc_w, post_proj_w;
  P<1> fc_b, proj_b, post_fc_b, post_proj_b;

 private:
  struct Saved {
    View<2> z, fc, fc_act, h, post_fc, post_act;
  };
  static Saved carve_saved(Carver<T, Mem>& c, std::int64_t m) {
    Saved s;
    s.z = c.take(Extents<2>{m, kD});
    s.fc = c.take(Extents<2>{m, kD});
    s.fc_act = c.take(Extents<2>{m, kD});
    s.h = c.take(Extents<2>{m, kL});
    s.post_fc = c.take(Extents<2>{m, kDq});
    s.post_act = c.take(Extents<2>{m, kDq});
    return s;
  }

  B be_;
};

}  // namespace qlip::nn
