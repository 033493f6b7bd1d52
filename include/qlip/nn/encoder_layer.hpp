/// @file encoder_layer.hpp
/// @brief The pre-LN transformer block shared by the text tower, the vision encoder and the pixel
///        decoder (QLIPEncoderLayer, MODEL.md §2.3), and a stack of them.
///
///   x = x + out_proj(inner_attn_ln?(Attn(LN1(x))))
///   x = x + MLP(LN2(x))            MLP = fc2(ffn_ln?(act(fc1·)))  or  w3(ffn_ln?(silu(w1·) ⊙ w2·))
///
/// Accumulation contract: forward updates the residual stream x in place (`+=`, the only
/// read-modify-write), every temporary is written with `=`. A backward would add parameter
/// gradients with `+=`.
///
/// Attention details that matter numerically (MODEL.md §2.3): q = (W_q·x + b_q)·Dh^-½ is scaled BEFORE
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
#include "qlip/core/math.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/cpu/activation.hpp"
#include "qlip/cpu/attention.hpp"
#include "qlip/cpu/gemm.hpp"
#include "qlip/cpu/layer_norm.hpp"
#include "qlip/cpu/profile.hpp"
#include "qlip/cpu/rope.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/nn/block_config.hpp"
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
  ///
  /// Load-time rearrangements (placements of rows and one exact scaling, never a transpose):
  /// q|k|v rows → one [3D, D] matrix; SwiGLU w1|w2 rows → one [2I, D] matrix (one GEMM, its
  /// output row is gate | linear); and when Dh^-½ is a power of two (Dh = 4^k: 16, 64, 256) the q
  /// rows and q bias are multiplied by it here, which is bit-identical to scaling q after the GEMM
  /// (multiplying by 2^e commutes with every rounding of the dot product, barring under/overflow).
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
    const std::int64_t m = batch * tokens;
    return arena_bytes<float>(m * kD)                 // h: LN outputs
           + arena_bytes<float>(m * kD)               // attention output
           + arena_bytes<float>(m * kBigWidth)        // fused q|k|v, then the MLP's hidden layer
           + ops::attention_workspace_bytes(batch, tokens, tokens, kHeads, workspace_threads()) + kHostAlignment;
  }

  /// x[B, T, D] ← layer(x), in place.
  ///
  /// Three OpenMP regions per layer. (1) Rows of x split between threads: LN1 → q|k|v GEMM → RoPE.
  /// (2) attention, parallel over (batch, head, query block). (3) Rows again: inner_attn_ln →
  /// out_proj GEMM accumulated into x (residual) → LN2 → up GEMM → activation (SwiGLU: silu·mul
  /// and ffn_ln fused, one pass per row) → down GEMM accumulated into x. Every op of (1) and (3)
  /// is row-local, so a thread never waits for another inside a region; each GEMM is a serial
  /// Eigen call on the thread's row slab.
  InferenceContext forward(Arena& ws, HostView<float, 3> x, const LayerArgs& args) const {
    QLIP_CHECK(x.size(2) == kD && x.is_contiguous(), "encoder layer: x must be contiguous [B, T, ", kD, "], got ",
               shape_string<3>(x.shape()));
    const std::int64_t batch = x.size(0), tokens = x.size(1), m = batch * tokens;
    if (m == 0) return {};
    if (args.rope != nullptr) {
      const std::int64_t p_n = args.rope->cos.size(0);
      check_shape(args.rope->cos, {p_n, kHeadDim}, "encoder layer RoPE cos");
      check_shape(args.rope->sin, {p_n, kHeadDim}, "encoder layer RoPE sin");
      QLIP_CHECK(args.rope->first_token >= 0 && args.rope->first_token + p_n <= tokens, "encoder layer RoPE: tokens [",
                 args.rope->first_token, ", ", args.rope->first_token + p_n, ") do not fit in a sequence of ", tokens);
    }
    HostView<float, 2> x2 = x.template reshape<2>({m, kD});
    ArenaScope scope(ws);
    HostView<float, 2> h = ws.tensor<float, 2>({m, kD});              // [M, D] LN outputs
    HostView<float, 2> attn = ws.tensor<float, 2>({m, kD});           // [M, D] attention output
    float* big = ws.allocate<float>(m * kBigWidth);
    HostView<float, 2> qkv(big, {m, 3 * kD});                         // [M, 3D] (region 1, 2)
    HostView<float, 2> f(big, {m, kUpWidth});                         // [M, I or 2I] (region 3)
    const int threads = region_threads(m);
    const bool fold_scale = scale_is_power_of_two();
    const float scale = query_scale();

    {
      QLIP_PROFILE_SCOPE("layer: ln1+qkv+rope");
#pragma omp parallel num_threads(threads)
      {
        const auto [r0, r1] = detail::cpu::split_range(m, omp_get_thread_num(), omp_get_num_threads());
        if (r1 > r0) {
          {
            QLIP_PROFILE_SCOPE("  t0: layer_norm");
            layer_norm_rows(ln1_, x2, h, r0, r1);
          }
          {
            QLIP_PROFILE_SCOPE("  t0: gemm qkv");
            ops::linear_rows(B{}, h.slice(0, r0, r1), qkv_weight_.view(), qkv_bias_.view(), qkv.slice(0, r0, r1), false);
          }
          QLIP_PROFILE_SCOPE("  t0: rope (+scale q)");
          if (!fold_scale) scale_q_rows(qkv, r0, r1, scale);
          if (args.rope != nullptr) rope_rows(qkv, *args.rope, tokens, r0, r1);
        }
      }
    }
    {
      QLIP_PROFILE_SCOPE("attention");
      const Extents<4> heads{batch, tokens, kHeads, kHeadDim};
      const Extents<4> strides{tokens * 3 * kD, 3 * kD, kHeadDim, 1};
      HostView<const float, 4> q(qkv.data(), heads, strides, 0);       // [B, T, H, Dh] in qkv
      HostView<const float, 4> k(qkv.data(), heads, strides, kD);
      HostView<const float, 4> v(qkv.data(), heads, strides, 2 * kD);
      ops::attention(B{}, ws, q, k, v, attn.template reshape<4>(heads), 1.0f, args.mask);
    }
    {
      QLIP_PROFILE_SCOPE("layer: out_proj+mlp");
#pragma omp parallel num_threads(threads)
      {
        const auto [r0, r1] = detail::cpu::split_range(m, omp_get_thread_num(), omp_get_num_threads());
        if (r1 > r0) {
          if constexpr (S.subln) {
            QLIP_PROFILE_SCOPE("  t0: layer_norm");
            layer_norm_rows(inner_attn_ln_, attn, attn, r0, r1);
          }
          {
            QLIP_PROFILE_SCOPE("  t0: gemm out_proj+res");
            ops::linear_rows(B{}, attn.slice(0, r0, r1), out_proj_.weight.view(), out_proj_.bias_view(),
                             x2.slice(0, r0, r1), true);
          }
          {
            QLIP_PROFILE_SCOPE("  t0: layer_norm");
            layer_norm_rows(ln2_, x2, h, r0, r1);
          }
          {
            QLIP_PROFILE_SCOPE("  t0: gemm mlp up");
            ops::linear_rows(B{}, h.slice(0, r0, r1), fc1_.weight.view(), fc1_.bias_view(), f.slice(0, r0, r1), false);
          }
          {
            QLIP_PROFILE_SCOPE("  t0: activation(+ffn_ln)");
            activation_rows(f, args.act, r0, r1);
          }
          // SwiGLU leaves its [I] result in the first half of each [2I] row: a strided view.
          HostView<const float, 2> act(f.data(), {m, kI}, {kUpWidth, 1}, 0);
          QLIP_PROFILE_SCOPE("  t0: gemm mlp down+res");
          ops::linear_rows(B{}, act.slice(0, r0, r1), fc2_.weight.view(), fc2_.bias_view(), x2.slice(0, r0, r1), true);
        }
      }
    }
    return {};
  }

 private:
  static constexpr std::int64_t kUpWidth = S.mlp == MlpKind::swiglu ? 2 * kI : kI;  // up GEMM output width
  static constexpr std::int64_t kBigWidth = std::max<std::int64_t>(3 * kD, kUpWidth);
  /// Python: head_dim ** -0.5 (a double), applied to a float32 tensor as a float32 scalar.
  static float query_scale() { return static_cast<float>(std::pow(static_cast<double>(kHeadDim), -0.5)); }
  /// Whether query_scale() is an exact power of two (then it is folded into the q weights).
  static bool scale_is_power_of_two() {
    int e = 0;
    return std::frexp(query_scale(), &e) == 0.5f;
  }

  /// Threads for the row regions: none beyond one per 32 rows, one when already in a region.
  static int region_threads(std::int64_t m) {
    if (omp_in_parallel()) return 1;
    return static_cast<int>(std::clamp<std::int64_t>(m / 32, 1, std::max(num_threads(), 1)));
  }

  /// y[r] = LN(x[r]) for rows [r0, r1); x, y contiguous [M, width] (y may be x).
  static void layer_norm_rows(const LayerNorm& ln, HostView<const float, 2> x, HostView<float, 2> y, std::int64_t r0,
                              std::int64_t r1) {
    const std::int64_t d = x.size(1);
    for (std::int64_t r = r0; r < r1; ++r)
      detail::cpu::layer_norm_row<true>(x.data() + r * x.stride(0), 1, ln.weight.data(), 1, ln.bias.data(), 1, ln.eps,
                                        y.data() + r * y.stride(0), 1, d);
  }

  /// q columns of the fused projection ·= Dh^-½ (after the bias, as `q_proj(x) * scale`), rows [r0, r1).
  static void scale_q_rows(HostView<float, 2> qkv, std::int64_t r0, std::int64_t r1, float scale) {
    for (std::int64_t r = r0; r < r1; ++r) {
      float* row = qkv.data() + r * qkv.stride(0);
      for (std::int64_t j = 0; j < kD; ++j) row[j] *= scale;
    }
  }

  /// Interleaved 2-D RoPE on the q and k heads of qkv rows [r0, r1) (row r is token r % T), the
  /// formula of ops::apply_rope_interleaved.
  static void rope_rows(HostView<float, 2> qkv, const RopeSpec& rope, std::int64_t tokens, std::int64_t r0,
                        std::int64_t r1) {
    const std::int64_t p_n = rope.cos.size(0), cs = rope.cos.stride(1), ss = rope.sin.stride(1);
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::int64_t p = r % tokens - rope.first_token;
      if (p < 0 || p >= p_n) continue;
      const float* cr = rope.cos.data() + p * rope.cos.stride(0);
      const float* sr = rope.sin.data() + p * rope.sin.stride(0);
      float* row = qkv.data() + r * qkv.stride(0);
      for (std::int64_t hd = 0; hd < 2 * kHeads; ++hd) {  // q heads, then k heads
        float* xr = row + hd * kHeadDim;
        for (std::int64_t d = 0; d < kHeadDim; d += 2) {
          const float x0 = xr[d], x1 = xr[d + 1];
          xr[d] = x0 * cr[d * cs] - x1 * sr[d * ss];
          xr[d + 1] = x1 * cr[(d + 1) * cs] + x0 * sr[(d + 1) * ss];
        }
      }
    }
  }

  /// The MLP activation on rows [r0, r1) of the up projection f [M, kUpWidth], in place.
  /// SwiGLU: f[r, j] ← silu(f[r, j])·f[r, I + j] for j < I (vectorised silu_fast, a few ulp from
  /// math::silu), then ffn_ln over those I values.
  /// Plain: act(f) then ffn_ln (sub-LN only).
  void activation_rows(HostView<float, 2> f, Activation act, std::int64_t r0, std::int64_t r1) const {
    for (std::int64_t r = r0; r < r1; ++r) {
      float* row = f.data() + r * f.stride(0);
      if constexpr (S.mlp == MlpKind::swiglu) {
        const float* lin = row + kI;
        for (std::int64_t j = 0; j < kI; ++j) row[j] = detail::cpu::silu_fast(row[j]) * lin[j];
      } else if (act == Activation::quick_gelu) {
        for (std::int64_t j = 0; j < kI; ++j) row[j] = math::quick_gelu(row[j]);
      } else {
        for (std::int64_t j = 0; j < kI; ++j) row[j] = math::gelu(row[j]);
      }
      if constexpr (S.subln)
        detail::cpu::layer_norm_row<true>(row, 1, ffn_ln_.weight.data(), 1, ffn_ln_.bias.data(), 1, ffn_ln_.eps, row,
                                          1, kI);
    }
  }

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
