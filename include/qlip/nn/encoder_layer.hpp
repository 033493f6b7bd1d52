/// @file encoder_layer.hpp
/// @brief The inference encoder layer shared by the text tower, the vision encoder and the pixel
///        decoder (QLIPEncoderLayer, MODEL.md §2.3), and a stack of them. The layer holds its
///        weights in the frozen inference layout and runs them through one op,
///        encoder_layer_forward (reference/encoder_layer.hpp; fused on the CPU backend in
///        cpu/encoder_layer.hpp), called unqualified so the backend's overload is found by
///        argument-dependent lookup.
///
///   x = x + out_proj(inner_attn_ln?(Attn(LN1(x))))
///   x = x + MLP(LN2(x))            MLP = fc2(ffn_ln?(act(fc1·)))  or  w3(ffn_ln?(silu(w1·) ⊙ w2·))
///
/// Accumulation contract: forward updates the residual stream x in place (`+=`, the only
/// read-modify-write), every temporary is written with `=`. Inference only (the trainable block is
/// nn/transformer_block.hpp).
///
/// Weights are host float32 tensors read from a WeightSource; the backend must compute in float32
/// on host memory. Attention details that matter numerically (MODEL.md §2.3): q = (W_q·x + b_q)·Dh^-½
/// is scaled BEFORE RoPE (as the official code does), logits = q·kᵀ with no further scale, softmax
/// in fp32.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/nn/block_config.hpp"
#include "qlip/nn/parameters.hpp"
#include "qlip/reference/ops.hpp"

namespace qlip::nn {

/// A backend the inference modules can run on: their weights are host float32 tensors.
template <class B>
concept host_float_backend =
    backend<B> && std::is_same_v<typename B::scalar, float> && std::is_same_v<typename B::memory, host_memory>;

/// Run-time arguments of the inference layers: the trainable block's (from config.json).
using LayerArgs = BlockArgs<float, host_memory>;

/// One QLIPEncoderLayer.
/// @tparam S the stack's structural config (widths, MLP kind, sub-LN, q/k/v biases)
/// @tparam B backend (cpu_backend, reference_backend<float>, ...)
template <StackConfig S, host_float_backend B>
  requires valid_stack<S>
class EncoderLayer {
 public:
  static constexpr std::int64_t kD = S.hidden;
  static constexpr std::int64_t kHeadDim = S.head_dim();
  static constexpr std::int64_t kI = S.intermediate;
  static constexpr EncoderLayerDims kDims{S.hidden, S.heads, S.intermediate, S.mlp};

  explicit EncoderLayer(B be = {}) : be_(be) {}

  /// Loads `<prefix>.self_attn.*`, `<prefix>.layer_norm{1,2}.*`, `<prefix>.mlp.*`
  /// (prefix e.g. "vision_model.encoder.layers.3"). Layer norms take eps from `eps`.
  ///
  /// Load-time rearrangements (placements of rows and one exact scaling, never a transpose):
  /// q|k|v rows → one [3D, D] matrix; SwiGLU w1|w2 rows → one [2I, D] matrix (one GEMM, its
  /// output row is gate | linear); and when Dh^-½ is a power of two (Dh = 4^k: 16, 64, 256) the q
  /// rows and q bias are multiplied by it here, which is bit-identical to scaling q after the GEMM
  /// (multiplying by 2^e commutes with every rounding of the dot product, barring under/overflow).
  /// This runs once, on the host tensors the source fills; the forward has no element loops.
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
    if (scale_is_power_of_two()) {
      for (std::int64_t i = 0; i < kD * kD; ++i) qkv_weight_.data()[i] *= query_scale();
      for (std::int64_t i = 0; i < kD; ++i) qkv_bias_.data()[i] *= query_scale();
    }
    if constexpr (S.subln) inner_attn_ln_.load(src, a + "inner_attn_ln", kD, eps);
    out_proj_.load(src, a + "out_proj", kD, kD, Bias::present);
    ln1_.load(src, prefix + ".layer_norm1", kD, eps);
    ln2_.load(src, prefix + ".layer_norm2", kD, eps);
    const std::string m = prefix + ".mlp.";
    if constexpr (S.mlp == MlpKind::swiglu) {
      fc1_.weight = Tensor<float, 2>({2 * kI, kD});
      fc1_.bias = Tensor<float, 1>({2 * kI});
      const Extents<2> w_shape{kI, kD};
      const Extents<1> b_shape{kI};
      const char* up[2] = {"w1", "w2"};  // gate (silu) branch, then the linear branch
      for (int i = 0; i < 2; ++i) {
        src.read(m + up[i] + ".weight", std::span<const std::int64_t>(w_shape.data(), 2), fc1_.weight.data() + i * kI * kD);
        src.read(m + up[i] + ".bias", std::span<const std::int64_t>(b_shape.data(), 1), fc1_.bias.data() + i * kI);
      }
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
    n += fc1_.parameter_count() + fc2_.parameter_count();
    if constexpr (S.subln) n += inner_attn_ln_.parameter_count() + ffn_ln_.parameter_count();
    return n;
  }

  /// Arena bytes forward() needs for `batch` sequences of `tokens` tokens.
  static std::size_t workspace_bytes(std::int64_t batch, std::int64_t tokens) {
    return encoder_layer_workspace_bytes(B{}, batch, tokens, kDims);
  }

  /// x[B, T, D] ← layer(x), in place.
  InferenceContext forward(Arena& ws, HostView<float, 3> x, const LayerArgs& args) const {
    encoder_layer_forward(be_, ws, weights(), x, op_args(args));
    return {};
  }

 private:
  /// Python: head_dim ** -0.5 (a double), applied to a float32 tensor as a float32 scalar.
  static float query_scale() { return static_cast<float>(std::pow(static_cast<double>(kHeadDim), -0.5)); }
  /// Whether query_scale() is an exact power of two (then it is folded into the q weights).
  static bool scale_is_power_of_two() {
    int e = 0;
    return std::frexp(query_scale(), &e) == 0.5f;
  }

  /// Views of the loaded tensors in the op's layout (sub-LN views empty when the layer has none).
  EncoderLayerWeights<float> weights() const {
    EncoderLayerWeights<float> w;
    w.ln1_g = ln1_.weight.view();
    w.ln1_b = ln1_.bias.view();
    w.qkv_w = qkv_weight_.view();
    w.qkv_b = qkv_bias_.view();
    if constexpr (S.subln) {
      w.attn_ln_g = inner_attn_ln_.weight.view();
      w.attn_ln_b = inner_attn_ln_.bias.view();
      w.ffn_ln_g = ffn_ln_.weight.view();
      w.ffn_ln_b = ffn_ln_.bias.view();
    }
    w.out_w = out_proj_.weight.view();
    w.out_b = out_proj_.bias_view();
    w.ln2_g = ln2_.weight.view();
    w.ln2_b = ln2_.bias.view();
    w.up_w = fc1_.weight.view();
    w.up_b = fc1_.bias_view();
    w.down_w = fc2_.weight.view();
    w.down_b = fc2_.bias_view();
    return w;
  }

  /// The op's arguments: the stack's run-time values, this layer's widths, and the q scale still
  /// to apply (none when load() folded it into the weights).
  static EncoderLayerArgs<host_memory> op_args(const LayerArgs& a) {
    return {kDims, a.eps, a.act, a.mask, scale_is_power_of_two() ? 1.0f : query_scale(), a.rope};
  }

  B be_;
  Tensor<float, 2> qkv_weight_;  // [3D, D] rows: q (pre-scaled when exact) | k | v
  Tensor<float, 1> qkv_bias_;    // [3D]
  LayerNorm inner_attn_ln_;      // sub-LN only
  Linear out_proj_;
  LayerNorm ln1_, ln2_;
  Linear fc1_;          // fc1 [I, D], or SwiGLU w1|w2 [2I, D] (gate rows, then linear rows)
  Linear fc2_;          // fc2 or w3
  LayerNorm ffn_ln_;    // sub-LN only
};

/// `layers` EncoderLayers applied in order; optionally copies the hidden states out.
/// @tparam S stack config
/// @tparam B backend
template <StackConfig S, host_float_backend B>
  requires valid_stack<S>
class EncoderStack {
 public:
  using Layer = EncoderLayer<S, B>;

  explicit EncoderStack(B be = {}) : be_(be) {}

  /// Loads `<prefix>.layers.{i}` for i < S.layers (prefix e.g. "vision_model.encoder").
  void load(WeightSource& src, const std::string& prefix, float eps) {
    layers_.clear();
    layers_.reserve(static_cast<std::size_t>(S.layers));
    for (int i = 0; i < S.layers; ++i) {
      layers_.emplace_back(be_);
      layers_.back().load(src, prefix + ".layers." + std::to_string(i), eps);
    }
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
      if (k < keep.size() && !keep[k].empty()) keep_hidden_state(x, keep[k]);
    }
    return {};
  }

  /// dst ← src, a kept hidden state (same shape).
  void keep_hidden_state(HostView<const float, 3> src, HostView<float, 3> dst) const {
    QLIP_CHECK(dst.shape() == src.shape(), "hidden state output has shape ", shape_string<3>(dst.shape()),
               ", expected ", shape_string<3>(src.shape()));
    copy(be_, src, dst);
  }

 private:
  B be_;
  std::vector<Layer> layers_;
};

}  // namespace qlip::nn
