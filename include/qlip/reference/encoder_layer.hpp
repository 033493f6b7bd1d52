/// @file encoder_layer.hpp
/// @brief The fused inference op of one pre-LN encoder layer (QLIPEncoderLayer, MODEL.md §2.3):
///        its weights, its arguments and their checks, shared by every backend, and the layer
///        composed from the op vocabulary (the reference backend's overload, and any backend that
///        has no fused version).
///
///   x = x + out_proj(inner_attn_ln?(Attn(RoPE(q), RoPE(k), v)))      q|k|v = qkv(LN1(x)), q ·= q_scale
///   x = x + down(ffn_ln?(act(up(LN2(x)))))                          SwiGLU: act = silu(gate) ⊙ linear
///
/// Weights are in the inference layout the frozen model builds at load time (nn/encoder_layer.hpp):
/// q|k|v rows in one [3D, D] matrix (an absent bias is zero rows of the fused bias, and adding 0.0f
/// is exact), SwiGLU's w1|w2 rows in one [2I, D] matrix (gate rows, then linear rows), and q either
/// pre-scaled by Dh^-½ in the weights (q_scale = 1) or scaled after the projection (q_scale = Dh^-½),
/// as the official code scales q before RoPE.
///
/// Contract: x[B, T, D] is the residual stream, updated in place (`+=`, the only read-modify-write);
/// every temporary is written with `=`. Inference only: nothing is saved for a backward.
#pragma once

#include <cstdint>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/attention.hpp"
#include "qlip/reference/rope.hpp"

namespace qlip {

/// Activation of a plain (fc1/fc2) MLP, from `hidden_act` (HF ACT2FN names).
enum class Activation : std::uint8_t {
  gelu,        ///< "gelu": exact erf GELU
  quick_gelu,  ///< "quick_gelu": x·σ(1.702x)
};

/// Name of an Activation as config.json spells it.
constexpr const char* activation_name(Activation a) {
  return a == Activation::gelu ? "gelu" : "quick_gelu";
}

/// Feed-forward block of an encoder layer (MODEL.md §2.3).
enum class MlpKind : std::uint8_t {
  plain,   ///< QLIPMLP: fc2(ffn_ln?(act(fc1(x))))
  swiglu,  ///< QLIPSwiGLU: w3(ffn_ln?(silu(w1·x) ⊙ w2·x))
};

/// The widths of one layer; every weight shape follows from them.
struct EncoderLayerDims {
  std::int64_t hidden = 0;        ///< D
  std::int64_t heads = 0;         ///< H (head_dim = D / H)
  std::int64_t intermediate = 0;  ///< I
  MlpKind mlp = MlpKind::plain;

  constexpr std::int64_t head_dim() const { return heads > 0 ? hidden / heads : 0; }
  /// Width of the up projection's output: gate | linear for SwiGLU.
  constexpr std::int64_t up_width() const { return mlp == MlpKind::swiglu ? 2 * intermediate : intermediate; }
};

/// One layer's weights in the inference layout (see the file comment), as read-only views.
/// @tparam T element type
/// @tparam M memory space
template <class T, memory_space M = host_memory>
struct EncoderLayerWeights {
  template <int R>
  using CView = TensorView<const T, R, M>;
  CView<1> ln1_g, ln1_b;          // [D]
  CView<2> qkv_w;                 // [3D, D] rows q | k | v
  CView<1> qkv_b;                 // [3D], or empty
  CView<1> attn_ln_g, attn_ln_b;  // [D] inner_attn_ln (sub-LN), or both empty
  CView<2> out_w;                 // [D, D]
  CView<1> out_b;                 // [D], or empty
  CView<1> ln2_g, ln2_b;          // [D]
  CView<2> up_w;                  // [I, D] fc1, or SwiGLU [2I, D] rows w1 (gate) | w2 (linear)
  CView<1> up_b;                  // [I] or [2I], or empty
  CView<1> ffn_ln_g, ffn_ln_b;    // [I] ffn_ln (sub-LN), or both empty
  CView<2> down_w;                // [D, I] fc2 or w3
  CView<1> down_b;                // [D], or empty
};

/// Run-time arguments of one layer forward.
/// @tparam M memory space of the RoPE table
template <memory_space M = host_memory>
struct EncoderLayerArgs {
  EncoderLayerDims dims{};
  float eps = 1e-5f;                         ///< every LayerNorm's eps
  Activation act = Activation::gelu;         ///< plain MLP only (SwiGLU uses SiLU)
  AttentionMask mask = AttentionMask::none;  ///< causal in the text tower
  float q_scale = 1.0f;                      ///< multiplies q after its projection (1: folded into qkv_w)
  const RopeTableView<M>* rope = nullptr;    ///< interleaved 2-D RoPE on q and k; nullptr: none
};

namespace detail {

/// A parameter vector: [n], or empty when the layer has none (`optional`).
template <class T, class M>
void check_layer_vector(const TensorView<const T, 1, M>& v, std::int64_t n, bool optional, const char* what) {
  if (optional && v.empty()) return;
  check_shape(v, {n}, what);
}

/// Checks x[B, T, D] (contiguous: the residual stream is updated as [B·T, D] rows), every weight
/// against dims, the sub-LN pairs (both present or both absent), and the RoPE table against the
/// heads and the sequence. Shared by every backend's encoder_layer_forward.
template <class T, class M>
void check_encoder_layer_args(const EncoderLayerWeights<T, M>& w, const TensorView<T, 3, M>& x,
                              const EncoderLayerArgs<M>& args) {
  const EncoderLayerDims& d = args.dims;
  QLIP_CHECK(d.hidden > 0 && d.heads > 0 && d.hidden % d.heads == 0 && d.intermediate > 0,
             "encoder layer: hidden ", d.hidden, " must be a positive multiple of heads ", d.heads,
             " and intermediate ", d.intermediate, " positive");
  QLIP_CHECK(x.size(2) == d.hidden && x.is_contiguous(), "encoder layer: x must be contiguous [B, T, ", d.hidden,
             "], got ", shape_string<3>(x.shape()));
  const std::int64_t dm = d.hidden, im = d.intermediate, up = d.up_width();
  check_layer_vector(w.ln1_g, dm, false, "encoder layer: layer_norm1 weight");
  check_layer_vector(w.ln1_b, dm, false, "encoder layer: layer_norm1 bias");
  check_shape(w.qkv_w, {3 * dm, dm}, "encoder layer: fused q|k|v weight");
  check_layer_vector(w.qkv_b, 3 * dm, true, "encoder layer: fused q|k|v bias");
  QLIP_CHECK(w.attn_ln_g.empty() == w.attn_ln_b.empty(), "encoder layer: inner_attn_ln needs weight and bias");
  check_layer_vector(w.attn_ln_g, dm, true, "encoder layer: inner_attn_ln weight");
  check_layer_vector(w.attn_ln_b, dm, true, "encoder layer: inner_attn_ln bias");
  check_shape(w.out_w, {dm, dm}, "encoder layer: out_proj weight");
  check_layer_vector(w.out_b, dm, true, "encoder layer: out_proj bias");
  check_layer_vector(w.ln2_g, dm, false, "encoder layer: layer_norm2 weight");
  check_layer_vector(w.ln2_b, dm, false, "encoder layer: layer_norm2 bias");
  check_shape(w.up_w, {up, dm}, "encoder layer: MLP up weight");
  check_layer_vector(w.up_b, up, true, "encoder layer: MLP up bias");
  QLIP_CHECK(w.ffn_ln_g.empty() == w.ffn_ln_b.empty(), "encoder layer: ffn_ln needs weight and bias");
  check_layer_vector(w.ffn_ln_g, im, true, "encoder layer: ffn_ln weight");
  check_layer_vector(w.ffn_ln_b, im, true, "encoder layer: ffn_ln bias");
  check_shape(w.down_w, {dm, im}, "encoder layer: MLP down weight");
  check_layer_vector(w.down_b, dm, true, "encoder layer: MLP down bias");
  if (args.rope != nullptr) {
    // The q/k heads are a strided [B, T, H, Dh] view; the rotation's own check covers the table.
    const TensorView<T, 4, M> heads(x.base(), {x.size(0), x.size(1), d.heads, d.head_dim()},
                                    {x.stride(0), x.stride(1), d.head_dim(), 1}, x.offset());
    check_apply_rope_interleaved_args(heads, args.rope->cos, args.rope->sin, args.rope->first_token,
                                      "encoder layer RoPE");
  }
}

/// Head `which` (0 q, 1 k, 2 v) of a [B·T, 3D] q|k|v buffer as [B, T, H, Dh] (a strided view).
template <class T, class M>
TensorView<T, 4, M> qkv_heads(const TensorView<T, 2, M>& qkv, int which, std::int64_t batch, std::int64_t tokens,
                              const EncoderLayerDims& d) {
  const std::int64_t rs = qkv.stride(0);
  return TensorView<T, 4, M>(qkv.base(), {batch, tokens, d.heads, d.head_dim()}, {tokens * rs, rs, d.head_dim(), 1},
                             qkv.offset() + which * d.hidden);
}

/// The layer composed from the op vocabulary, called unqualified so that the overloads of `be`'s
/// backend are found by argument-dependent lookup: LayerNorm, the fused q|k|v linear, RoPE,
/// attention, the residual adds and the MLP as separate ops. q_scale is passed to attention as its
/// logit scale: RoPE is linear, so scaling the logits is the same function as scaling q before RoPE.
/// Temporaries are host tensors of the backend's element type (an oracle may allocate); the arena
/// is only handed to attention.
template <class B, class T = typename B::scalar>
void encoder_layer_composed(B be, Arena& ws, const EncoderLayerWeights<T, host_memory>& w, HostView<T, 3> x,
                            const EncoderLayerArgs<host_memory>& args) {
  check_encoder_layer_args(w, x, args);
  const EncoderLayerDims& d = args.dims;
  const std::int64_t batch = x.size(0), tokens = x.size(1), m = batch * tokens;
  if (m == 0) return;
  using CV2 = HostView<const T, 2>;
  HostView<T, 2> x2 = x.template reshape<2>({m, d.hidden});
  Tensor<T, 2> h({m, d.hidden}), qkv({m, 3 * d.hidden}), attn({m, d.hidden}), y({m, d.hidden});
  Tensor<T, 2> up({m, d.up_width()}), gated({m, d.intermediate});

  layer_norm(be, CV2(x2), w.ln1_g, w.ln1_b, args.eps, h.view());
  linear(be, CV2(h.view()), w.qkv_w, w.qkv_b, qkv.view());
  const HostView<T, 4> q = qkv_heads(qkv.view(), 0, batch, tokens, d), k = qkv_heads(qkv.view(), 1, batch, tokens, d),
                       v = qkv_heads(qkv.view(), 2, batch, tokens, d);
  if (args.rope != nullptr) {
    apply_rope_interleaved(be, q, args.rope->cos, args.rope->sin, args.rope->first_token);
    apply_rope_interleaved(be, k, args.rope->cos, args.rope->sin, args.rope->first_token);
  }
  const HostView<T, 4> attn4 = attn.view().template reshape<4>({batch, tokens, d.heads, d.head_dim()});
  attention(be, ws, HostView<const T, 4>(q), HostView<const T, 4>(k), HostView<const T, 4>(v), attn4, args.q_scale,
            args.mask);
  if (!w.attn_ln_g.empty()) layer_norm(be, CV2(attn.view()), w.attn_ln_g, w.attn_ln_b, args.eps, attn.view());
  linear(be, CV2(attn.view()), w.out_w, w.out_b, y.view());
  add_inplace(be, CV2(y.view()), x2);

  layer_norm(be, CV2(x2), w.ln2_g, w.ln2_b, args.eps, h.view());
  linear(be, CV2(h.view()), w.up_w, w.up_b, up.view());
  HostView<T, 2> act = up.view();
  if (d.mlp == MlpKind::swiglu) {
    act = gated.view();
    swiglu(be, CV2(up.view().slice(1, 0, d.intermediate)), CV2(up.view().slice(1, d.intermediate, 2 * d.intermediate)),
           act);
  } else if (args.act == Activation::quick_gelu) {
    quick_gelu(be, CV2(up.view()), act);
  } else {
    gelu(be, CV2(up.view()), act);
  }
  if (!w.ffn_ln_g.empty()) layer_norm(be, CV2(act), w.ffn_ln_g, w.ffn_ln_b, args.eps, act);
  linear(be, CV2(act), w.down_w, w.down_b, y.view());
  add_inplace(be, CV2(y.view()), x2);
}

}  // namespace detail
}  // namespace qlip
