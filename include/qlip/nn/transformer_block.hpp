/// @file transformer_block.hpp
/// @brief The trainable pre-norm transformer block (QLIPEncoderLayer, MODEL.md §2.3), written once
///        for every backend: it only composes ops, and saves in forward what its backward consumes.
///
///   h = x + out_proj(inner_attn_ln?(Attn(RoPE(q), RoPE(k), v)))     q, k, v = proj(LN1(x))
///   y = h + fc2(ffn_ln?(act(fc1(LN2(h)))))     or SwiGLU: w3(ffn_ln?(silu(w1·) ⊙ w2·))
///
/// Attention uses logits scale·q·kᵀ with scale = Dh^-½ applied inside the op; the official code scales
/// q before RoPE, which is the same function (RoPE is linear), so parameters keep the official layout.
///
/// Contract:
///  - forward_train writes y (=) and the saved activations into a caller-owned buffer of
///    activation_elements(batch, tokens) elements: LN inputs' statistics (mean, rstd), the normalised
///    outputs that feed GEMMs, q/k/v after RoPE, the attention output and its log-sum-exp (never the
///    T×T probabilities), the pre-activation MLP values. The block input x is the caller's (a stack
///    keeps each layer's input).
///  - backward reads those, writes dx (=) and accumulates every parameter gradient (+=) whose grad view
///    is bound (an unbound gradient is a frozen parameter and is skipped).
///  - Ops are called unqualified and found by argument-dependent lookup on the backend type, so this
///    header includes no backend: the CPU, the reference (float or double) and any other backend
///    instantiate the same code.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/carve.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/nn/block_config.hpp"
#include "qlip/nn/param.hpp"
#include "qlip/reference/ops.hpp"

namespace qlip::nn {

/// One trainable block.
/// @tparam S the stack's structural config (widths, MLP kind, sub-LN, biases)
/// @tparam B backend (cpu_backend, reference_backend<T>, ...)
template <StackConfig S, backend B>
  requires valid_stack<S> && (S.norm == NormKind::layer_norm)
class TransformerBlock {
 public:
  using T = typename B::scalar;
  using Mem = typename B::memory;
  template <int R>
  using View = TensorView<T, R, Mem>;
  template <int R>
  using CView = TensorView<const T, R, Mem>;
  template <int R>
  using P = Param<T, R, Mem>;

  static constexpr std::int64_t kD = S.hidden;
  static constexpr std::int64_t kHeads = S.heads;
  static constexpr std::int64_t kHeadDim = S.head_dim();
  static constexpr std::int64_t kI = S.intermediate;
  static constexpr bool kSwiglu = S.mlp == MlpKind::swiglu;
  /// Width of the first MLP projection's output: gate | linear for SwiGLU.
  static constexpr std::int64_t kUp = kSwiglu ? 2 * kI : kI;

  explicit TransformerBlock(B be = {}) : be_(be) {
    for (P<2>* w : {&q_w, &k_w, &v_w, &out_w}) w->shape = {kD, kD};
    for (P<1>* b : {&q_b, &k_b, &v_b, &out_b, &ln1_g, &ln1_b, &ln2_g, &ln2_b, &attn_ln_g, &attn_ln_b}) b->shape = {kD};
    fc1_w.shape = {kI, kD};
    fc1_b.shape = {kI};
    gate_w.shape = {kI, kD};
    gate_b.shape = {kI};
    fc2_w.shape = {kD, kI};
    fc2_b.shape = {kD};
    ffn_ln_g.shape = {kI};
    ffn_ln_b.shape = {kI};
  }

  /// Calls v(name, param) for every parameter, with the official names under `prefix`
  /// (e.g. "vision_model.encoder.layers.3"), in the official module's state_dict order
  /// (QLIPAttention registers k, v, q; EVA-02's SwiGLU w1, w2, ffn_ln, w3).
  template <class V>
  void visit_parameters(V&& v, const std::string& prefix) {
    const std::string a = join_name(prefix, "self_attn");
    v(join_name(a, "k_proj.weight"), k_w);
    if constexpr (S.k_bias) v(join_name(a, "k_proj.bias"), k_b);
    v(join_name(a, "v_proj.weight"), v_w);
    if constexpr (S.v_bias) v(join_name(a, "v_proj.bias"), v_b);
    v(join_name(a, "q_proj.weight"), q_w);
    if constexpr (S.q_bias) v(join_name(a, "q_proj.bias"), q_b);
    if constexpr (S.subln) {
      v(join_name(a, "inner_attn_ln.weight"), attn_ln_g);
      v(join_name(a, "inner_attn_ln.bias"), attn_ln_b);
    }
    v(join_name(a, "out_proj.weight"), out_w);
    v(join_name(a, "out_proj.bias"), out_b);
    v(join_name(prefix, "layer_norm1.weight"), ln1_g);
    v(join_name(prefix, "layer_norm1.bias"), ln1_b);
    const std::string m = join_name(prefix, "mlp");
    if constexpr (kSwiglu) {
      v(join_name(m, "w1.weight"), gate_w);
      v(join_name(m, "w1.bias"), gate_b);
      v(join_name(m, "w2.weight"), fc1_w);
      v(join_name(m, "w2.bias"), fc1_b);
    } else {
      v(join_name(m, "fc1.weight"), fc1_w);
      v(join_name(m, "fc1.bias"), fc1_b);
    }
    if constexpr (S.subln) {
      v(join_name(m, "ffn_ln.weight"), ffn_ln_g);
      v(join_name(m, "ffn_ln.bias"), ffn_ln_b);
    }
    v(join_name(m, kSwiglu ? "w3.weight" : "fc2.weight"), fc2_w);
    v(join_name(m, kSwiglu ? "w3.bias" : "fc2.bias"), fc2_b);
    v(join_name(prefix, "layer_norm2.weight"), ln2_g);
    v(join_name(prefix, "layer_norm2.bias"), ln2_b);
  }

  /// Elements of the saved-activation buffer forward_train fills for `batch` sequences of `tokens`.
  static std::int64_t activation_elements(std::int64_t batch, std::int64_t tokens) {
    auto c = Carver<T, Mem>::counting();
    (void)carve_saved(c, batch, tokens);
    return c.used();
  }
  /// Elements of the scratch buffer backward needs.
  static std::int64_t workspace_elements(std::int64_t batch, std::int64_t tokens) {
    auto c = Carver<T, Mem>::counting();
    (void)carve_grad_scratch(c, batch, tokens);
    return c.used();
  }

  /// Training forward: y = block(x) for x, y [batch·tokens, D] (row = b·tokens + t), saving into
  /// `saved` (activation_elements(batch, tokens) elements). `arena` holds the attention op's scratch.
  void forward_train(Arena& arena, CView<2> x, View<2> y, T* saved, std::int64_t saved_size, std::int64_t batch,
                     std::int64_t tokens, const BlockArgs<T, Mem>& args) const {
    check_rows(x, batch, tokens, "forward_train x");
    check_rows(y, batch, tokens, "forward_train y");
    Carver<T, Mem> c(saved, saved_size);
    const Saved s = carve_saved(c, batch, tokens);
    layer_norm_train(be_, x, ln1_g.value, ln1_b.value, args.eps, s.ln1_out, s.ln1_mean, s.ln1_rstd);
    linear(be_, s.ln1_out, q_w.value, bias_of(q_b, S.q_bias), s.qkv.slice(1, 0, kD));
    linear(be_, s.ln1_out, k_w.value, bias_of(k_b, S.k_bias), s.qkv.slice(1, kD, 2 * kD));
    linear(be_, s.ln1_out, v_w.value, bias_of(v_b, S.v_bias), s.qkv.slice(1, 2 * kD, 3 * kD));
    const View<4> q = heads_of(s.qkv, 0, batch, tokens), k = heads_of(s.qkv, 1, batch, tokens),
                  v = heads_of(s.qkv, 2, batch, tokens);
    if (args.rope != nullptr) {
      apply_rope_interleaved(be_, q, args.rope->cos, args.rope->sin, args.rope->first_token);
      apply_rope_interleaved(be_, k, args.rope->cos, args.rope->sin, args.rope->first_token);
    }
    attention_train(be_, arena, CView<4>(q), CView<4>(k), CView<4>(v), as_heads(s.attn, batch, tokens), s.lse,
                    attention_scale(), args.mask);
    CView<2> attn_in = s.attn;
    if constexpr (S.subln) {
      layer_norm_train(be_, CView<2>(s.attn), attn_ln_g.value, attn_ln_b.value, args.eps, s.attn_ln_out,
                       s.attn_ln_mean, s.attn_ln_rstd);
      attn_in = s.attn_ln_out;
    }
    linear(be_, attn_in, out_w.value, CView<1>(out_b.value), s.h);
    add_inplace(be_, x, s.h);
    layer_norm_train(be_, CView<2>(s.h), ln2_g.value, ln2_b.value, args.eps, s.ln2_out, s.ln2_mean, s.ln2_rstd);
    CView<2> mlp_in = s.act;
    if constexpr (kSwiglu) {
      const View<2> gate = s.up.slice(1, 0, kI), lin = s.up.slice(1, kI, 2 * kI);
      linear(be_, CView<2>(s.ln2_out), gate_w.value, CView<1>(gate_b.value), gate);
      linear(be_, CView<2>(s.ln2_out), fc1_w.value, CView<1>(fc1_b.value), lin);
      swiglu(be_, CView<2>(gate), CView<2>(lin), s.act);
    } else {
      linear(be_, CView<2>(s.ln2_out), fc1_w.value, CView<1>(fc1_b.value), s.up);
      activate(CView<2>(s.up), s.act, args.act);
    }
    if constexpr (S.subln) {
      layer_norm_train(be_, CView<2>(s.act), ffn_ln_g.value, ffn_ln_b.value, args.eps, s.ffn_ln_out, s.ffn_ln_mean,
                       s.ffn_ln_rstd);
      mlp_in = s.ffn_ln_out;
    }
    linear(be_, mlp_in, fc2_w.value, CView<1>(fc2_b.value), y);
    add_inplace(be_, CView<2>(s.h), y);
  }

  /// Backward of forward_train for the upstream gradient dy: dx (=), parameter gradients (+=).
  /// `saved` is what forward_train wrote for the same x; `work` has workspace_elements(batch, tokens).
  void backward(Arena& arena, CView<2> x, CView<2> dy, View<2> dx, T* saved, std::int64_t saved_size, T* work,
                std::int64_t work_size, std::int64_t batch, std::int64_t tokens, const BlockArgs<T, Mem>& args) {
    check_rows(x, batch, tokens, "backward x");
    check_rows(dy, batch, tokens, "backward dy");
    check_rows(dx, batch, tokens, "backward dx");
    Carver<T, Mem> c(saved, saved_size);
    const Saved s = carve_saved(c, batch, tokens);
    Carver<T, Mem> cw(work, work_size);
    const GradScratch g = carve_grad_scratch(cw, batch, tokens);

    // MLP branch: y = h + fc2(mlp_in).
    CView<2> mlp_in = s.act;
    if constexpr (S.subln) mlp_in = s.ffn_ln_out;
    linear_backward(be_, mlp_in, fc2_w.value, dy, g.d_mlp_in, fc2_w.grad, fc2_b.grad);
    View<2> d_act = g.d_mlp_in;
    if constexpr (S.subln) {
      layer_norm_backward(be_, CView<2>(s.act), ffn_ln_g.value, CView<1>(s.ffn_ln_mean), CView<1>(s.ffn_ln_rstd),
                          CView<2>(g.d_mlp_in), g.d_act, ffn_ln_g.grad, ffn_ln_b.grad);
      d_act = g.d_act;
    }
    if constexpr (kSwiglu) {
      const View<2> d_gate = g.d_up.slice(1, 0, kI), d_lin = g.d_up.slice(1, kI, 2 * kI);
      swiglu_backward(be_, CView<2>(s.up.slice(1, 0, kI)), CView<2>(s.up.slice(1, kI, 2 * kI)), CView<2>(d_act),
                      d_gate, d_lin);
      linear_backward(be_, CView<2>(s.ln2_out), gate_w.value, CView<2>(d_gate), g.d_ln2, gate_w.grad, gate_b.grad);
      linear_backward(be_, CView<2>(s.ln2_out), fc1_w.value, CView<2>(d_lin), g.tmp, fc1_w.grad, fc1_b.grad);
      add_inplace(be_, CView<2>(g.tmp), g.d_ln2);
    } else {
      activate_backward(CView<2>(s.up), CView<2>(d_act), g.d_up, args.act);
      linear_backward(be_, CView<2>(s.ln2_out), fc1_w.value, CView<2>(g.d_up), g.d_ln2, fc1_w.grad, fc1_b.grad);
    }
    // dh = dy + LN2ᵀ(d_ln2)
    layer_norm_backward(be_, CView<2>(s.h), ln2_g.value, CView<1>(s.ln2_mean), CView<1>(s.ln2_rstd),
                        CView<2>(g.d_ln2), g.dh, ln2_g.grad, ln2_b.grad);
    add_inplace(be_, dy, g.dh);

    // Attention branch: h = x + out_proj(attn_in).
    CView<2> attn_in = s.attn;
    if constexpr (S.subln) attn_in = s.attn_ln_out;
    linear_backward(be_, attn_in, out_w.value, CView<2>(g.dh), g.d_attn_in, out_w.grad, out_b.grad);
    View<2> d_attn = g.d_attn_in;
    if constexpr (S.subln) {
      layer_norm_backward(be_, CView<2>(s.attn), attn_ln_g.value, CView<1>(s.attn_ln_mean), CView<1>(s.attn_ln_rstd),
                          CView<2>(g.d_attn_in), g.d_attn, attn_ln_g.grad, attn_ln_b.grad);
      d_attn = g.d_attn;
    }
    const View<4> q = heads_of(s.qkv, 0, batch, tokens), k = heads_of(s.qkv, 1, batch, tokens),
                  v = heads_of(s.qkv, 2, batch, tokens);
    const View<4> dq = heads_of(g.d_qkv, 0, batch, tokens), dk = heads_of(g.d_qkv, 1, batch, tokens),
                  dv = heads_of(g.d_qkv, 2, batch, tokens);
    attention_backward(be_, arena, CView<4>(q), CView<4>(k), CView<4>(v), CView<4>(as_heads(s.attn, batch, tokens)),
                       CView<3>(s.lse), CView<4>(as_heads(d_attn, batch, tokens)), dq, dk, dv, attention_scale(),
                       args.mask);
    if (args.rope != nullptr) {
      apply_rope_interleaved_backward(be_, dq, args.rope->cos, args.rope->sin, args.rope->first_token);
      apply_rope_interleaved_backward(be_, dk, args.rope->cos, args.rope->sin, args.rope->first_token);
    }
    // The three projections read the same LN1 output: their input gradients add up.
    linear_backward(be_, CView<2>(s.ln1_out), q_w.value, CView<2>(g.d_qkv.slice(1, 0, kD)), g.d_ln1, q_w.grad,
                    grad_of(q_b, S.q_bias));
    linear_backward(be_, CView<2>(s.ln1_out), k_w.value, CView<2>(g.d_qkv.slice(1, kD, 2 * kD)), g.tmp, k_w.grad,
                    grad_of(k_b, S.k_bias));
    add_inplace(be_, CView<2>(g.tmp), g.d_ln1);
    linear_backward(be_, CView<2>(s.ln1_out), v_w.value, CView<2>(g.d_qkv.slice(1, 2 * kD, 3 * kD)), g.tmp, v_w.grad,
                    grad_of(v_b, S.v_bias));
    add_inplace(be_, CView<2>(g.tmp), g.d_ln1);
    // dx = dh + LN1ᵀ(d_ln1)
    layer_norm_backward(be_, x, ln1_g.value, CView<1>(s.ln1_mean), CView<1>(s.ln1_rstd), CView<2>(g.d_ln1), dx,
                        ln1_g.grad, ln1_b.grad);
    add_inplace(be_, CView<2>(g.dh), dx);
  }

  /// Dh^-½, the logit scale.
  static T attention_scale() { return static_cast<T>(1.0 / std::sqrt(static_cast<double>(kHeadDim))); }

  // Parameters (official layout; bound by the owner of the flat buffers).
  P<2> q_w, k_w, v_w, out_w, fc1_w, gate_w, fc2_w;
  P<1> q_b, k_b, v_b, out_b, fc1_b, gate_b, fc2_b;
  P<1> ln1_g, ln1_b, ln2_g, ln2_b, attn_ln_g, attn_ln_b, ffn_ln_g, ffn_ln_b;

 private:
  struct Saved {
    View<2> ln1_out;             // [N, D]
    View<1> ln1_mean, ln1_rstd;  // [N]
    View<2> qkv;                 // [N, 3D] q | k | v after RoPE
    View<2> attn;                // [N, D] attention output (heads concatenated)
    View<3> lse;                 // [B, H, T]
    View<2> attn_ln_out;         // [N, D] (sub-LN)
    View<1> attn_ln_mean, attn_ln_rstd;
    View<2> h;                   // [N, D] residual after attention
    View<2> ln2_out;             // [N, D]
    View<1> ln2_mean, ln2_rstd;
    View<2> up;                  // [N, kUp] pre-activation (gate | linear for SwiGLU)
    View<2> act;                 // [N, I]
    View<2> ffn_ln_out;          // [N, I] (sub-LN)
    View<1> ffn_ln_mean, ffn_ln_rstd;
  };
  struct GradScratch {
    View<2> d_mlp_in, d_act, d_up, d_ln2, tmp, dh, d_attn_in, d_attn, d_qkv, d_ln1;
  };

  static Saved carve_saved(Carver<T, Mem>& c, std::int64_t batch, std::int64_t tokens) {
    const std::int64_t n = batch * tokens;
    Saved s;
    s.ln1_out = c.take(Extents<2>{n, kD});
    s.ln1_mean = c.take(Extents<1>{n});
    s.ln1_rstd = c.take(Extents<1>{n});
    s.qkv = c.take(Extents<2>{n, 3 * kD});
    s.attn = c.take(Extents<2>{n, kD});
    s.lse = c.take(Extents<3>{batch, kHeads, tokens});
    if constexpr (S.subln) {
      s.attn_ln_out = c.take(Extents<2>{n, kD});
      s.attn_ln_mean = c.take(Extents<1>{n});
      s.attn_ln_rstd = c.take(Extents<1>{n});
    }
    s.h = c.take(Extents<2>{n, kD});
    s.ln2_out = c.take(Extents<2>{n, kD});
    s.ln2_mean = c.take(Extents<1>{n});
    s.ln2_rstd = c.take(Extents<1>{n});
    s.up = c.take(Extents<2>{n, kUp});
    s.act = c.take(Extents<2>{n, kI});
    if constexpr (S.subln) {
      s.ffn_ln_out = c.take(Extents<2>{n, kI});
      s.ffn_ln_mean = c.take(Extents<1>{n});
      s.ffn_ln_rstd = c.take(Extents<1>{n});
    }
    return s;
  }
  static GradScratch carve_grad_scratch(Carver<T, Mem>& c, std::int64_t batch, std::int64_t tokens) {
    const std::int64_t n = batch * tokens;
    GradScratch g;
    g.d_mlp_in = c.take(Extents<2>{n, kI});
    if constexpr (S.subln) g.d_act = c.take(Extents<2>{n, kI});
    g.d_up = c.take(Extents<2>{n, kUp});
    g.d_ln2 = c.take(Extents<2>{n, kD});
    g.tmp = c.take(Extents<2>{n, kD});
    g.dh = c.take(Extents<2>{n, kD});
    g.d_attn_in = c.take(Extents<2>{n, kD});
    if constexpr (S.subln) g.d_attn = c.take(Extents<2>{n, kD});
    g.d_qkv = c.take(Extents<2>{n, 3 * kD});
    g.d_ln1 = c.take(Extents<2>{n, kD});
    return g;
  }

  /// Head `which` (0 q, 1 k, 2 v) of a [N, 3D] q|k|v buffer as [B, T, H, Dh] (a strided view).
  static View<4> heads_of(const View<2>& qkv, int which, std::int64_t batch, std::int64_t tokens) {
    const std::int64_t rs = qkv.stride(0);
    return View<4>(qkv.base(), {batch, tokens, kHeads, kHeadDim}, {tokens * rs, rs, kHeadDim, 1},
                   qkv.offset() + which * kD);
  }
  /// A contiguous [N, D] buffer as [B, T, H, Dh].
  static View<4> as_heads(const View<2>& a, std::int64_t batch, std::int64_t tokens) {
    return heads_of(a, 0, batch, tokens);
  }
  static void check_rows(const CView<2>& v, std::int64_t batch, std::int64_t tokens, const char* what) {
    check_shape(v, {batch * tokens, kD}, what);
  }
  static CView<1> bias_of(const P<1>& b, bool present) { return present ? CView<1>(b.value) : CView<1>(); }
  static View<1> grad_of(const P<1>& b, bool present) { return present ? b.grad : View<1>(); }

  void activate(CView<2> x, View<2> y, Activation act) const {
    if (act == Activation::gelu)
      gelu(be_, x, y);
    else
      quick_gelu(be_, x, y);
  }
  void activate_backward(CView<2> x, CView<2> dy, View<2> dx, Activation act) const {
    if (act == Activation::gelu)
      gelu_backward(be_, x, dy, dx);
    else
      quick_gelu_backward(be_, x, dy, dx);
  }

  B be_;
};

}  // namespace qlip::nn
