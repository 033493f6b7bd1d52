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

/// BSQ sign (spec 2.6, 3.1): bit = (u > 0); u == 0 maps to bit 0, i.e. code −1.
QLIP_HOST_DEVICE inline bool bsq_bit(float u) { return u > 0.0f; }

/// BSQ code value for a bit: (2·bit − 1)·scale, scale = 1/√L when l2_norm (spec 3.1).
QLIP_HOST_DEVICE inline float bsq_code(bool bit, float scale) { return bit ? scale : -scale; }

/// RoPE inverse frequency θ^(−2k/d) computed in float32 the way PyTorch does
/// (1 / θ ** (arange(0, d, 2) / d)), so tables agree to the last bit where possible (spec 2.4).
QLIP_HOST_DEVICE inline float rope_inv_freq(int k, int dim, float theta) {
  const float exponent = static_cast<float>(2 * k) / static_cast<float>(dim);
  return 1.0f / std::pow(theta, exponent);
}

}  // namespace qlip::math
