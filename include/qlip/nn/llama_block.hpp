/// @file llama_block.hpp
/// @brief The Llama decoder layer (HF LlamaDecoderLayer, MODEL.md §8.3), written once for every
///        backend: training forward and backward side by side, and the inference forward that reads
///        and extends a KV cache in place.
///
///   h = x + o_proj(Attn(RoPE(q_proj(n1)), RoPE(k_proj(n1)), v_proj(n1)))    n1 = RMSNorm_in(x)
///   y = h + down_proj(silu(gate_proj(n2)) ⊙ up_proj(n2))                    n2 = RMSNorm_post(h)
///
/// Attention is causal with Hq query heads over Hkv key/value heads (grouped-query attention: query
/// head h reads kv head h / (Hq/Hkv)), logits scaled by Dh^-½ inside the op. RoPE is the half-split
/// (rotate_half) form with a per-token position table; no biases anywhere (HF attention_bias and
/// mlp_bias false).
///
/// Contract as nn/transformer_block.hpp: forward_train writes y (=) and fills `saved`; backward
/// writes dx (=) and accumulates the bound parameter gradients (+=). forward_cached updates the
/// residual stream in place, appends the new keys/values to the cache and allocates only from the
/// arena (decode_workspace_bytes). Decoding multiplies by the fp32 weights, or by bf16 copies of
/// them (set_decode_weights; host float backends), which halves the bytes a memory-bound step reads.
#pragma once

#include <cmath>
#include <array>
#include <cstdint>
#include <string>
#include <type_traits>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/carve.hpp"
#include "qlip/core/dtype.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/nn/llama_config.hpp"
#include "qlip/nn/param.hpp"
#include "qlip/reference/ops.hpp"

namespace qlip::nn {

/// The RoPE of one forward: the model's cos/sin tables [P, Dh/2] and the position of each of the T
/// tokens (host memory, T entries; the same for every sequence of the batch).
template <memory_space M>
struct LlamaRope {
  TensorView<const float, 2, M> cos;
  TensorView<const float, 2, M> sin;
  const std::int64_t* positions = nullptr;
};

/// The weights decoding multiplies by: the fp32 parameters themselves, or bf16 copies rounded from
/// them (round to nearest even; activations, norms, attention and sums stay fp32).
enum class DecodeWeights { f32, bf16 };

/// One layer's slice of a KV cache: keys and values after RoPE, [B, S_max, Hkv, Dh] each.
template <class T, memory_space M>
struct KvLayer {
  TensorView<T, 4, M> k;
  TensorView<T, 4, M> v;
};

template <LlamaConfig C, backend B>
  requires valid_llama<C>
class LlamaBlock {
 public:
  using T = typename B::scalar;
  using Mem = typename B::memory;
  template <int R>
  using View = TensorView<T, R, Mem>;
  template <int R>
  using CView = TensorView<const T, R, Mem>;
  template <int R>
  using P = Param<T, R, Mem>;

  static constexpr std::int64_t kD = C.hidden;
  static constexpr std::int64_t kHeads = C.heads;
  static constexpr std::int64_t kKvHeads = C.kv_heads;
  static constexpr std::int64_t kHeadDim = C.head_dim;
  static constexpr std::int64_t kWq = C.q_width();
  static constexpr std::int64_t kWkv = C.kv_width();
  static constexpr std::int64_t kI = C.intermediate;
  /// q | k | v columns of the saved projection buffer.
  static constexpr std::int64_t kWqkv = kWq + 2 * kWkv;
  /// Float activations in host memory: the backends that can decode with bf16 weights.
  static constexpr bool kHostFloat = std::is_same_v<T, float> && std::is_same_v<Mem, host_memory>;

  explicit LlamaBlock(B be = {}) : be_(be) {
    q_w.shape = {kWq, kD};
    k_w.shape = {kWkv, kD};
    v_w.shape = {kWkv, kD};
    o_w.shape = {kD, kWq};
    gate_w.shape = {kI, kD};
    up_w.shape = {kI, kD};
    down_w.shape = {kD, kI};
    norm_in.shape = {kD};
    norm_post.shape = {kD};
  }

  /// Every parameter with its HF name under `prefix` ("model.layers.3"), in LlamaDecoderLayer's
  /// state_dict order.
  template <class V>
  void visit_parameters(V&& v, const std::string& prefix) {
    const std::string a = join_name(prefix, "self_attn"), m = join_name(prefix, "mlp");
    v(join_name(a, "q_proj.weight"), q_w);
    v(join_name(a, "k_proj.weight"), k_w);
    v(join_name(a, "v_proj.weight"), v_w);
    v(join_name(a, "o_proj.weight"), o_w);
    v(join_name(m, "gate_proj.weight"), gate_w);
    v(join_name(m, "up_proj.weight"), up_w);
    v(join_name(m, "down_proj.weight"), down_w);
    v(join_name(prefix, "input_layernorm.weight"), norm_in);
    v(join_name(prefix, "post_attention_layernorm.weight"), norm_post);
  }

  static std::int64_t activation_elements(std::int64_t batch, std::int64_t tokens) {
    auto c = Carver<T, Mem>::counting();
    (void)carve_saved(c, batch, tokens);
    return c.used();
  }
  static std::int64_t workspace_elements(std::int64_t batch, std::int64_t tokens) {
    auto c = Carver<T, Mem>::counting();
    (void)carve_grad_scratch(c, batch, tokens);
    return c.used();
  }

  /// Training forward over whole sequences (causal, no cache): y = layer(x), x and y [batch·tokens, D].
  void forward_train(Arena& arena, CView<2> x, View<2> y, T* saved, std::int64_t saved_size, std::int64_t batch,
                     std::int64_t tokens, float eps, const LlamaRope<Mem>& rope) const {
    check_rows(x, batch, tokens, "forward_train x");
    check_rows(y, batch, tokens, "forward_train y");
    Carver<T, Mem> c(saved, saved_size);
    const Saved s = carve_saved(c, batch, tokens);
    rms_norm_train(be_, x, norm_in.value, eps, s.n1, s.rstd1);
    project(CView<2>(s.n1), kQ, s.qkv.slice(1, 0, kWq), false);
    project(CView<2>(s.n1), kK, s.qkv.slice(1, kWq, kWq + kWkv), false);
    project(CView<2>(s.n1), kV, s.qkv.slice(1, kWq + kWkv, kWqkv), false);
    const View<4> q = heads(s.qkv, 0, kHeads, batch, tokens), k = heads(s.qkv, kWq, kKvHeads, batch, tokens),
                  v = heads(s.qkv, kWq + kWkv, kKvHeads, batch, tokens);
    apply_rope_half(be_, q, rope.cos, rope.sin, rope.positions);
    apply_rope_half(be_, k, rope.cos, rope.sin, rope.positions);
    attention_train(be_, arena, CView<4>(q), CView<4>(k), CView<4>(v), heads(s.attn, 0, kHeads, batch, tokens), s.lse,
                    attention_scale(), AttentionMask::causal);
    project(CView<2>(s.attn), kO, s.h, false);
    add_inplace(be_, x, s.h);
    rms_norm_train(be_, CView<2>(s.h), norm_post.value, eps, s.n2, s.rstd2);
    mlp_up(CView<2>(s.n2), s.up, s.act, false);
    project(CView<2>(s.act), kDown, y, false);
    add_inplace(be_, CView<2>(s.h), y);
  }

  /// Backward of forward_train for dy: dx (=), parameter gradients (+=).
  void backward(Arena& arena, CView<2> x, CView<2> dy, View<2> dx, T* saved, std::int64_t saved_size, T* work,
                std::int64_t work_size, std::int64_t batch, std::int64_t tokens, const LlamaRope<Mem>& rope) {
    check_rows(x, batch, tokens, "backward x");
    check_rows(dy, batch, tokens, "backward dy");
    check_rows(dx, batch, tokens, "backward dx");
    Carver<T, Mem> c(saved, saved_size);
    const Saved s = carve_saved(c, batch, tokens);
    Carver<T, Mem> cw(work, work_size);
    const GradScratch g = carve_grad_scratch(cw, batch, tokens);

    // MLP branch: y = h + down(silu(gate) ⊙ up).
    linear_backward(be_, CView<2>(s.act), down_w.value, dy, g.d_act, down_w.grad, View<1>());
    const View<2> d_gate = g.d_up.slice(1, 0, kI), d_lin = g.d_up.slice(1, kI, 2 * kI);
    swiglu_backward(be_, CView<2>(s.up.slice(1, 0, kI)), CView<2>(s.up.slice(1, kI, 2 * kI)), CView<2>(g.d_act),
                    d_gate, d_lin);
    linear_backward(be_, CView<2>(s.n2), gate_w.value, CView<2>(d_gate), g.d_n, gate_w.grad, View<1>());
    linear_backward(be_, CView<2>(s.n2), up_w.value, CView<2>(d_lin), g.tmp, up_w.grad, View<1>());
    add_inplace(be_, CView<2>(g.tmp), g.d_n);
    rms_norm_backward(be_, CView<2>(s.h), norm_post.value, CView<1>(s.rstd2), CView<2>(g.d_n), g.dh, norm_post.grad);
    add_inplace(be_, dy, g.dh);

    // Attention branch: h = x + o_proj(attn).
    linear_backward(be_, CView<2>(s.attn), o_w.value, CView<2>(g.dh), g.d_attn, o_w.grad, View<1>());
    const View<4> q = heads(s.qkv, 0, kHeads, batch, tokens), k = heads(s.qkv, kWq, kKvHeads, batch, tokens),
                  v = heads(s.qkv, kWq + kWkv, kKvHeads, batch, tokens);
    const View<4> dq = heads(g.d_qkv, 0, kHeads, batch, tokens), dk = heads(g.d_qkv, kWq, kKvHeads, batch, tokens),
                  dv = heads(g.d_qkv, kWq + kWkv, kKvHeads, batch, tokens);
    attention_backward(be_, arena, CView<4>(q), CView<4>(k), CView<4>(v),
                       CView<4>(heads(s.attn, 0, kHeads, batch, tokens)), CView<3>(s.lse),
                       CView<4>(heads(g.d_attn, 0, kHeads, batch, tokens)), dq, dk, dv, attention_scale(),
                       AttentionMask::causal);
    apply_rope_half_backward(be_, dq, rope.cos, rope.sin, rope.positions);
    apply_rope_half_backward(be_, dk, rope.cos, rope.sin, rope.positions);
    // The three projections read the same normalised input: their input gradients add up.
    linear_backward(be_, CView<2>(s.n1), q_w.value, CView<2>(g.d_qkv.slice(1, 0, kWq)), g.d_n, q_w.grad, View<1>());
    linear_backward(be_, CView<2>(s.n1), k_w.value, CView<2>(g.d_qkv.slice(1, kWq, kWq + kWkv)), g.tmp, k_w.grad,
                    View<1>());
    add_inplace(be_, CView<2>(g.tmp), g.d_n);
    linear_backward(be_, CView<2>(s.n1), v_w.value, CView<2>(g.d_qkv.slice(1, kWq + kWkv, kWqkv)), g.tmp, v_w.grad,
                    View<1>());
    add_inplace(be_, CView<2>(g.tmp), g.d_n);
    rms_norm_backward(be_, x, norm_in.value, CView<1>(s.rstd1), CView<2>(g.d_n), dx, norm_in.grad);
    add_inplace(be_, CView<2>(g.dh), dx);
  }

  /// Arena bytes forward_cached needs for `batch` sequences of `tokens` new tokens.
  static std::size_t decode_workspace_bytes(std::int64_t batch, std::int64_t tokens) {
    const std::int64_t n = batch * tokens;
    const std::int64_t floats[] = {n * kD, n * kWq, n * kWkv, n * kWkv, n * kWq, n * 2 * kI, n * kI};
    std::size_t bytes = 0;
    for (std::int64_t f : floats) bytes += arena_bytes<T>(f);
    return bytes;
  }

  /// Inference forward of `tokens` new tokens per sequence at positions [start, start + tokens):
  /// x [batch·tokens, D] is updated in place; their keys and values (after RoPE) are written into
  /// rows [start, start + tokens) of the cache, and attention reads rows [0, start + tokens).
  /// rope.positions lists the T positions (start, start + 1, …).
  void forward_cached(Arena& arena, View<2> x, const KvLayer<T, Mem>& cache, std::int64_t start, std::int64_t batch,
                      std::int64_t tokens, float eps, const LlamaRope<Mem>& rope) const {
    check_rows(x, batch, tokens, "forward_cached x");
    QLIP_CHECK(cache.k.size(0) >= batch && cache.k.size(2) == kKvHeads && cache.k.size(3) == kHeadDim,
               "llama layer: KV cache of shape ", shape_string<4>(cache.k.shape()), " does not hold ", batch,
               " sequences of ", kKvHeads, " kv heads of ", kHeadDim);
    check_shape(cache.v, cache.k.shape(), "llama layer: KV cache values");
    QLIP_CHECK(start >= 0 && start + tokens <= cache.k.size(1), "llama layer: positions [", start, ", ",
               start + tokens, ") do not fit the KV cache of ", cache.k.size(1), " positions");
    ArenaScope scope(arena);
    const std::int64_t n = batch * tokens;
    const View<2> normed = arena.template tensor<T, 2>({n, kD});
    const View<2> q = arena.template tensor<T, 2>({n, kWq});
    const View<2> k_new = arena.template tensor<T, 2>({n, kWkv}), v_new = arena.template tensor<T, 2>({n, kWkv});
    const View<2> attn = arena.template tensor<T, 2>({n, kWq});
    const View<2> up = arena.template tensor<T, 2>({n, 2 * kI}), act = arena.template tensor<T, 2>({n, kI});
    rms_norm(be_, CView<2>(x), norm_in.value, eps, normed);
    project(CView<2>(normed), kQ, q, true);
    project(CView<2>(normed), kK, k_new, true);
    project(CView<2>(normed), kV, v_new, true);
    apply_rope_half(be_, heads(q, 0, kHeads, batch, tokens), rope.cos, rope.sin, rope.positions);
    const View<4> k4 = heads(k_new, 0, kKvHeads, batch, tokens), v4 = heads(v_new, 0, kKvHeads, batch, tokens);
    apply_rope_half(be_, k4, rope.cos, rope.sin, rope.positions);
    const std::int64_t end = start + tokens;
    const View<4> k_rows = cache.k.slice(0, 0, batch).slice(1, start, end);
    const View<4> v_rows = cache.v.slice(0, 0, batch).slice(1, start, end);
    copy(be_, CView<4>(k4), k_rows);
    copy(be_, CView<4>(v4), v_rows);
    const CView<4> keys = cache.k.slice(0, 0, batch).slice(1, 0, end);
    const CView<4> values = cache.v.slice(0, 0, batch).slice(1, 0, end);
    attention(be_, arena, CView<4>(heads(q, 0, kHeads, batch, tokens)), keys, values,
              heads(attn, 0, kHeads, batch, tokens), attention_scale(), AttentionMask::causal);
    // x += o_proj(attn), through the normed buffer (free again).
    project(CView<2>(attn), kO, normed, true);
    add_inplace(be_, CView<2>(normed), x);
    rms_norm(be_, CView<2>(x), norm_post.value, eps, normed);
    mlp_up(CView<2>(normed), up, act, true);
    project(CView<2>(act), kDown, normed, true);
    add_inplace(be_, CView<2>(normed), x);
  }

  /// Host float backends only: bf16 makes bf16 copies of the seven projection weights from the
  /// bound values now (forward_cached reads them from then on); f32 frees them. Training reads the
  /// fp32 values only, so call it again after the weights change.
  void set_decode_weights(DecodeWeights which)
    requires(kHostFloat)
  {
    for (int i = 0; i < kProjections; ++i) {
      if (which == DecodeWeights::f32) {
        bf16_[i] = {};
        continue;
      }
      const P<2>& w = weight(static_cast<Projection>(i));
      QLIP_CHECK(w.value.is_contiguous(), "llama layer: set_decode_weights needs bound, contiguous weights");
      bf16_[i] = Tensor<bf16, 2>(w.value.shape());
      round_to_bf16(w.value.data(), bf16_[i].data(), w.value.numel());
    }
  }
  DecodeWeights decode_weights() const { return bf16_[0].numel() > 0 ? DecodeWeights::bf16 : DecodeWeights::f32; }

  /// Dh^-½, the logit scale.
  static T attention_scale() { return static_cast<T>(1.0 / std::sqrt(static_cast<double>(kHeadDim))); }

  P<2> q_w, k_w, v_w, o_w, gate_w, up_w, down_w;
  P<1> norm_in, norm_post;

 private:
  /// The projections, in visit order: index into bf16_.
  enum Projection { kQ, kK, kV, kO, kGate, kUp, kDown, kProjections };

  struct Saved {
    View<2> n1;      // [N, D] RMSNorm_in(x)
    View<1> rstd1;   // [N]
    View<2> qkv;     // [N, Wq + 2 Wkv] q | k | v, q and k after RoPE
    View<2> attn;    // [N, Wq]
    View<3> lse;     // [B, Hq, T]
    View<2> h;       // [N, D]
    View<2> n2;      // [N, D] RMSNorm_post(h)
    View<1> rstd2;   // [N]
    View<2> up;      // [N, 2I] gate | up, before the activation
    View<2> act;     // [N, I] silu(gate) ⊙ up
  };
  struct GradScratch {
    View<2> d_act, d_up, d_n, tmp, dh, d_attn, d_qkv;
  };

  static Saved carve_saved(Carver<T, Mem>& c, std::int64_t batch, std::int64_t tokens) {
    const std::int64_t n = batch * tokens;
    Saved s;
    s.n1 = c.take(Extents<2>{n, kD});
    s.rstd1 = c.take(Extents<1>{n});
    s.qkv = c.take(Extents<2>{n, kWqkv});
    s.attn = c.take(Extents<2>{n, kWq});
    s.lse = c.take(Extents<3>{batch, kHeads, tokens});
    s.h = c.take(Extents<2>{n, kD});
    s.n2 = c.take(Extents<2>{n, kD});
    s.rstd2 = c.take(Extents<1>{n});
    s.up = c.take(Extents<2>{n, 2 * kI});
    s.act = c.take(Extents<2>{n, kI});
    return s;
  }
  static GradScratch carve_grad_scratch(Carver<T, Mem>& c, std::int64_t batch, std::int64_t tokens) {
    const std::int64_t n = batch * tokens;
    GradScratch g;
    g.d_act = c.take(Extents<2>{n, kI});
    g.d_up = c.take(Extents<2>{n, 2 * kI});
    g.d_n = c.take(Extents<2>{n, kD});
    g.tmp = c.take(Extents<2>{n, kD});
    g.dh = c.take(Extents<2>{n, kD});
    g.d_attn = c.take(Extents<2>{n, kWq});
    g.d_qkv = c.take(Extents<2>{n, kWqkv});
    return g;
  }

  /// Columns [col, col + heads·Dh) of a [N, W] buffer as [B, T, heads, Dh] (a strided view).
  static View<4> heads(const View<2>& a, std::int64_t col, std::int64_t n_heads, std::int64_t batch,
                       std::int64_t tokens) {
    const std::int64_t rs = a.stride(0);
    return View<4>(a.base(), {batch, tokens, n_heads, kHeadDim}, {tokens * rs, rs, kHeadDim, 1}, a.offset() + col);
  }
  static void check_rows(const CView<2>& v, std::int64_t batch, std::int64_t tokens, const char* what) {
    check_shape(v, {batch * tokens, kD}, what);
  }

  const P<2>& weight(Projection p) const {
    const P<2>* const ws[kProjections] = {&q_w, &k_w, &v_w, &o_w, &gate_w, &up_w, &down_w};
    return *ws[p];
  }
  /// y = x·Wᵀ for projection p: its bf16 copy when decoding with one, else the fp32 weight.
  void project(CView<2> x, Projection p, View<2> y, bool decoding) const {
    if constexpr (kHostFloat) {
      if (decoding && bf16_[p].numel() > 0) {
        linear(be_, x, bf16_[p].view(), CView<1>(), y);
        return;
      }
    }
    linear(be_, x, CView<2>(weight(p).value), CView<1>(), y);
  }
  /// up = gate_proj(n) | up_proj(n) and act = silu(gate) ⊙ up.
  void mlp_up(CView<2> normed, View<2> up, View<2> act, bool decoding) const {
    const View<2> gate = up.slice(1, 0, kI), lin = up.slice(1, kI, 2 * kI);
    project(normed, kGate, gate, decoding);
    project(normed, kUp, lin, decoding);
    swiglu(be_, CView<2>(gate), CView<2>(lin), act);
  }

  B be_;
  std::array<Tensor<bf16, 2>, kProjections> bf16_;  // empty: decode with the fp32 weights
};

}  // namespace qlip::nn
