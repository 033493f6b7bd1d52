/// @file math.hpp
/// @brief Scalar math shared by every backend (QLIP_HOST_DEVICE): activations, BSQ sign, RoPE
///        frequencies. Both backends call these, so backend differences can only come from
///        reduction order and precision.
#pragma once

#include <cmath>
#include <cstdint>

#include "qlip/core/platform.hpp"

namespace qlip::math {

inline constexpr float kSqrtHalf = 0.70710678118654752440f;

/// Exact GELU, x·Φ(x) = ½x(1 + erf(x/√2)) (PyTorch nn.GELU default, HF "gelu").
QLIP_HOST_DEVICE inline float gelu(float x) { return 0.5f * x * (1.0f + std::erf(x * kSqrtHalf)); }

/// dGELU/dx = Φ(x) + x·φ(x).
QLIP_HOST_DEVICE inline float gelu_grad(float x) {
  const float cdf = 0.5f * (1.0f + std::erf(x * kSqrtHalf));
  const float pdf = 0.39894228040143267794f * std::exp(-0.5f * x * x);
  return cdf + x * pdf;
}

/// Logistic sigmoid, written to stay finite for large |x|.
QLIP_HOST_DEVICE inline float sigmoid(float x) {
  if (x >= 0.0f) return 1.0f / (1.0f + std::exp(-x));
  const float e = std::exp(x);
  return e / (1.0f + e);
}

/// quick-GELU, x·σ(1.702x) (OpenAI CLIP, HF "quick_gelu").
QLIP_HOST_DEVICE inline float quick_gelu(float x) { return x * sigmoid(1.702f * x); }

/// SiLU / swish, x·σ(x).
QLIP_HOST_DEVICE inline float silu(float x) { return x * sigmoid(x); }

/// dSiLU/dx = σ(x)·(1 + x·σ(−x)). One exp of −|x|, so every intermediate stays finite, and σ(−x)
/// is formed directly rather than as 1 − σ(x) (no cancellation for x ≫ 0).
QLIP_HOST_DEVICE inline float silu_grad(float x) {
  const float e = std::exp(-std::fabs(x));
  const float inv = 1.0f / (1.0f + e);
  const float s = x >= 0.0f ? inv : e * inv;       // σ(x)
  const float s_neg = x >= 0.0f ? e * inv : inv;   // σ(−x)
  return s * (1.0f + x * s_neg);
}

/// d quick-GELU/dx = silu'(z) at z = 1.702x (the chain factor 1.702 cancels against z/x).
QLIP_HOST_DEVICE inline float quick_gelu_grad(float x) { return silu_grad(1.702f * x); }

/// dtanh/dx = 1 − tanh²(x).
QLIP_HOST_DEVICE inline float tanh_grad(float x) {
  const float t = std::tanh(x);
  return 1.0f - t * t;
}

/// BSQ sign (MODEL.md §2.6, §3.1): bit = (u > 0); u == 0 maps to bit 0, i.e. code −1.
QLIP_HOST_DEVICE inline bool bsq_bit(float u) { return u > 0.0f; }

/// BSQ code value for a bit: (2·bit − 1)·scale, scale = 1/√L when l2_norm (MODEL.md §3.1).
QLIP_HOST_DEVICE inline float bsq_code(bool bit, float scale) { return bit ? scale : -scale; }

/// RoPE inverse frequency θ^(−2k/d) computed in float32 the way PyTorch does
/// (1 / θ ** (arange(0, d, 2) / d)), so tables agree to the last bit where possible (MODEL.md §2.4).
QLIP_HOST_DEVICE inline float rope_inv_freq(int k, int dim, float theta) {
  const float exponent = static_cast<float>(2 * k) / static_cast<float>(dim);
  return 1.0f / std::pow(theta, exponent);
}

/// Llama-3 RoPE frequency scaling of one inverse frequency (MODEL.md §8.3; HF
/// `_compute_llama3_parameters`). Wavelengths shorter than original/high_freq_factor keep their
/// frequency, longer than original/low_freq_factor are divided by `factor`, and the band between is
/// interpolated linearly in 1/wavelength. Every step is float32 in the same order as the HF code, so
/// the table matches PyTorch's float32 buffer to within rounding of the final cos/sin.
QLIP_HOST_DEVICE inline float llama3_scale_inv_freq(float inv_freq, float factor, float low_freq_factor,
                                                    float high_freq_factor, float original_max_position) {
  const float two_pi = 6.28318530717958647692f;
  const float low_freq_wavelen = original_max_position / low_freq_factor;
  const float high_freq_wavelen = original_max_position / high_freq_factor;
  const float wavelen = two_pi / inv_freq;
  if (wavelen < high_freq_wavelen) return inv_freq;          // high frequency: unchanged
  if (wavelen > low_freq_wavelen) return inv_freq / factor;  // low frequency: fully scaled
  // Medium band: torch computes ((1 − s)·f)/factor + s·f in float32.
  const float smooth = (original_max_position / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
  return (1.0f - smooth) * inv_freq / factor + smooth * inv_freq;
}

/// The low `n` bits set (n in [0, 32]); written so that n == 32 does not shift by the word width
/// (undefined behaviour in C++ and wrong on GPUs).
QLIP_HOST_DEVICE inline std::uint32_t low_bits_mask(int n) {
  return n >= 32 ? 0xFFFFFFFFu : ((std::uint32_t{1} << n) - 1u);
}

/// Group index j of a full BSQ index with G groups of g bits (MODEL.md §3.4): group 0 is the most
/// significant chunk, sub_j = (index >> (g·(G−1−j))) & (2^g − 1). Integer shifts only.
QLIP_HOST_DEVICE inline std::uint32_t bsq_group_index(std::uint32_t index, int j, int group_size, int groups) {
  const int shift = group_size * (groups - 1 - j);
  return shift >= 32 ? 0u : ((index >> shift) & low_bits_mask(group_size));
}

}  // namespace qlip::math
