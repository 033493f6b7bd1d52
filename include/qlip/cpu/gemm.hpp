/// @file gemm.hpp
/// @brief CPU backend GEMM and linear (forward, backward, row slabs) over the packed SGEMM of
///        sgemm.hpp: register-tiled micro-kernels, B packed into column panels, threads over rows
///        or panels.
///
/// Every transpose is a view: linear() reads a PyTorch weight w[N,K] as wᵀ[K,N] and packs it into
/// panels directly, linear_backward's dyᵀ and the weight are views too. Packing copies B once per
/// call into a per-thread scratch buffer; a weight used by many calls can be packed once
/// (PackedWeight) and passed to linear() instead.
///
/// Threading: ops started outside a parallel region use qlip::num_threads() threads (fewer for
/// small products); inside one (a caller's row region, conv2d's per-image loop)
/// they run on the calling thread (cpu/encoder_layer.hpp packs its weights itself and calls
/// linear_rows_packed). The sum over the depth runs in one fixed order, so a product
/// gives the same bits for any thread count.
///
/// Preconditions (not checked): the output does not overlap the inputs.
#pragma once

#include "qlip/cpu/build_check.hpp"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/cpu/sgemm.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/reference/gemm.hpp"

namespace qlip {
namespace detail::cpu {

/// c = beta·c over any strides (the K == 0 / alpha == 0 case); beta == 0 writes zeros, reads nothing.
inline void scale_matrix(HostView<float, 2> c, float beta) {
  for (std::int64_t i = 0; i < c.size(0); ++i)
    for (std::int64_t j = 0; j < c.size(1); ++j) c(i, j) = beta == 0.0f ? 0.0f : beta * c(i, j);
}

/// y = bias (or 0), then y (+)= … : the K == 0 case of linear.
inline void fill_bias_rows(HostView<const float, 1> bias, HostView<float, 2> y, bool accumulate) {
  for (std::int64_t i = 0; i < y.size(0); ++i)
    for (std::int64_t j = 0; j < y.size(1); ++j)
      y(i, j) = (accumulate ? y(i, j) : 0.0f) + (bias.empty() ? 0.0f : bias(j));
}

/// c = alpha·a·b + beta·c with shapes as ops::gemm, unchecked, for ops that call it per item of their
/// own parallel loop: inside an active region it runs on the calling thread, outside on the team.
inline void gemm_unchecked(HostView<const float, 2> a, HostView<const float, 2> b, HostView<float, 2> c, float alpha,
                        float beta) {
  if (c.numel() == 0) return;
  if (a.size(1) == 0 || alpha == 0.0f) {
    scale_matrix(c, beta);
    return;
  }
  sgemm::gemm(a, b, nullptr, c, alpha, beta, {}, sgemm::threads_for(a.size(0), a.size(1), b.size(1)));
}

/// Serial y (+)= x·wᵀ + bias on the calling thread, w given as the view wᵀ (packed here) or already
/// packed (`packed`, then w_t is ignored); shapes as linear_rows, unchecked.
inline void linear_rows_serial(HostView<const float, 2> x, HostView<const float, 2> w_t,
                               const sgemm::PackedPanels* packed, HostView<const float, 1> bias, HostView<float, 2> y,
                               bool accumulate) {
  if (y.numel() == 0) return;
  if (x.size(1) == 0) {
    fill_bias_rows(bias, y, accumulate);
    return;
  }
  sgemm::gemm(x, w_t, packed, y, 1.0f, accumulate ? 1.0f : 0.0f, bias, 1);
}

/// linear_rows from w already packed as the panels of wᵀ: for a parallel region that packed w
/// together once.
inline void linear_rows_packed(HostView<const float, 2> x, const sgemm::PackedPanels& w, HostView<const float, 1> bias,
                               HostView<float, 2> y, bool accumulate) {
  linear_rows_serial(x, {}, &w, bias, y, accumulate);
}


/// Rows of x up to which linear() takes the weight-streaming path instead of the packed SGEMM:
/// decoding (one token per sequence) multiplies a handful of rows by each weight once, so packing
/// the weight into panels first would read and write it twice more than the product reads it.
inline constexpr std::int64_t kStreamingRows = 8;

/// A weight element as float: itself, or a bf16 widened exactly (its 16 bits become the top half
/// of a float32).
inline float widen(float w) { return w; }
inline float widen(bf16 w) { return std::bit_cast<float>(static_cast<std::uint32_t>(w.bits) << 16); }

/// Lanes of partial sums per (row, weight row) pair in the streaming kernel: one 256-bit register.
inline constexpr int kStreamingLanes = 8;

#if defined(__AVX2__) && defined(__FMA__)
/// The bf16 kernel reads x de-interleaved (pair_rows): each 16-element chunk as its 8 even
/// elements, then its 8 odd ones, so that one 256-bit load of 16 bf16 weights widens with one
/// shift (the even weights, low halves of the 32-bit pairs) and one mask (the odd ones, already in
/// the high halves) instead of a zero-extend and a shift per 8.
inline constexpr bool kBf16PairedX = true;
#else
inline constexpr bool kBf16PairedX = false;
#endif
#if defined(__AVX2__) && defined(__FMA__)
/// The sum of v's eight lanes as ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)): a fixed order, in a
/// few independent vector adds (a sequential lane sum per accumulator costs a tile as much as a
/// third of its main loop at K = 768).
inline float sum_lanes(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
#endif

/// Elements per chunk of the bf16 kernel's paired x layout.
inline constexpr std::int64_t kPairChunk = 16;

/// x's rows in the bf16 kernel's layout, contiguous: every full 16-element chunk as its even then
/// its odd elements, the tail (K mod 16) as it is.
inline AlignedBuffer<float> pair_rows(HostView<const float, 2> x) {
  const std::int64_t m = x.size(0), k = x.size(1), body = k / kPairChunk * kPairChunk;
  AlignedBuffer<float> out(m * k, false);
  for (std::int64_t r = 0; r < m; ++r) {
    const float* src = x.data() + r * x.stride(0);
    float* dst = out.data() + r * k;
    for (std::int64_t j = 0; j < body; j += kPairChunk)
      for (std::int64_t i = 0; i < kPairChunk / 2; ++i) {
        dst[j + i] = src[j + 2 * i];
        dst[j + kPairChunk / 2 + i] = src[j + 2 * i + 1];
      }
    for (std::int64_t j = body; j < k; ++j) dst[j] = src[j];
  }
  return out;
}

/// out[r][c] = x_r·w_c over k elements for R rows of x and NW weight rows: lane-wise partial sums
/// (fixed order), then the lanes in order, then the tail. The R·NW accumulators stay in registers,
/// each weight chunk is loaded (and widened) once for the R rows and each x chunk once for the NW
/// weight rows: one pass over the NW weight rows. AVX2 + FMA explicitly (256-bit even where the
/// compiler's tuning prefers 128-bit vectors, and on AVX-512 machines: this loop is bound by memory,
/// not by vector width); plain loops otherwise. bf16 weights with AVX2 take x in the paired layout
/// (pair_rows) and chunks of 16.
template <int R, int NW, class W>
inline void streaming_tile(const float* const* x, const W* const* w, std::int64_t k, float (*out)[NW]) {
  constexpr int kL = kStreamingLanes;
  constexpr bool kPaired = std::is_same_v<W, bf16> && kBf16PairedX;
  const std::int64_t step = kPaired ? kPairChunk : kL;
  const std::int64_t body = k / step * step;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc[R][NW];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NW; ++c) acc[r][c] = _mm256_setzero_ps();
  if constexpr (kPaired) {
    const __m256 odd_mask = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0xffff0000u)));
    for (std::int64_t j = 0; j < body; j += kPairChunk) {
      __m256 even[NW], odd[NW];
      for (int c = 0; c < NW; ++c) {
        const __m256i pairs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[c] + j));
        even[c] = _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16));
        odd[c] = _mm256_and_ps(_mm256_castsi256_ps(pairs), odd_mask);
      }
      for (int r = 0; r < R; ++r) {
        const __m256 xe = _mm256_loadu_ps(x[r] + j), xo = _mm256_loadu_ps(x[r] + j + kL);
        for (int c = 0; c < NW; ++c) {
          acc[r][c] = _mm256_fmadd_ps(xe, even[c], acc[r][c]);
          acc[r][c] = _mm256_fmadd_ps(xo, odd[c], acc[r][c]);
        }
      }
    }
  } else {
    for (std::int64_t j = 0; j < body; j += kL) {
      __m256 wv[NW];
      for (int c = 0; c < NW; ++c) wv[c] = _mm256_loadu_ps(reinterpret_cast<const float*>(w[c]) + j);
      for (int r = 0; r < R; ++r) {
        const __m256 xv = _mm256_loadu_ps(x[r] + j);
        for (int c = 0; c < NW; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NW; ++c) out[r][c] = sum_lanes(acc[r][c]);
#else
  float lanes[R][NW][kL] = {};
  for (std::int64_t j = 0; j < body; j += kL)
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < NW; ++c)
        for (int l = 0; l < kL; ++l) lanes[r][c][l] = std::fma(x[r][j + l], widen(w[c][j + l]), lanes[r][c][l]);
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NW; ++c)
      out[r][c] = ((lanes[r][c][0] + lanes[r][c][4]) + (lanes[r][c][2] + lanes[r][c][6])) +
                  ((lanes[r][c][1] + lanes[r][c][5]) + (lanes[r][c][3] + lanes[r][c][7]));
#endif
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NW; ++c)
      for (std::int64_t j = body; j < k; ++j) out[r][c] += x[r][j] * widen(w[c][j]);
}

#if defined(__AVX2__) && defined(__FMA__)
/// How far ahead of its loads the one-row bf16 kernel prefetches its weight row: the hardware
/// prefetcher alone left that loop at ~70 % of the read bandwidth on a Zen 1 machine, 1–4 KiB
/// ahead brought it to the rate of the fp32 loop (docs/PERFORMANCE.md, Llama decoding).
inline constexpr int kBf16PrefetchBytes = 2048;

/// x·w over k elements for one row of x (paired layout) and one bf16 weight row: the decoding case
/// at batch 1, read as one sequential stream (tiles of several weight rows read several streams
/// and reached ~60 % of the bandwidth), with four accumulators over consecutive 16-element chunks
/// to hide the FMA latency; then the four in a fixed order, the lanes, the tail.
inline float bf16_row_dot(const float* x, const bf16* w, std::int64_t k) {
  const __m256 odd_mask = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0xffff0000u)));
  const auto even = [](__m256i p) { return _mm256_castsi256_ps(_mm256_slli_epi32(p, 16)); };
  const auto odd = [&](__m256i p) { return _mm256_and_ps(_mm256_castsi256_ps(p), odd_mask); };
  const auto load = [&](std::int64_t j) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + j)); };
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  constexpr std::int64_t kStep = 2 * kPairChunk;  // one 64-byte line of weights per iteration
  const std::int64_t body2 = k / kStep * kStep, body = k / kPairChunk * kPairChunk;
  for (std::int64_t j = 0; j < body2; j += kStep) {
    _mm_prefetch(reinterpret_cast<const char*>(w + j) + kBf16PrefetchBytes, _MM_HINT_T0);
    const __m256i p0 = load(j), p1 = load(j + kPairChunk);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + j), even(p0), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + j + 8), odd(p0), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + j + 16), even(p1), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + j + 24), odd(p1), a3);
  }
  if (body2 < body) {
    const __m256i p0 = load(body2);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + body2), even(p0), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + body2 + 8), odd(p0), a1);
  }
  float s = sum_lanes(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (std::int64_t j = body; j < k; ++j) s += x[j] * widen(w[j]);
  return s;
}
#endif

/// Rows [r0, r0 + R) of y for the NW weight rows starting at o.
template <int R, int NW, class W>
inline void streaming_block(HostView<const float, 2> x, HostView<const W, 2> w, HostView<const float, 1> bias,
                            HostView<float, 2> y, std::int64_t r0, std::int64_t o) {
  const float* xs[R];
  const W* ws[NW];
  for (int r = 0; r < R; ++r) xs[r] = x.data() + (r0 + r) * x.stride(0);
  for (int c = 0; c < NW; ++c) ws[c] = w.data() + (o + c) * w.stride(0);
  float sums[R][NW];
  streaming_tile<R, NW, W>(xs, ws, x.size(1), sums);
  for (int c = 0; c < NW; ++c) {
    const float b = bias.empty() ? 0.0f : bias(o + c);
    for (int r = 0; r < R; ++r) y(r0 + r, o + c) = sums[r][c] + b;
  }
}

/// Every row of x, in blocks of up to four, against the weight rows [o, o + NW): the weight tile is
/// read from memory once, and again from cache for each further row block.
template <int NW, class W>
inline void streaming_columns(HostView<const float, 2> x, HostView<const W, 2> w, HostView<const float, 1> bias,
                              HostView<float, 2> y, std::int64_t o) {
  const std::int64_t m = x.size(0);
  for (std::int64_t r0 = 0; r0 < m; r0 += 4) {
    switch (std::min<std::int64_t>(4, m - r0)) {
      case 1: streaming_block<1, NW>(x, w, bias, y, r0, o); break;
      case 2: streaming_block<2, NW>(x, w, bias, y, r0, o); break;
      case 3: streaming_block<3, NW>(x, w, bias, y, r0, o); break;
      default: streaming_block<4, NW>(x, w, bias, y, r0, o); break;
    }
  }
}

/// y[m, n] = x[m, :]·w[n, :] + b[n] for M ≤ kStreamingRows rows, reading each weight row from
/// memory once while the x rows stay in cache, in tiles of up to four x rows by NW weight rows
/// (4 for one row: four independent add chains hide the FMA latency; 3 otherwise: 12 accumulators
/// plus the loads fit 16 vector registers); threads over tiles of output columns. Each element is
/// summed in one fixed order, so the result is the same for any thread count. W is float or bf16
/// (widened in registers). x and w need unit stride along K.
template <class W>
inline void linear_streaming(HostView<const float, 2> x_in, HostView<const W, 2> w, HostView<const float, 1> bias,
                             HostView<float, 2> y, int threads) {
  AlignedBuffer<float> paired;
  HostView<const float, 2> x = x_in;
  if constexpr (std::is_same_v<W, bf16> && kBf16PairedX) {
    paired = pair_rows(x_in);
    x = HostView<const float, 2>(paired.data(), x_in.shape());
  }
  const std::int64_t n = w.size(0);
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (std::is_same_v<W, bf16>) {
    if (x.size(0) == 1) {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
      for (std::int64_t o = 0; o < n; ++o)
        y(0, o) = bf16_row_dot(x.data(), w.data() + o * w.stride(0), x.size(1)) + (bias.empty() ? 0.0f : bias(o));
      return;
    }
  }
#endif
  // Weight rows per tile: 4 for one row (four independent add chains), else 3 in fp32 (4 × 3
  // accumulators + 3 weights + 1 x fit 16 registers) and 2 in bf16 (each weight takes two
  // registers once widened).
  const int cols = x.size(0) == 1 ? 4 : (std::is_same_v<W, bf16> ? 2 : 3);
  const std::int64_t tiles = n / cols;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (std::int64_t t = 0; t < tiles; ++t) {
    switch (cols) {
      case 4: streaming_columns<4>(x, w, bias, y, t * cols); break;
      case 3: streaming_columns<3>(x, w, bias, y, t * cols); break;
      default: streaming_columns<2>(x, w, bias, y, t * cols); break;
    }
  }
  for (std::int64_t o = tiles * cols; o < n; ++o) streaming_columns<1>(x, w, bias, y, o);
}
}  // namespace detail::cpu

/// A linear layer's weight w[N, K] packed once as the panels of wᵀ, for inference: linear() with a
/// PackedWeight skips the per-call packing. It copies w; repack after changing w.
class PackedWeight {
 public:
  PackedWeight() = default;
  explicit PackedWeight(HostView<const float, 2> w)
      : n_(w.size(0)), k_(w.size(1)), data_(detail::cpu::sgemm::packed_size(w.size(1), w.size(0)), false) {
    detail::cpu::sgemm::pack_b_panels(w.transpose(0, 1), data_.data(), 0, detail::cpu::sgemm::panel_count(n_));
  }
  std::int64_t out_features() const { return n_; }
  std::int64_t in_features() const { return k_; }
  bool empty() const { return data_.size() == 0; }
  detail::cpu::sgemm::PackedPanels panels() const { return {data_.data(), k_, n_}; }

 private:
  std::int64_t n_ = 0, k_ = 0;
  AlignedBuffer<float> data_;
};

namespace ops {

/// c = alpha·a·b + beta·c (BLAS sgemm semantics). Any transpose is a transposed view:
/// gemm(cpu, a.transpose(0, 1), b, c) computes aᵀ·b with no copy.
/// beta == 0 does not read c (it may hold NaN garbage). c must not overlap a or b.
/// @param a [M, K]
/// @param b [K, N]
/// @param c [M, N] output (read too when beta ≠ 0)
/// @throws qlip::Error naming the argument whose shape does not fit
inline void gemm(cpu_backend, HostView<const float, 2> a, HostView<const float, 2> b, HostView<float, 2> c,
                 float alpha = 1.0f, float beta = 0.0f) {
  detail::check_gemm_shapes(a, b, c);
  detail::cpu::gemm_unchecked(a, b, c, alpha, beta);
}

/// y = x·wᵀ + bias (torch.nn.functional.linear). w is read in place as the matrix wᵀ and packed;
/// the bias is added in the GEMM's epilogue (no second pass).
/// @param x    [M, K]
/// @param w    [N, K] PyTorch layout (out_features × in_features)
/// @param bias [N], or an empty (default-constructed) view for no bias
/// @param y    [M, N] output (never read)
/// @throws qlip::Error naming the argument whose shape does not fit
inline void linear(cpu_backend, HostView<const float, 2> x, HostView<const float, 2> w,
                   HostView<const float, 1> bias, HostView<float, 2> y) {
  detail::check_linear_shapes(x, w, bias, y);
  if (y.numel() == 0) return;
  if (x.size(1) == 0) {
    detail::cpu::fill_bias_rows(bias, y, false);
    return;
  }
  if (x.size(0) <= detail::cpu::kStreamingRows && x.stride(1) == 1 && w.stride(1) == 1) {
    // Memory-bound: every thread helps once the weight is past a few hundred kB.
    const std::int64_t by_size = w.size(0) * w.size(1) / 65536;
    const int streaming = omp_in_parallel() ? 1 : static_cast<int>(std::clamp<std::int64_t>(by_size, 1, num_threads()));
    detail::cpu::linear_streaming(x, w, bias, y, streaming);
    return;
  }
  const int threads = detail::cpu::sgemm::threads_for(x.size(0), x.size(1), w.size(0));
  detail::cpu::sgemm::gemm(x, w.transpose(0, 1), nullptr, y, 1.0f, 0.0f, bias, threads);
}

/// y = x·wᵀ + bias with the weight stored in bfloat16 (the decoding option of nn/llama.hpp: half
/// the bytes per token of a memory-bound step). Each weight is widened exactly to float in
/// registers and the products are summed in float, so the only difference from linear() on the
/// fp32 weights is the weights' rounding to bf16. Up to kStreamingRows rows stream the weight once;
/// more rows (a prefill) widen blocks of weight rows into a float scratch and run the packed SGEMM.
/// @param x    [M, K]
/// @param w    [N, K] bf16, unit stride along K
/// @param bias [N] or empty
/// @param y    [M, N] output (never read)
/// @throws qlip::Error naming the argument whose shape does not fit
inline void linear(cpu_backend, HostView<const float, 2> x, HostView<const bf16, 2> w, HostView<const float, 1> bias,
                   HostView<float, 2> y) {
  detail::check_linear_shapes(x, w, bias, y);
  QLIP_CHECK(w.stride(1) == 1, "linear: bf16 weight needs unit stride along K, got strides [", w.stride(0), ", ",
             w.stride(1), "]");
  if (y.numel() == 0) return;
  if (x.size(1) == 0) {
    detail::cpu::fill_bias_rows(bias, y, false);
    return;
  }
  const std::int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  if (m <= detail::cpu::kStreamingRows && x.stride(1) == 1) {
    const int threads = omp_in_parallel() ? 1 : static_cast<int>(std::clamp<std::int64_t>(n * k / 131072, 1, num_threads()));
    detail::cpu::linear_streaming(x, w, bias, y, threads);
    return;
  }
  // 256 weight rows per block: ≤ 8 MiB of float scratch for K up to 8192, and N-wide enough that
  // the SGEMM's panels stay efficient.
  constexpr std::int64_t kBlock = 256;
  AlignedBuffer<float> wide(std::min(kBlock, n) * k, false);
  for (std::int64_t n0 = 0; n0 < n; n0 += kBlock) {
    const std::int64_t rows = std::min(kBlock, n - n0);
    for (std::int64_t o = 0; o < rows; ++o) {
      const bf16* src = w.data() + (n0 + o) * w.stride(0);
      float* dst = wide.data() + o * k;
#pragma omp simd
      for (std::int64_t j = 0; j < k; ++j) dst[j] = detail::cpu::widen(src[j]);
    }
    const HostView<const float, 2> block(wide.data(), {rows, k});
    const HostView<const float, 1> block_bias = bias.empty() ? bias : bias.slice(0, n0, n0 + rows);
    const int threads = detail::cpu::sgemm::threads_for(m, k, rows);
    detail::cpu::sgemm::gemm(x, block.transpose(0, 1), nullptr, y.slice(1, n0, n0 + rows), 1.0f, 0.0f, block_bias,
                             threads);
  }
}

/// linear() with a weight packed once (PackedWeight): the same result, no per-call packing.
/// @throws qlip::Error when x, bias or y do not fit the packed weight's shape
inline void linear(cpu_backend, HostView<const float, 2> x, const PackedWeight& w, HostView<const float, 1> bias,
                   HostView<float, 2> y) {
  QLIP_CHECK(!w.empty(), "linear: the packed weight is empty");
  QLIP_CHECK(x.size(1) == w.in_features(), "linear: x has shape ", shape_string<2>(x.shape()),
             ", expected [M, ", w.in_features(), "] to match the packed weight [", w.out_features(), ", ",
             w.in_features(), "]");
  if (!bias.empty()) check_shape(bias, {w.out_features()}, "linear: bias");
  check_shape(y, {x.size(0), w.out_features()}, "linear: y");
  if (y.numel() == 0) return;
  const detail::cpu::sgemm::PackedPanels panels = w.panels();
  const int threads = detail::cpu::sgemm::threads_for(x.size(0), x.size(1), w.out_features());
  detail::cpu::sgemm::gemm(x, {}, &panels, y, 1.0f, 0.0f, bias, threads);
}

/// Backward of linear (formulas and the empty-view rule as reference::linear_backward):
/// dx = dy·w (=), dw += dyᵀ·x, db += Σ_rows dy. Both products are packed GEMMs on views (no copies
/// of the transposes); each is threaded over its own output, so the result is deterministic and the
/// same for any thread count.
/// @param x  [M, K] the forward input
/// @param w  [N, K] the forward weight
/// @param dy [M, N] upstream gradient
/// @param dx [M, K] written, or empty; must not overlap dy or w
/// @param dw [N, K] accumulated, or empty
/// @param db [N] accumulated, or empty
inline void linear_backward(cpu_backend, HostView<const float, 2> x, HostView<const float, 2> w,
                            HostView<const float, 2> dy, HostView<float, 2> dx, HostView<float, 2> dw,
                            HostView<float, 1> db) {
  detail::check_linear_backward_shapes(x, w, dy, dx, dw, db);
  const std::int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  if (!dx.empty() && dx.numel() > 0) {
    if (n == 0) {
      detail::cpu::scale_matrix(dx, 0.0f);
    } else {
      detail::cpu::sgemm::gemm(dy, w, nullptr, dx, 1.0f, 0.0f, {}, detail::cpu::sgemm::threads_for(m, n, k));
    }
  }
  if (!dw.empty() && m > 0 && dw.numel() > 0) {
    detail::cpu::sgemm::gemm(dy.transpose(0, 1), x, nullptr, dw, 1.0f, 1.0f, {},
                             detail::cpu::sgemm::threads_for(n, m, k));
  }
  if (!db.empty()) {
    // Rows outer, columns inner: contiguous dy rows vectorise; one pass over dy.
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) db(j) += dy(i, j);
  }
}

/// Serial y (+)= x·wᵀ + bias on the calling thread, for row slabs inside a caller's parallel region.
/// accumulate: y ← y + x·wᵀ + bias (a residual add fused into the GEMM's epilogue).
/// Shapes as linear(); no checks beyond those (the caller checked the whole tensors).
inline void linear_rows(cpu_backend, HostView<const float, 2> x, HostView<const float, 2> w,
                        HostView<const float, 1> bias, HostView<float, 2> y, bool accumulate) {
  detail::cpu::linear_rows_serial(x, w.transpose(0, 1), nullptr, bias, y, accumulate);
}

}  // namespace ops
}  // namespace qlip
