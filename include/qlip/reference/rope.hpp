/// @file rope.hpp
/// @brief Rotary position embeddings: the cos/sin tables (2-D EVA-02 vision RoPE, MODEL.md §2.4; 1-D
///        Llama-3 RoPE with llama3 frequency scaling, MODEL.md §8.3) and reference rotations.
///
/// Tables are built once per model, so only this reference builder exists; every backend's apply op
/// consumes them. The builders mimic PyTorch's float32 steps (frequency, position and angle rounded
/// to float32) and then take cos/sin of the float32 angle in double, rounded once, so they agree
/// with the PyTorch buffers to within an ulp of cos/sin.
///
/// Two rotation conventions:
///  - interleaved (EVA-02 / GPT-J, QLIP vision encoder and decoder): pairs (2m, 2m+1),
///      y[2m]   = x[2m]·cos[2m]     − x[2m+1]·sin[2m]
///      y[2m+1] = x[2m+1]·cos[2m+1] + x[2m]·sin[2m+1]
///    with a table of full width Dh (each angle stored twice, as PyTorch stores it);
///  - half split (NeoX / Llama, rotate_half): pairs (i, i+Dh/2),
///      y[i]      = x[i]·cos[i]      − x[i+Dh/2]·sin[i]
///      y[i+Dh/2] = x[i+Dh/2]·cos[i] + x[i]·sin[i]
///    with a table of width Dh/2 (HF stores cat(freqs, freqs); the halves are equal).
///
/// Backward (*_backward): a rotation is orthogonal, so the gradient is the transposed rotation
/// (sin negated), applied in place to the upstream gradient with the same table rows.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/math.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip {

/// cos/sin tables of a RoPE: row = position (or flattened token), column = rotary dimension.
struct RopeTable {
  Tensor<float, 2> cos;  // [P, W]
  Tensor<float, 2> sin;  // [P, W]
};

/// A 2-D (interleaved, EVA-02) RoPE table as an op receives it: rows 0..P−1 rotate tokens
/// first_token..first_token+P−1. float32 whatever the backend's element type: the table is a
/// constant buffer of the checkpoint (MODEL.md §2.4), never trained.
/// @tparam M memory space of the table
template <memory_space M>
struct RopeTableView {
  TensorView<const float, 2, M> cos;  // [P, Dh]
  TensorView<const float, 2, M> sin;  // [P, Dh]
  std::int64_t first_token = 0;       // 1 in the vision encoder (CLS untouched), 0 in the decoder
};

/// Llama-3 frequency scaling (HF rope_scaling {"rope_type": "llama3", ...}). The defaults are
/// Llama-3.2's (MODEL.md §8.3); set enabled = false for plain RoPE.
struct Llama3Scaling {
  float factor = 32.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position = 8192;
  bool enabled = true;
};

namespace detail {
/// cos and sin of a float32 angle, evaluated in double and rounded once.
inline void rope_cos_sin_f32(float angle, float& c, float& s) {
  c = static_cast<float>(std::cos(static_cast<double>(angle)));
  s = static_cast<float>(std::sin(static_cast<double>(angle)));
}

// Argument checks of the apply ops, shared by every backend's apply_rope_* overloads.

/// Checks x[B, T, H, Dh] (Dh even) against cos/sin [P, Dh], and that tokens
/// [first_token, first_token + P) lie inside T. `op` names the caller (forward or backward).
template <class T, class M>
void check_apply_rope_interleaved_args(const TensorView<T, 4, M>& x, const TensorView<const float, 2, M>& cos,
                                       const TensorView<const float, 2, M>& sin, std::int64_t first_token,
                                       const char* op = "apply_rope_interleaved") {
  const std::int64_t t_n = x.size(1), dh = x.size(3), p_n = cos.size(0);
  const std::string cos_name = std::string(op) + " cos", sin_name = std::string(op) + " sin";
  check_shape(cos, {p_n, dh}, cos_name.c_str());
  check_shape(sin, {p_n, dh}, sin_name.c_str());
  QLIP_CHECK(dh % 2 == 0, op, ": head_dim must be even, got ", dh);
  QLIP_CHECK(first_token >= 0 && first_token + p_n <= t_n, op, ": tokens [", first_token, ", ", first_token + p_n,
             ") do not fit in a sequence of ", t_n);
}

/// Checks x[B, T, H, Dh] (Dh even) against cos/sin [P, Dh/2], and that each of the T entries of
/// positions is in [0, P). positions is read here, so it must be host-readable.
template <class T, class M>
void check_apply_rope_half_args(const TensorView<T, 4, M>& x, const TensorView<const float, 2, M>& cos,
                                const TensorView<const float, 2, M>& sin, const std::int64_t* positions,
                                const char* op = "apply_rope_half") {
  const std::int64_t t_n = x.size(1), dh = x.size(3), p_n = cos.size(0);
  QLIP_CHECK(dh % 2 == 0, op, ": head_dim must be even, got ", dh);
  const std::int64_t half = dh / 2;
  const std::string cos_name = std::string(op) + " cos", sin_name = std::string(op) + " sin";
  check_shape(cos, {p_n, half}, cos_name.c_str());
  check_shape(sin, {p_n, half}, sin_name.c_str());
  QLIP_CHECK(positions != nullptr || t_n == 0, op, ": positions is null");
  // Checked serially before any backend's parallel loop: an exception must not escape an OpenMP region.
  for (std::int64_t t = 0; t < t_n; ++t)
    QLIP_CHECK(positions[t] >= 0 && positions[t] < p_n, op, ": position ", positions[t], " of token ", t,
               " is outside the table of ", p_n, " positions");
}
}  // namespace detail

namespace reference {

using qlip::Llama3Scaling;
using qlip::RopeTable;

/// 2-D vision RoPE table (EVA-02 VisionRotaryEmbeddingFast, MODEL.md §2.4) for a grid×grid patch grid.
/// Each axis gets head_dim/2 rotary dims with freq_k = θ^(−2k/(head_dim/2)), k < head_dim/4, at
/// positions t_n = n/grid·pt_seq_len (float32, torch's `arange(S)/S*pt`). Row r·grid + c of the
/// table is concat(A[r], A[c]) with A[n, 2k] = A[n, 2k+1] = t_n·freq_k: the first half rotates with
/// the row index, the second with the column index.
/// @return cos, sin of shape [grid², head_dim]
inline RopeTable rope2d_table(int grid, int head_dim, int pt_seq_len = 16, float theta = 10000.f) {
  QLIP_CHECK(grid >= 1, "rope2d_table: grid must be positive, got ", grid);
  QLIP_CHECK(head_dim >= 4 && head_dim % 4 == 0, "rope2d_table: head_dim must be a positive multiple of 4 ",
             "(two axes of interleaved pairs), got ", head_dim);
  QLIP_CHECK(pt_seq_len >= 1, "rope2d_table: pt_seq_len must be positive, got ", pt_seq_len);
  const int axis_dim = head_dim / 2;  // rotary dims per axis (32 for Dh = 64)
  const int n_freq = axis_dim / 2;    // distinct frequencies per axis (16)
  const std::int64_t g = grid;
  // Per-axis angle table A[n, 2k] = A[n, 2k+1], float32 as in PyTorch.
  Tensor<float, 2> axis_cos({g, axis_dim}), axis_sin({g, axis_dim});
  for (std::int64_t n = 0; n < g; ++n) {
    // torch: arange(S) / S (true division → float32) * pt_seq_len (float32).
    const float t = (static_cast<float>(n) / static_cast<float>(grid)) * static_cast<float>(pt_seq_len);
    for (int k = 0; k < n_freq; ++k) {
      const float angle = t * math::rope_inv_freq(k, axis_dim, theta);
      float c, s;
      detail::rope_cos_sin_f32(angle, c, s);
      axis_cos(n, 2 * k) = axis_cos(n, 2 * k + 1) = c;
      axis_sin(n, 2 * k) = axis_sin(n, 2 * k + 1) = s;
    }
  }
  RopeTable table{Tensor<float, 2>({g * g, head_dim}), Tensor<float, 2>({g * g, head_dim})};
  for (std::int64_t r = 0; r < g; ++r) {
    for (std::int64_t c = 0; c < g; ++c) {
      const std::int64_t row = r * g + c;  // token order n = row·S + col (MODEL.md §2.2)
      for (int j = 0; j < axis_dim; ++j) {
        table.cos(row, j) = axis_cos(r, j);
        table.sin(row, j) = axis_sin(r, j);
        table.cos(row, axis_dim + j) = axis_cos(c, j);
        table.sin(row, axis_dim + j) = axis_sin(c, j);
      }
    }
  }
  return table;
}

/// 1-D RoPE table for positions 0..positions−1 (HF LlamaRotaryEmbedding): inv_freq_k =
/// θ^(−2k/head_dim), optionally llama3-scaled (math::llama3_scale_inv_freq), angle =
/// f32(position)·inv_freq_k in float32.
/// @return cos, sin of shape [positions, head_dim/2] (column k = frequency k)
inline RopeTable rope1d_table(std::int64_t positions, int head_dim, float theta, Llama3Scaling scaling) {
  QLIP_CHECK(positions >= 1, "rope1d_table: positions must be positive, got ", positions);
  QLIP_CHECK(positions <= (std::int64_t{1} << 24),
             "rope1d_table: positions above 2^24 are not exact in float32, got ", positions);
  QLIP_CHECK(head_dim >= 2 && head_dim % 2 == 0, "rope1d_table: head_dim must be even, got ", head_dim);
  if (scaling.enabled) {
    QLIP_CHECK(scaling.factor > 0.0f, "rope1d_table: llama3 factor must be positive, got ", scaling.factor);
    QLIP_CHECK(scaling.low_freq_factor > 0.0f && scaling.high_freq_factor > scaling.low_freq_factor,
               "rope1d_table: llama3 scaling needs 0 < low_freq_factor < high_freq_factor, got ",
               scaling.low_freq_factor, " and ", scaling.high_freq_factor);
    QLIP_CHECK(scaling.original_max_position > 0, "rope1d_table: original_max_position must be positive");
  }
  const int half = head_dim / 2;
  RopeTable table{Tensor<float, 2>({positions, half}), Tensor<float, 2>({positions, half})};
  for (int k = 0; k < half; ++k) {
    float inv_freq = math::rope_inv_freq(k, head_dim, theta);
    if (scaling.enabled) {
      inv_freq = math::llama3_scale_inv_freq(inv_freq, scaling.factor, scaling.low_freq_factor,
                                             scaling.high_freq_factor,
                                             static_cast<float>(scaling.original_max_position));
    }
    for (std::int64_t p = 0; p < positions; ++p) {
      const float angle = static_cast<float>(p) * inv_freq;
      detail::rope_cos_sin_f32(angle, table.cos(p, k), table.sin(p, k));
    }
  }
  return table;
}

/// Interleaved (EVA-02) rotation in place: tokens first_token..first_token+P−1 use table rows
/// 0..P−1, all other tokens are untouched (vision encoder: first_token = 1 skips CLS; decoder: 0).
/// Products and sums in double. Any strides (e.g. a [B, H, T, Dh] buffer viewed transposed).
/// T = float is the oracle; T = double is what finite differences differentiate (the tables stay
/// float: they are constants, built once per model).
template <class T>
void apply_rope_interleaved(HostView<T, 4> x,              // [B, T, H, Dh], in place
                            HostView<const float, 2> cos,  // [P, Dh]
                            HostView<const float, 2> sin,  // [P, Dh]
                            std::int64_t first_token) {
  detail::check_apply_rope_interleaved_args(x, cos, sin, first_token);
  const std::int64_t b_n = x.size(0), h_n = x.size(2), dh = x.size(3), p_n = cos.size(0);
  for (std::int64_t b = 0; b < b_n; ++b)
    for (std::int64_t p = 0; p < p_n; ++p)
      for (std::int64_t h = 0; h < h_n; ++h)
        for (std::int64_t d = 0; d < dh; d += 2) {
          T& e = x(b, first_token + p, h, d);
          T& o = x(b, first_token + p, h, d + 1);
          const double x0 = e, x1 = o;
          e = static_cast<T>(x0 * cos(p, d) - x1 * sin(p, d));
          o = static_cast<T>(x1 * cos(p, d + 1) + x0 * sin(p, d + 1));
        }
}

/// The float oracle, callable with views that need a conversion (template deduction does not convert).
inline void apply_rope_interleaved(HostView<float, 4> x, HostView<const float, 2> cos, HostView<const float, 2> sin,
                                   std::int64_t first_token) {
  apply_rope_interleaved<float>(x, cos, sin, first_token);
}

/// Half-split (NeoX / Llama) rotation in place; token t uses table row positions[t] (T entries,
/// each in [0, P)). Products and sums in double.
template <class T>
void apply_rope_half(HostView<T, 4> x,                 // [B, T, H, Dh], in place
                     HostView<const float, 2> cos,     // [P, Dh/2]
                     HostView<const float, 2> sin,     // [P, Dh/2]
                     const std::int64_t* positions) {  // [T]
  detail::check_apply_rope_half_args(x, cos, sin, positions);
  const std::int64_t b_n = x.size(0), t_n = x.size(1), h_n = x.size(2), half = x.size(3) / 2;
  for (std::int64_t b = 0; b < b_n; ++b)
    for (std::int64_t t = 0; t < t_n; ++t)
      for (std::int64_t h = 0; h < h_n; ++h)
        for (std::int64_t i = 0; i < half; ++i) {
          const std::int64_t p = positions[t];
          T& lo = x(b, t, h, i);
          T& hi = x(b, t, h, i + half);
          const double x0 = lo, x1 = hi;
          lo = static_cast<T>(x0 * cos(p, i) - x1 * sin(p, i));
          hi = static_cast<T>(x1 * cos(p, i) + x0 * sin(p, i));
        }
}

/// The float oracle, callable with views that need a conversion.
inline void apply_rope_half(HostView<float, 4> x, HostView<const float, 2> cos, HostView<const float, 2> sin,
                            const std::int64_t* positions) {
  apply_rope_half<float>(x, cos, sin, positions);
}

/// Backward of apply_rope_interleaved, in place on the gradient dx (which holds dy on entry): the
/// transpose of each 2×2 rotation [[c₀, −s₀], [s₁, c₁]] (c/s of columns 2m and 2m+1),
///   dx[2m]   = dy[2m]·cos[2m]       + dy[2m+1]·sin[2m+1]
///   dx[2m+1] = dy[2m+1]·cos[2m+1]   − dy[2m]·sin[2m]
/// i.e. the forward rotation with sin negated (the table stores each angle twice, MODEL.md §2.4).
/// Tokens outside [first_token, first_token + P) pass through: their gradient is dy itself.
/// Contract: dx is an activation gradient, written (= in place). Products and sums in double.
template <class T>
void apply_rope_interleaved_backward(HostView<T, 4> dx,             // [B, T, H, Dh], in place: dy in, dx out
                                     HostView<const float, 2> cos,  // [P, Dh]
                                     HostView<const float, 2> sin,  // [P, Dh]
                                     std::int64_t first_token) {
  detail::check_apply_rope_interleaved_args(dx, cos, sin, first_token, "apply_rope_interleaved_backward");
  const std::int64_t b_n = dx.size(0), h_n = dx.size(2), dh = dx.size(3), p_n = cos.size(0);
  for (std::int64_t b = 0; b < b_n; ++b)
    for (std::int64_t p = 0; p < p_n; ++p)
      for (std::int64_t h = 0; h < h_n; ++h)
        for (std::int64_t d = 0; d < dh; d += 2) {
          T& e = dx(b, first_token + p, h, d);
          T& o = dx(b, first_token + p, h, d + 1);
          const double g0 = e, g1 = o;
          e = static_cast<T>(g0 * cos(p, d) + g1 * sin(p, d + 1));
          o = static_cast<T>(g1 * cos(p, d + 1) - g0 * sin(p, d));
        }
}

/// The float oracle of the interleaved backward, callable with views that need a conversion.
inline void apply_rope_interleaved_backward(HostView<float, 4> dx, HostView<const float, 2> cos,
                                            HostView<const float, 2> sin, std::int64_t first_token) {
  apply_rope_interleaved_backward<float>(dx, cos, sin, first_token);
}

/// Backward of apply_rope_half, in place on dx (dy on entry): the transpose of each rotation,
///   dx[i]      = dy[i]·cos[i]      + dy[i+Dh/2]·sin[i]
///   dx[i+Dh/2] = dy[i+Dh/2]·cos[i] − dy[i]·sin[i]
/// with token t on table row positions[t]. Contract: dx is written (= in place). Double sums.
template <class T>
void apply_rope_half_backward(HostView<T, 4> dx,               // [B, T, H, Dh], in place: dy in, dx out
                              HostView<const float, 2> cos,    // [P, Dh/2]
                              HostView<const float, 2> sin,    // [P, Dh/2]
                              const std::int64_t* positions) {  // [T]
  detail::check_apply_rope_half_args(dx, cos, sin, positions, "apply_rope_half_backward");
  const std::int64_t b_n = dx.size(0), t_n = dx.size(1), h_n = dx.size(2), half = dx.size(3) / 2;
  for (std::int64_t b = 0; b < b_n; ++b)
    for (std::int64_t t = 0; t < t_n; ++t)
      for (std::int64_t h = 0; h < h_n; ++h)
        for (std::int64_t i = 0; i < half; ++i) {
          const std::int64_t p = positions[t];
          T& lo = dx(b, t, h, i);
          T& hi = dx(b, t, h, i + half);
          const double g0 = lo, g1 = hi;
          lo = static_cast<T>(g0 * cos(p, i) + g1 * sin(p, i));
          hi = static_cast<T>(g1 * cos(p, i) - g0 * sin(p, i));
        }
}

/// The float oracle of the half-split backward, callable with views that need a conversion.
inline void apply_rope_half_backward(HostView<float, 4> dx, HostView<const float, 2> cos, HostView<const float, 2> sin,
                                     const std::int64_t* positions) {
  apply_rope_half_backward<float>(dx, cos, sin, positions);
}

}  // namespace reference
}  // namespace qlip
