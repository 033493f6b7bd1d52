/// @file optimizer.hpp
/// @brief CPU backend optimiser steps (AdamW, LAMB) in float over flat buffers, and the flat-buffer
///        reductions training needs (sum of squares for the global gradient norm, in-place scale).
///
/// Formulas, argument checks and the per-element functions are those of reference/optimizer.hpp
/// (torch.optim.AdamW's arithmetic order; LAMB per You et al. 2019), evaluated in float.
///
/// Parallelism: one OpenMP region per pass over all tensors. The segments are cut into chunks of at
/// most kOptimizerChunk elements (a chunk never spans two tensors); each thread takes a contiguous
/// range of chunk indices and walks the segment table to find them, so nothing is allocated and a
/// thousand small tensors cost one region, not a thousand. AdamW is one pass. LAMB needs each
/// tensor's ‖p‖ and ‖r‖ before it can update p: pass 1 updates the moments and writes each chunk's
/// partial sums (double) into a caller-provided scratch array (lamb_scratch_size()); the partials of
/// a tensor are then added in chunk order, serially, and pass 2 applies p ← p − lr·trust·r, with r
/// recomputed from the stored moments (cheaper than storing it). Results do not depend on the number
/// of threads: the element math is per element and every sum has a fixed order (per chunk, then
/// chunks in order), so a run is reproducible on any thread count.
///
/// Idle blocks: an element whose gradient and both moments are exactly zero, in a tensor without
/// weight decay, has update direction exactly zero (m̂ = 0, 0/(√0 + ε) = 0), so p and its moments
/// stay what they are. Every pass tests blocks of kIdleBlock elements for that and skips them, so
/// their p, m and v are exactly what computing them would give (LAMB's pass 1 still adds their ‖p‖²,
/// in a loop of its own). This is what makes a large token embedding cheap: of CLIP's 49,408 rows
/// the demo's captions touch 45, and the other rows never leave their initial values.
///
/// Preconditions (not checked): the four buffers do not overlap one another.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <omp.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/optimizer.hpp"

namespace qlip {

/// Largest piece of one tensor that one thread updates at a time (64 KiB of floats): small enough
/// to balance a few large tensors over many threads, large enough that the walk is negligible.
inline constexpr std::int64_t kOptimizerChunk = 16384;

/// Elements per idle-block test (1 KiB of floats; four rows of a 64-wide embedding).
inline constexpr std::int64_t kIdleBlock = 256;

namespace detail::cpu {

/// Whether x[0, n) are all +0.0 (bit pattern zero; −0.0 counts as non-zero, which only costs speed).
inline bool all_bits_zero(const float* x, std::int64_t n) {
  std::uint32_t bits = 0;
#pragma omp simd reduction(| : bits)
  for (std::int64_t i = 0; i < n; ++i) bits |= std::bit_cast<std::uint32_t>(x[i]);
  return bits == 0;
}

/// Σ x² over x[0, n), in double.
inline double sum_of_squares_double(const float* x, std::int64_t n) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (std::int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return s;
}

/// Whether a tensor's elements can be idle (see the file comment): no weight decay and a finite
/// gradient scale (0 · ∞ would not be 0).
template <class Scalars>
bool idle_blocks_possible(const Scalars& c) {
  return c.weight_decay == 0 && std::isfinite(c.grad_scale);
}

inline std::int64_t chunks_of(std::int64_t numel) {
  return (numel + kOptimizerChunk - 1) / kOptimizerChunk;
}

/// Number of chunks the segments are cut into.
inline std::int64_t optimizer_chunk_count(std::span<const OptimizerSegment> segments) {
  std::int64_t n = 0;
  for (const OptimizerSegment& s : segments) n += chunks_of(s.numel);
  return n;
}

/// Threads for `work` independent pieces: at most one per piece, 1 inside a parallel region.
inline int threads_for(std::int64_t work) {
  if (omp_in_parallel()) return 1;
  return static_cast<int>(std::clamp<std::int64_t>(work, 1, std::max(omp_get_max_threads(), 1)));
}

/// Calls f(chunk, segment, begin, end) for every chunk, in parallel: `chunk` is the global chunk
/// index, `segment` the index into `segments`, [begin, end) the chunk's elements in the flat
/// buffers. Thread i handles a contiguous range of chunks. f must not throw (OpenMP region).
template <class F>
void for_each_optimizer_chunk(std::span<const OptimizerSegment> segments, std::int64_t total_chunks, F&& f) {
  if (total_chunks == 0) return;
#pragma omp parallel num_threads(threads_for(total_chunks))
  {
    const std::int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const std::int64_t c0 = total_chunks * t / nt, c1 = total_chunks * (t + 1) / nt;
    std::size_t s = 0;
    std::int64_t first = 0;  // global index of segment s's first chunk
    for (std::int64_t c = c0; c < c1; ++c) {
      while (c >= first + chunks_of(segments[s].numel)) first += chunks_of(segments[s++].numel);
      const std::int64_t begin = segments[s].offset + (c - first) * kOptimizerChunk;
      const std::int64_t end = std::min(begin + kOptimizerChunk, segments[s].offset + segments[s].numel);
      f(c, s, begin, end);
    }
  }
}

}  // namespace detail::cpu

namespace ops {

/// Doubles of scratch that lamb_step needs for these segments (two partial sums per chunk).
inline std::int64_t lamb_scratch_size(std::span<const OptimizerSegment> segments) {
  return 2 * detail::cpu::optimizer_chunk_count(segments);
}

/// One AdamW step in float, torch.optim.AdamW's (foreach=False) arithmetic order
/// (reference/optimizer.hpp), one parallel pass over all segments.
/// @param param      [n] flat parameter values, updated in place
/// @param grad       [n] flat gradients (read only; scaled by hp.grad_scale on the fly)
/// @param exp_avg    [n] first moment m, updated in place (zeros before the first step)
/// @param exp_avg_sq [n] second moment v, updated in place (zeros before the first step)
/// @param segments   one per tensor: offset, numel, this step's lr and weight decay
/// @throws qlip::Error naming the argument that is wrong
inline void adamw_step(cpu_backend, HostView<float, 1> param, HostView<const float, 1> grad, HostView<float, 1> exp_avg,
                       HostView<float, 1> exp_avg_sq, std::span<const OptimizerSegment> segments,
                       const AdamHyperParams& hp) {
  detail::check_optimizer_args("adamw_step", param, grad, exp_avg, exp_avg_sq, segments, hp);
  float* const p = param.data();
  const float* const g = grad.data();
  float* const m = exp_avg.data();
  float* const v = exp_avg_sq.data();
  detail::cpu::for_each_optimizer_chunk(segments, detail::cpu::optimizer_chunk_count(segments),
                                        [&](std::int64_t, std::size_t seg, std::int64_t begin, std::int64_t end) {
                                          const detail::AdamWScalars<float> c =
                                              detail::adamw_scalars<float>(segments[seg], hp);
                                          // decay 1 and m = 0 leave p as it is (file comment).
                                          const bool may_idle = c.decay == 1.0f && std::isfinite(c.grad_scale) &&
                                                                std::isfinite(c.neg_step_size);
                                          for (std::int64_t b = begin; b < end; b += kIdleBlock) {
                                            const std::int64_t e = std::min(end, b + kIdleBlock), n = e - b;
                                            if (may_idle && detail::cpu::all_bits_zero(g + b, n) &&
                                                detail::cpu::all_bits_zero(m + b, n) &&
                                                detail::cpu::all_bits_zero(v + b, n))
                                              continue;
#pragma omp simd
                                            for (std::int64_t i = b; i < e; ++i)
                                              detail::adamw_element<float>(p[i], g[i] * c.grad_scale, m[i], v[i], c);
                                          }
                                        });
}

/// One LAMB step in float (You et al. 2019 with bias correction; reference/optimizer.hpp): pass 1
/// updates the moments and sums ‖p‖², ‖r‖² per chunk in double, pass 2 applies each tensor's
/// trust ratio (file comment).
/// @param param      [n] flat parameter values, updated in place
/// @param grad       [n] flat gradients (read only; scaled by hp.grad_scale on the fly)
/// @param exp_avg    [n] first moment m, updated in place
/// @param exp_avg_sq [n] second moment v, updated in place
/// @param segments   one per tensor: offset, numel, this step's lr and weight decay
/// @param scratch    at least lamb_scratch_size(segments) doubles, overwritten
/// @throws qlip::Error naming the argument that is wrong
inline void lamb_step(cpu_backend, HostView<float, 1> param, HostView<const float, 1> grad, HostView<float, 1> exp_avg,
                      HostView<float, 1> exp_avg_sq, std::span<const OptimizerSegment> segments,
                      const AdamHyperParams& hp, std::span<double> scratch) {
  detail::check_optimizer_args("lamb_step", param, grad, exp_avg, exp_avg_sq, segments, hp);
  const std::int64_t chunks = detail::cpu::optimizer_chunk_count(segments);
  QLIP_CHECK(static_cast<std::int64_t>(scratch.size()) >= 2 * chunks, "lamb_step: scratch holds ", scratch.size(),
             " doubles, need ", 2 * chunks, " (ops::lamb_scratch_size)");
  float* const p = param.data();
  const float* const g = grad.data();
  float* const m = exp_avg.data();
  float* const v = exp_avg_sq.data();
  double* const partial = scratch.data();  // [chunks][2]: ‖p‖², ‖r‖² of the chunk; then the chunk's −lr·trust

  detail::cpu::for_each_optimizer_chunk(
      segments, chunks, [&](std::int64_t chunk, std::size_t seg, std::int64_t begin, std::int64_t end) {
        const detail::LambScalars<float> c = detail::lamb_scalars<float>(segments[seg], hp);
        const bool may_idle = detail::cpu::idle_blocks_possible(c);
        double p_sq = 0.0, r_sq = 0.0;
        for (std::int64_t b = begin; b < end; b += kIdleBlock) {
          const std::int64_t e = std::min(end, b + kIdleBlock), n = e - b;
          if (may_idle && detail::cpu::all_bits_zero(g + b, n) && detail::cpu::all_bits_zero(m + b, n) &&
              detail::cpu::all_bits_zero(v + b, n)) {
            p_sq += detail::cpu::sum_of_squares_double(p + b, n);  // r = 0 here
            continue;
          }
          double bp = 0.0, br = 0.0;
#pragma omp simd reduction(+ : bp, br)
          for (std::int64_t i = b; i < e; ++i) {
            detail::lamb_moments<float>(g[i] * c.grad_scale, m[i], v[i], c);
            const float r = detail::lamb_direction<float>(p[i], m[i], v[i], c);
            bp += static_cast<double>(p[i]) * static_cast<double>(p[i]);
            br += static_cast<double>(r) * static_cast<double>(r);
          }
          p_sq += bp;
          r_sq += br;
        }
        partial[2 * chunk] = p_sq;
        partial[2 * chunk + 1] = r_sq;
      });

  // Per tensor: add its chunks' partial sums in order, then store −lr·trust in each of its chunks.
  std::int64_t chunk = 0;
  for (const OptimizerSegment& s : segments) {
    const std::int64_t n_chunks = detail::cpu::chunks_of(s.numel);
    double p_sq = 0.0, r_sq = 0.0;
    for (std::int64_t c = chunk; c < chunk + n_chunks; ++c) {
      p_sq += partial[2 * c];
      r_sq += partial[2 * c + 1];
    }
    const double neg_scale = -(s.lr * detail::lamb_trust_ratio(p_sq, r_sq));
    for (std::int64_t c = chunk; c < chunk + n_chunks; ++c) partial[2 * c] = neg_scale;
    chunk += n_chunks;
  }

  detail::cpu::for_each_optimizer_chunk(
      segments, chunks, [&](std::int64_t chunk_index, std::size_t seg, std::int64_t begin, std::int64_t end) {
        const detail::LambScalars<float> c = detail::lamb_scalars<float>(segments[seg], hp);
        const float neg_scale = static_cast<float>(partial[2 * chunk_index]);
        const bool may_idle = detail::cpu::idle_blocks_possible(c) && std::isfinite(neg_scale);
        for (std::int64_t b = begin; b < end; b += kIdleBlock) {
          const std::int64_t e = std::min(end, b + kIdleBlock), n = e - b;
          // m = v = 0 after pass 1: r = 0 and p + (−lr·trust)·0 = p.
          if (may_idle && detail::cpu::all_bits_zero(m + b, n) && detail::cpu::all_bits_zero(v + b, n)) continue;
#pragma omp simd
          for (std::int64_t i = b; i < e; ++i)
            p[i] = p[i] + neg_scale * detail::lamb_direction<float>(p[i], m[i], v[i], c);
        }
      });
}

/// Σ x², accumulated in double over a flat buffer (the global gradient norm's square). The buffer
/// is cut into a fixed number of parts by its length alone, each part summed in a fixed order and
/// the parts added in order, so the result is the same on any thread count. Squares of float
/// values cannot overflow a double, so a large but finite gradient gives a finite sum; any
/// non-finite element makes the sum non-finite.
/// @param x [n] (contiguous)
inline double sum_of_squares(cpu_backend, HostView<const float, 1> x) {
  const std::int64_t n = x.size(0);
  QLIP_CHECK(n <= 1 || x.stride(0) == 1, "sum_of_squares: x must be contiguous (stride 1), got stride ", x.stride(0));
  constexpr int kParts = 64;  // fixed, so the summation order does not depend on the thread count
  const int parts = static_cast<int>(std::min<std::int64_t>(kParts, (n + kOptimizerChunk - 1) / kOptimizerChunk));
  if (parts == 0) return 0.0;
  std::array<double, kParts> partial{};
  const float* const data = x.data();
#pragma omp parallel for schedule(static) num_threads(detail::cpu::threads_for(parts))
  for (int part = 0; part < parts; ++part) {
    const std::int64_t begin = n * part / parts, end = n * (part + 1) / parts;
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (std::int64_t i = begin; i < end; ++i) acc += static_cast<double>(data[i]) * static_cast<double>(data[i]);
    partial[part] = acc;
  }
  double total = 0.0;
  for (int part = 0; part < parts; ++part) total += partial[part];
  return total;
}

/// x ← x·factor over a flat buffer, in parallel (gradient clipping).
/// @param x [n] (contiguous)
inline void scale_in_place(cpu_backend, HostView<float, 1> x, float factor) {
  const std::int64_t n = x.size(0);
  QLIP_CHECK(n <= 1 || x.stride(0) == 1, "scale_in_place: x must be contiguous (stride 1), got stride ", x.stride(0));
  float* const data = x.data();
  const std::int64_t blocks = (n + kOptimizerChunk - 1) / kOptimizerChunk;
#pragma omp parallel for schedule(static) num_threads(detail::cpu::threads_for(blocks))
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::int64_t end = std::min(n, (b + 1) * kOptimizerChunk);
#pragma omp simd
    for (std::int64_t i = b * kOptimizerChunk; i < end; ++i) data[i] *= factor;
  }
}

}  // namespace ops
}  // namespace qlip
