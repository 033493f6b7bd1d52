/// @file bsq_bottleneck.hpp
/// @brief The quantisation bottleneck between the vision encoder and the pixel decoder (MODEL.md §2.6,
///        §3.1, §3.4): quant_embed MLP D→D→L, L2 normalisation, sign, scale 1/√L, and
///        quant_embed_post MLP L→Dq→Dq. The quantizer itself has no parameters.
///
///   h    = c_proj(GELU(c_fc(z)))          z = raw last-layer patch tokens [M, D]
///   u    = h / max(‖h‖₂, 1e-12)           (quantizer_l2_norm)
///   bits = (u > 0); u == 0 → bit 0        code = 2·bit − 1; q = code·(1/√L)  (quantizer_cfg.l2_norm)
///   zhat = c_proj(GELU(c_fc(q)))          [M, Dq], what the decoder consumes
///
/// Indices are built from the bits with integer shifts (dimension 0 = MSB), never with the float32
/// sum of the official Python, which rounds indices ≥ 2^24 (MODEL.md §3.4).
///
/// Accumulation contract: outputs written with `=`; no state. Ops are called unqualified on the
/// backend the bottleneck was built with.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/profile.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/nn/encoder_layer.hpp"
#include "qlip/nn/parameters.hpp"
#include "qlip/nn/tower_config.hpp"
#include "qlip/reference/ops.hpp"

namespace qlip::nn {

/// quant_embed / quant_embed_post (quantizer_embed_type "mlp").
/// @tparam D encoder width
/// @tparam Q quantizer config (bits L, hidden_post_q Dq)
/// @tparam B backend (host, float32)
template <int D, QuantizerConfig Q, host_float_backend B>
  requires(D > 0 && Q.bits >= 1 && Q.bits <= 32 && Q.hidden_post_q > 0)
class BsqBottleneck {
 public:
  static constexpr std::int64_t kL = Q.bits;
  static constexpr std::int64_t kDq = Q.hidden_post_q;

  explicit BsqBottleneck(B be = {}) : be_(be) {}

  /// Loads `<prefix>.quant_embed.{c_fc,c_proj}` and `<prefix>.quant_embed_post.{c_fc,c_proj}`.
  /// @param l2_norm         normalise h before the sign (config quantizer_l2_norm)
  /// @param scale_by_sqrt_l code scale 1/√L (quantizer_cfg.l2_norm), else 1
  void load(WeightSource& src, const std::string& prefix, bool l2_norm, bool scale_by_sqrt_l) {
    embed_fc_.load(src, prefix + ".quant_embed.c_fc", D, D, Bias::present);
    embed_proj_.load(src, prefix + ".quant_embed.c_proj", kL, D, Bias::present);
    post_fc_.load(src, prefix + ".quant_embed_post.c_fc", kDq, kL, Bias::present);
    post_proj_.load(src, prefix + ".quant_embed_post.c_proj", kDq, kDq, Bias::present);
    l2_norm_ = l2_norm;
    // Python: 1 / math.sqrt(L) (double) times a float32 tensor → the float32 scalar.
    scale_ = scale_by_sqrt_l ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(kL))) : 1.0f;
  }

  std::int64_t parameter_count() const {
    return embed_fc_.parameter_count() + embed_proj_.parameter_count() + post_fc_.parameter_count() +
           post_proj_.parameter_count();
  }
  float code_scale() const { return scale_; }

  static std::size_t encode_workspace_bytes(std::int64_t m) {
    return arena_bytes<float>(m * D) + 2 * arena_bytes<float>(m * kL);
  }
  static std::size_t decode_workspace_bytes(std::int64_t m) { return arena_bytes<float>(m * kDq); }

  /// z[M, D] → pre_norm[M, L] (h), u[M, L], bits[M, L]. pre_norm may be empty (then the arena holds h).
  InferenceContext encode(Arena& ws, HostView<const float, 2> z, HostView<float, 2> pre_norm, HostView<float, 2> u,
                          HostView<std::uint8_t, 2> bits) const {
    const std::int64_t m = z.size(0);
    check_shape(z, {m, D}, "bsq encode: z");
    check_shape(u, {m, kL}, "bsq encode: u");
    check_shape(bits, {m, kL}, "bsq encode: bits");
    QLIP_PROFILE_SCOPE("bsq encode");
    ArenaScope scope(ws);
    HostView<float, 2> hidden = ws.tensor<float, 2>({m, D});                                // [M, D]
    HostView<float, 2> h = pre_norm.empty() ? ws.tensor<float, 2>({m, kL}) : pre_norm;        // [M, L]
    embed_fc_.forward(be_, z, hidden);
    gelu(be_, hidden, hidden);
    embed_proj_.forward(be_, hidden, h);
    if (l2_norm_) {
      l2_normalize_rows(be_, h, u, 1e-12f);
    } else {
      copy(be_, HostView<const float, 2>(h), u);
    }
    // The bits are what encode returns; decode recomputes the codes from them (identical, exact
    // ±scale), so the codes written here are scratch.
    bsq_quantize(be_, u, bits, ws.tensor<float, 2>({m, kL}), scale_);
    return {};
  }

  /// bits[M, L] → codes[M, L] = ±scale. (Not named after the op: a member of that name would hide
  /// the backend's overload from the unqualified call.)
  void codes_from_bits(HostView<const std::uint8_t, 2> bits, HostView<float, 2> codes) const {
    bits_to_codes(be_, bits, scale_, codes);
  }

  /// q[M, L] (codes, or any point on the sphere) → zhat[M, Dq].
  InferenceContext decode(Arena& ws, HostView<const float, 2> q, HostView<float, 2> zhat) const {
    const std::int64_t m = q.size(0);
    check_shape(q, {m, kL}, "bsq decode: q");
    check_shape(zhat, {m, kDq}, "bsq decode: zhat");
    QLIP_PROFILE_SCOPE("bsq decode");
    ArenaScope scope(ws);
    HostView<float, 2> hidden = ws.tensor<float, 2>({m, kDq});  // [M, Dq]
    post_fc_.forward(be_, q, hidden);
    gelu(be_, hidden, hidden);
    post_proj_.forward(be_, hidden, zhat);
    return {};
  }

 private:
  B be_;
  Linear embed_fc_, embed_proj_;  // quant_embed: [D, D], [L, D]
  Linear post_fc_, post_proj_;    // quant_embed_post: [Dq, L], [Dq, Dq]
  bool l2_norm_ = true;
  float scale_ = 1.0f;
};

}  // namespace qlip::nn
