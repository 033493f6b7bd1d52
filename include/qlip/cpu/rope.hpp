/// @file rope.hpp
/// @brief CPU rotary position embeddings (interleaved EVA-02 2-D RoPE and half-split Llama RoPE),
///        in place, OpenMP over (batch, token).
///
/// Same formulas as reference/rope.hpp (see there for the two conventions), in float32. The tables
/// come from the reference builders, re-exported here as ops::rope2d_table / ops::rope1d_table: they
/// are built once per model, so one builder serves every backend. The *_backward ops apply the
/// transposed rotation (sin negated) in place to the gradient.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <cstdint>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/rope.hpp"

namespace qlip::ops {

using reference::rope1d_table;
using reference::rope2d_table;

/// Interleaved (EVA-02) rotation in place: tokens first_token..first_token+P−1 use table rows
/// 0..P−1; other tokens are untouched (vision encoder: first_token = 1 skips CLS; decoder: 0).
inline void apply_rope_interleaved(cpu_backend,
                                   HostView<float, 4> x,          // [B, T, H, Dh], in place
                                   HostView<const float, 2> cos,  // [P, Dh]
                                   HostView<const float, 2> sin,  // [P, Dh]
                                   std::int64_t first_token) {
  detail::check_apply_rope_interleaved_args(x, cos, sin, first_token);
  const std::int64_t b_n = x.size(0), h_n = x.size(2), dh = x.size(3), p_n = cos.size(0);
  const std::int64_t sd = x.stride(3), cs = cos.stride(1), ss = sin.stride(1);
#pragma omp parallel for schedule(static) if (b_n * p_n * h_n * dh >= 16384)
  for (std::int64_t bp = 0; bp < b_n * p_n; ++bp) {
    const std::int64_t b = bp / p_n, p = bp % p_n;
    const float* cr = cos.data() + p * cos.stride(0);
    const float* sr = sin.data() + p * sin.stride(0);
    for (std::int64_t h = 0; h < h_n; ++h) {
      float* xr = x.data() + b * x.stride(0) + (first_token + p) * x.stride(1) + h * x.stride(2);
      for (std::int64_t d = 0; d < dh; d += 2) {
        const float x0 = xr[d * sd], x1 = xr[(d + 1) * sd];
        xr[d * sd] = x0 * cr[d * cs] - x1 * sr[d * ss];
        xr[(d + 1) * sd] = x1 * cr[(d + 1) * cs] + x0 * sr[(d + 1) * ss];
      }
    }
  }
}

/// Half-split (NeoX / Llama) rotation in place; token t uses table row positions[t] (T entries,
/// each in [0, P)).
inline void apply_rope_half(cpu_backend,
                            HostView<float, 4> x,             // [B, T, H, Dh], in place
                            HostView<const float, 2> cos,     // [P, Dh/2]
                            HostView<const float, 2> sin,     // [P, Dh/2]
                            const std::int64_t* positions) {  // [T]
  // Validates serially (positions too): an exception must not escape an OpenMP region.
  detail::check_apply_rope_half_args(x, cos, sin, positions);
  const std::int64_t b_n = x.size(0), t_n = x.size(1), h_n = x.size(2), dh = x.size(3), half = dh / 2;
  const std::int64_t sd = x.stride(3), cs = cos.stride(1), ss = sin.stride(1);
#pragma omp parallel for schedule(static) if (b_n * t_n * h_n * dh >= 16384)
  for (std::int64_t bt = 0; bt < b_n * t_n; ++bt) {
    const std::int64_t b = bt / t_n, t = bt % t_n;
    const float* cr = cos.data() + positions[t] * cos.stride(0);
    const float* sr = sin.data() + positions[t] * sin.stride(0);
    for (std::int64_t h = 0; h < h_n; ++h) {
      float* lo = x.data() + b * x.stride(0) + t * x.stride(1) + h * x.stride(2);
      float* hi = lo + half * sd;
      for (std::int64_t i = 0; i < half; ++i) {
        const float x0 = lo[i * sd], x1 = hi[i * sd];
        lo[i * sd] = x0 * cr[i * cs] - x1 * sr[i * ss];
        hi[i * sd] = x1 * cr[i * cs] + x0 * sr[i * ss];
      }
    }
  }
}

/// Backward of apply_rope_interleaved, in place on the gradient (dy in, dx out): the transposed
/// rotation, dx[2m] = dy[2m]·cos[2m] + dy[2m+1]·sin[2m+1], dx[2m+1] = dy[2m+1]·cos[2m+1] −
/// dy[2m]·sin[2m] (reference/rope.hpp). Tokens outside [first_token, first_token + P) pass through.
/// Contract: dx is an activation gradient, written (=).
inline void apply_rope_interleaved_backward(cpu_backend,
                                            HostView<float, 4> dx,         // [B, T, H, Dh], in place
                                            HostView<const float, 2> cos,  // [P, Dh]
                                            HostView<const float, 2> sin,  // [P, Dh]
                                            std::int64_t first_token) {
  detail::check_apply_rope_interleaved_args(dx, cos, sin, first_token, "apply_rope_interleaved_backward");
  const std::int64_t b_n = dx.size(0), h_n = dx.size(2), dh = dx.size(3), p_n = cos.size(0);
  const std::int64_t sd = dx.stride(3), cs = cos.stride(1), ss = sin.stride(1);
#pragma omp parallel for schedule(static) if (b_n * p_n * h_n * dh >= 16384)
  for (std::int64_t bp = 0; bp < b_n * p_n; ++bp) {
    const std::int64_t b = bp / p_n, p = bp % p_n;
    const float* cr = cos.data() + p * cos.stride(0);
    const float* sr = sin.data() + p * sin.stride(0);
    for (std::int64_t h = 0; h < h_n; ++h) {
      float* gr = dx.data() + b * dx.stride(0) + (first_token + p) * dx.stride(1) + h * dx.stride(2);
      for (std::int64_t d = 0; d < dh; d += 2) {
        const float g0 = gr[d * sd], g1 = gr[(d + 1) * sd];
        gr[d * sd] = g0 * cr[d * cs] + g1 * sr[(d + 1) * ss];
        gr[(d + 1) * sd] = g1 * cr[(d + 1) * cs] - g0 * sr[d * ss];
      }
    }
  }
}

/// Backward of apply_rope_half, in place on the gradient: dx[i] = dy[i]·cos[i] + dy[i+Dh/2]·sin[i],
/// dx[i+Dh/2] = dy[i+Dh/2]·cos[i] − dy[i]·sin[i], token t on table row positions[t].
/// Contract: dx is an activation gradient, written (=).
inline void apply_rope_half_backward(cpu_backend,
                                     HostView<float, 4> dx,            // [B, T, H, Dh], in place
                                     HostView<const float, 2> cos,     // [P, Dh/2]
                                     HostView<const float, 2> sin,     // [P, Dh/2]
                                     const std::int64_t* positions) {  // [T]
  // Validates serially (positions too): an exception must not escape an OpenMP region.
  detail::check_apply_rope_half_args(dx, cos, sin, positions, "apply_rope_half_backward");
  const std::int64_t b_n = dx.size(0), t_n = dx.size(1), h_n = dx.size(2), dh = dx.size(3), half = dh / 2;
  const std::int64_t sd = dx.stride(3), cs = cos.stride(1), ss = sin.stride(1);
#pragma omp parallel for schedule(static) if (b_n * t_n * h_n * dh >= 16384)
  for (std::int64_t bt = 0; bt < b_n * t_n; ++bt) {
    const std::int64_t b = bt / t_n, t = bt % t_n;
    const float* cr = cos.data() + positions[t] * cos.stride(0);
    const float* sr = sin.data() + positions[t] * sin.stride(0);
    for (std::int64_t h = 0; h < h_n; ++h) {
      float* lo = dx.data() + b * dx.stride(0) + t * dx.stride(1) + h * dx.stride(2);
      float* hi = lo + half * sd;
      for (std::int64_t i = 0; i < half; ++i) {
        const float g0 = lo[i * sd], g1 = hi[i * sd];
        lo[i * sd] = g0 * cr[i * cs] + g1 * sr[i * ss];
        hi[i * sd] = g1 * cr[i * cs] - g0 * sr[i * ss];
      }
    }
  }
}

}  // namespace qlip::ops
