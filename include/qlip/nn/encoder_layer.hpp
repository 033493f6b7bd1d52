/// @file encoder_layer.hpp
/// @brief The pre-LN transformer block shared by the text tower, the vision encoder and the pixel
///        decoder (QLIPEncoderLayer, spec 2.3), and a stack of them.
///
///   x = x + out_proj(inner_attn_ln?(Attn(LN1(x))))
///   x = x + MLP(LN2(x))            MLP = fc2(ffn_ln?(act(fc1·)))  or  w3(ffn_ln?(silu(w1·) ⊙ w2·))
///
/// Accumulation contract: forward updates the residual stream x in place (`+=`, the only
/// read-modify-write), every temporary is written with `=`. A backward would add parameter
/// gradients with `+=`.
///
/// Attention details that matter numerically (spec 2.3): q = (W_q·x + b_q)·Dh^-½ is scaled BEFORE
/// RoPE (as the official code does), logits = q·kᵀ with no further scale, softmax in fp32. q/k/v
/// weights are concatenated at load time into one [3D, D] matrix so the projection is one GEMM; an
/// absent bias (EVA-02: no k bias) becomes zero rows of the fused bias, and adding 0.0f is exact.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/cpu/activation.hpp"
#include "qlip/cpu/attention.hpp"
#include "qlip/cpu/gemm.hpp"
#include "qlip/cpu/layer_norm.hpp"
#include "qlip/cpu/rope.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/model/config.hpp"
#include "qlip/nn/parameters.hpp"

namespace qlip::nn {

/// RoPE to apply inside attention: table rows 0..P−1 go to tokens first_token..first_token+P−1.
struct RopeSpec {
  HostView<const float, 2> cos;  // [P, Dh]
  HostView<const float, 2> sin;  // [P, Dh]
  std::int64_t first_token = 0;  // 1 in the vision encoder (CLS untouched), 0 in the decoder
};

/// Run-time arguments of one layer forward (the same for every layer of a stack).
struct LayerArgs {
  float layer_norm_eps = 1e-5f;
  Activation act = Activation::gelu;   // plain MLP only
  const RopeSpec* rope = nullptr;      // nullptr: no RoPE
  AttentionMask mask = AttentionMask::none;
};

/// Threads an op may use: never fewer than qlip::num_threads() (attention sizes per-thread scratch).
inline int workspace_threads() { return std::max(num_threads(), omp_get_num_procs()); }

/// One QLIPEncoderLayer.
/// @tparam S the stack's structural config (widths, MLP kind, sub-LN, q/k/v biases)
/// @tparam B backend tag (cpu_backend)
template <StackConfig S, backend B>
  requires valid_stack<S>
class EncoderLayer {
 public:
  static constexpr std::int64_t kD = S.hidden;
  static constexpr std::int64_t kHeads = S.heads;
  static constexpr std::int64_t kHeadDim = S.head_dim();
  static constexpr std::int64_t kI = S.intermediate;

  /// Loads `<prefix>.self_attn.*`, `<prefix>.layer_norm{1,2}.*`, `<prefix>.mlp.*`
  /// (prefix e.g. "vision_model.encoder.layers.3"). Layer norms take eps from `eps`.
  void load(WeightSource& src, const std::string& prefix, float eps) {
    const std::string a = prefix + ".self_attn.";
    qkv_weight_ = Tensor<float, 2>({3 * kD, kD});
    qkv_bias_ = Tensor<float, 1>({3 * kD});  // zero-initialised: absent biases stay 0
    const char* names[3] = {"q_proj", "k_proj", "v_proj"};
    const bool has_bias[3] = {S.q_bias, S.k_bias, S.v_bias};
    for (int i = 0; i < 3; ++i) {
      const Extents<2> w_shape{kD, kD};
      const Extents<1> b_shape{kD};
      src.read(a + names[i] + ".weight", std::span<const std::int64_t>(w_shape.data(), 2),
               qkv_weight_.data() + i * kD * kD);
      if (has_bias[i])
        src.read(a + names[i] + ".bias", std::span<const std::int64_t>(b_shape.data(), 1), qkv_bias_.data() + i * kD);
    }
    if constexpr (S.subln) inner_attn_ln_.load(src, a + "inner_attn_ln", kD, eps);
    out_proj_.load(src, a + "out_proj", kD, kD, Bias::present);
    ln1_.load(src, prefix + ".layer_norm1", kD, eps);
    ln2_.load(src, prefix + ".layer_norm2", kD, eps);
    const std::string m = prefix + ".mlp.";
    if constexpr (S.mlp == MlpKind::swiglu) {
      fc1_.load(src, m + "w1", kI, kD, Bias::present);
      fc_gate_lin_.load(src, m + "w2", kI, kD, Bias::present);
      fc2_.load(src, m + "w3", kD, kI, Bias::present);
    } else {
      fc1_.load(src, m + "fc1", kI, kD, Bias::present);
      fc2_.load(src, m + "fc2", kD, kI, Bias::present);
    }
    if constexpr (S.subln) ffn_ln_.load(src, m + "ffn_ln", kI, eps);
  }

  /// Learnable parameters in this layer (absent biases not counted).
  std::int64_t parameter_count() const {
    std::int64_t n = qkv_weight_.numel() + kD * ((S.q_bias ? 1 : 0) + (S.k_bias ? 1 : 0) + (S.v_bias ? 1 : 0));
    n += out_proj_.parameter_count() + ln1_.parameter_count() + ln2_.parameter_count();
    n += fc1_.parameter_count() + fc_gate_lin_.parameter_count() + fc2_.parameter_count();
    if constexpr (S.subln) n += inner_attn_ln_.parameter_count() + ffn_ln_.parameter_count();
    return n;
  }

  /// Arena bytes forward() needs for `batch` sequences of `tokens` tokens.
  static std::size_t workspace_bytes(std::int64_t batch, std::int64_t tokens) {
    const std::int64_t m = batch * tokens;
    const std::size_t attn = arena_bytes<float>(m * kD)         // h: LN output, then out_proj output
                             + arena_bytes<float>(m * 3 * kD)   // fused q|k|v
                             + arena_bytes<float>(m * kD)       // attention output
                             + ops::attention_workspace_bytes(batch, tokens, tokens, kHeads, workspace_threads()) +
                             kHostAlignment;
    const std::size_t mlp = arena_bytes<float>(m * kD) + arena_bytes<float>(m * kI) * (S.mlp == MlpKind::swiglu ? 2 : 1);
    return std::max(attn, mlp);
  }

  /// x[B, T, D] ← layer(x), in place.
  InferenceContext forward(Arena& ws, HostView<float, 3> x, const LayerArgs& args) const {
    QLIP_CHECK(x.size(2) == kD && x.is_contiguous(), "encoder layer: x must be contiguous [B, T, ", kD, "], got ",
               shape_string<3>(x.shape()));
    const std::int64_t batch = x.size(0), tokens = x.size(1), m = batch * tokens;
    HostView<float, 2> x2 = x.template reshape<2>({m, kD});
    {
      ArenaScope scope(ws);
      HostView<float, 2> h = ws.tensor<float, 2>({m, kD});            // [M, D]
      HostView<float, 2> qkv = ws.tensor<float, 2>({m, 3 * kD});      // [M, 3D]
      HostView<float, 2> attn = ws.tensor<float, 2>({m, kD});         // [M, D]
      ln1_.forward(B{}, x2, h);
      ops::linear(B{}, h, qkv_weight_.view(), qkv_bias_.view(), qkv);
      // Python: head_dim ** -0.5 (a double), applied to a float32 tensor as a float32 scalar.
      scale_q(qkv, static_cast<float>(std::pow(static_cast<double>(kHeadDim), -0.5)));
      const Extents<4> heads{batch, tokens, kHeads, kHeadDim};
      const Extents<4> strides{tokens * 3 * kD, 3 * kD, kHeadDim, 1};
      HostView<float, 4> q(qkv.data(), heads, strides, 0);             // [B, T, H, Dh] in qkv
      HostView<float, 4> k(qkv.data(), heads, strides, kD);
      HostView<float, 4> v(qkv.data(), heads, strides, 2 * kD);
      if (args.rope != nullptr) {
        ops::apply_rope_interleaved(B{}, q, args.rope->cos, args.rope->sin, args.rope->first_token);
        ops::apply_rope_interleaved(B{}, k, args.rope->cos, args.rope->sin, args.rope->first_token);
      }
      HostView<float, 4> attn4 = attn.template reshape<4>(heads);      // [B, T, H, Dh]
      ops::attention(B{}, ws, q, k, v, attn4, 1.0f, args.mask);
      if constexpr (S.subln) inner_attn_ln_.forward(B{}, attn, attn);
      out_proj_.forward(B{}, attn, h);
      add_inplace(x2, h);
    }
    {
      ArenaScope scope(ws);
      HostView<float, 2> h = ws.tensor<float, 2>({m, kD});            // [M, D]
      HostView<float, 2> f = ws.tensor<float, 2>({m, kI});            // [M, I]
      ln2_.forward(B{}, x2, h);
      fc1_.forward(B{}, h, f);
      if constexpr (S.mlp == MlpKind::swiglu) {
        HostView<float, 2> lin = ws.tensor<float, 2>({m, kI});        // [M, I]
        fc_gate_lin_.forward(B{}, h, lin);
        ops::swiglu(B{}, f, lin, f);
      } else if (args.act == Activation::quick_gelu) {
        ops::quick_gelu(B{}, f, f);
      } else {
        ops::gelu(B{}, f, f);
      }
      if constexpr (S.subln) ffn_ln_.forward(B{}, f, f);
      fc2_.forward(B{}, f, h);
      add_inplace(x2, h);
    }
    return {};
  }

 private:
  /// q columns of the fused projection ·= Dh^-½ (after the bias, as `q_proj(x) * scale`).
  static void scale_q(HostView<float, 2> qkv, float scale) {
    const std::int64_t m = qkv.size(0);
#pragma omp parallel for schedule(static) if (m * kD > 65536)
    for (std::int64_t i = 0; i < m; ++i) {
      float* row = qkv.data() + i * 3 * kD;
      for (std::int64_t j = 0; j < kD; ++j) row[j] *= scale;
    }
  }

  Tensor<float, 2> qkv_weight_;  // [3D, D] rows: q | k | v
  Tensor<float, 1> qkv_bias_;    // [3D]
  LayerNorm inner_attn_ln_;      // sub-LN only
  Linear out_proj_;
  LayerNorm ln1_, ln2_;
  Linear fc1_;          // fc1, or w1 (gated branch)
  Linear fc_gate_lin_;  // w2 (linear branch), SwiGLU only
  Linear fc2_;          // fc2 or w3
  LayerNorm ffn_ln_;    // sub-LN only
};

/// `layers` EncoderLayers applied in order; optionally copies the hidden states out.
/// @tparam S stack config
/// @tparam B backend tag
template <StackConfig S, backend B>
  requires valid_stack<S>
class EncoderStack {
 public:
  using Layer = EncoderLayer<S, B>;

  /// Loads `<prefix>.layers.{i}` for i < S.layers (prefix e.g. "vision_model.encoder").
  void load(WeightSource& src, const std::string& prefix, float eps) {
    layers_.clear();
    layers_.resize(static_cast<std::size_t>(S.layers));
    for (int i = 0; i < S.layers; ++i) layers_[static_cast<std::size_t>(i)].load(src, prefix + ".layers." + std::to_string(i), eps);
  }

  std::int64_t parameter_count() const {
    std::int64_t n = 0;
    for (const auto& l : layers_) n += l.parameter_count();
    return n;
  }

  static std::size_t workspace_bytes(std::int64_t batch, std::int64_t tokens) {
    return Layer::workspace_bytes(batch, tokens);
  }

  /// Runs every layer on x[B, T, D] in place. `keep[k]` (k = 1..layers), when non-empty, receives
  /// a copy of the output of layer k (HF hidden_states[k]); index 0 is the caller's.
  InferenceContext forward(Arena& ws, HostView<float, 3> x, const LayerArgs& args,
                           std::span<const HostView<float, 3>> keep = {}) const {
    QLIP_CHECK(static_cast<int>(layers_.size()) == S.layers, "encoder stack used before load()");
    for (int i = 0; i < S.layers; ++i) {
      layers_[static_cast<std::size_t>(i)].forward(ws, x, args);
      const auto k = static_cast<std::size_t>(i + 1);
      if (k < keep.size() && !keep[k].empty()) copy(x, keep[k]);
    }
    return {};
  }

  /// dst ← src (same shape; dst contiguous).
  static void copy(HostView<const float, 3> src, HostView<float, 3> dst) {
    QLIP_CHECK(dst.shape() == src.shape(), "hidden state output has shape ", shape_string<3>(dst.shape()), ", expected ",
               shape_string<3>(src.shape()));
    QLIP_CHECK(src.is_contiguous() && dst.is_contiguous(), "hidden state copy needs contiguous views");
    std::copy_n(src.data(), src.numel(), dst.data());
  }

 private:
  std::vector<Layer> layers_;
};

}  // namespace qlip::nn
