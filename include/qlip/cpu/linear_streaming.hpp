/// @file linear_streaming.hpp
/// @brief linear() for a handful of rows (decoding: one token per sequence): each weight row is
///        streamed from memory once against the rows of x held in cache, fp32 or bf16 weights,
///        in register tiles written for AVX-512, AVX2 + FMA, or portable C++ (picked at compile
///        time from the target flags).
///
/// Packing the weight into SGEMM panels first would read and write it twice more than the product
/// reads it, and the step is bound by the bytes of the weights (docs/PERFORMANCE.md, Llama
/// decoding). Each output element is summed in one fixed order (lanes of partial sums along K,
/// the lanes in a fixed tree, then the tail), so the result is the same for any thread count; the
/// order differs between instruction sets (16 lanes with AVX-512, 8 otherwise).
#pragma once

#include "qlip/cpu/build_check.hpp"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "qlip/core/allocator.hpp"
#include "qlip/core/dtype.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::detail::cpu {

/// Rows of x up to which linear() takes the weight-streaming path instead of the packed SGEMM.
inline constexpr std::int64_t kStreamingRows = 8;

/// A weight element as float: itself, or a bf16 widened exactly (its 16 bits become the top half
/// of a float32).
inline float widen(float w) { return w; }
inline float widen(bf16 w) { return std::bit_cast<float>(static_cast<std::uint32_t>(w.bits) << 16); }

#if defined(__AVX512F__)
/// One zmm register of partial sums per (row, weight row) pair.
inline constexpr int kStreamingLanes = 16;
/// All kStreamingRows rows in one tile: 8 rows × 3 weight rows = 24 accumulators + 3 weights + 1 x
/// fit the 32 registers, so each weight chunk is loaded once for every row.
inline constexpr int kStreamingTileRows = 8;
inline constexpr const char* kStreamingIsa = "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
inline constexpr int kStreamingLanes = 8;
/// 4 rows × 3 weight rows = 12 accumulators + 3 weights + 1 x fit the 16 ymm registers.
inline constexpr int kStreamingTileRows = 4;
inline constexpr const char* kStreamingIsa = "avx2";
#else
inline constexpr int kStreamingLanes = 8;
inline constexpr int kStreamingTileRows = 4;
inline constexpr const char* kStreamingIsa = "portable";
#endif

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
/// The bf16 kernels read x de-interleaved (pair_rows): each chunk of 2·lanes elements as its even
/// elements, then its odd ones, so that one load of 2·lanes bf16 weights widens with one shift (the
/// even weights, low halves of the 32-bit pairs) and one mask (the odd ones, already in the high
/// halves) instead of a zero-extend and a shift per half.
inline constexpr bool kBf16PairedX = true;
#else
inline constexpr bool kBf16PairedX = false;
#endif
/// Elements per chunk of the bf16 kernels' paired x layout: one vector load of bf16 weights.
inline constexpr std::int64_t kPairChunk = 2 * kStreamingLanes;

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
#if defined(__AVX512F__)
/// The sum of v's sixteen lanes: lane i + lane i + 8, then the eight as sum_lanes(__m256).
inline float sum_lanes(__m512 v) {
  const __m256 lo = _mm512_castps512_ps256(v);
  const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  return sum_lanes(_mm256_add_ps(lo, hi));
}
#endif

/// x's rows in the bf16 kernels' layout, contiguous: every full kPairChunk-element chunk as its
/// even then its odd elements, the tail (K mod kPairChunk) as it is.
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

/// The vector operations the streaming tiles are written in, one set per instruction set: a float
/// vector of kStreamingLanes lanes, loads, FMA, and the bf16 widening of one load of kPairChunk
/// weights into its even and odd halves.
#if defined(__AVX512F__)
struct StreamVec {
  using F = __m512;
  static F zero() { return _mm512_setzero_ps(); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static void widen_pairs(const bf16* p, F& even, F& odd) {
    const __m512i pairs = _mm512_loadu_si512(p);
    even = _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16));
    odd = _mm512_castsi512_ps(_mm512_and_si512(pairs, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  }
};
#elif defined(__AVX2__) && defined(__FMA__)
/// 256-bit explicitly, even where the compiler's tuning prefers 128-bit vectors (it kept the
/// auto-vectorised tile's accumulators in memory on a Zen 1 machine).
struct StreamVec {
  using F = __m256;
  static F zero() { return _mm256_setzero_ps(); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static void widen_pairs(const bf16* p, F& even, F& odd) {
    const __m256i pairs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    even = _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16));
    const __m256 high_halves = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0xffff0000u)));
    odd = _mm256_and_ps(_mm256_castsi256_ps(pairs), high_halves);
  }
};
#endif

#if defined(__AVX512F__)
/// How far ahead of its loads each weight stream of a tile prefetches (one prefetch per 64-byte
/// line): at 8 rows of x a tile spends so many FMAs per weight line that the out-of-order window
/// no longer covers the memory latency; on a Zen 5 machine (2 threads, fp32, K = 768) 8 KiB ahead
/// took the tile from 12–19 GB/s to 35–40 GB/s, 2–4 KiB reached 28–33 (docs/PERFORMANCE.md).
inline constexpr int kTilePrefetchBytes = 8192;
#else
/// Not measured on an AVX2-only machine: the tiles there run as they were measured, without.
inline constexpr int kTilePrefetchBytes = 0;
#endif

/// Prefetches the line kTilePrefetchBytes past p (a no-op when that is 0 or without x86 SIMD).
template <class W>
inline void prefetch_ahead([[maybe_unused]] const W* p) {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  if constexpr (kTilePrefetchBytes > 0)
    _mm_prefetch(reinterpret_cast<const char*>(p) + kTilePrefetchBytes, _MM_HINT_T0);
#endif
}

/// out[r][c] = x_r·w_c over k elements for R rows of x and NW weight rows: lane-wise partial sums
/// (fixed order), then the lanes in order, then the tail. The R·NW accumulators stay in registers,
/// each weight chunk is loaded (and widened) once for the R rows and each x chunk once for the NW
/// weight rows: one pass over the NW weight rows. bf16 weights take x in the paired layout
/// (pair_rows) and chunks of kPairChunk.
template <int R, int NW, class W>
inline void streaming_tile(const float* const* x, const W* const* w, std::int64_t k, float (*out)[NW]) {
  constexpr int kL = kStreamingLanes;
  constexpr bool kPaired = std::is_same_v<W, bf16> && kBf16PairedX;
  const std::int64_t step = kPaired ? kPairChunk : kL;
  const std::int64_t body = k / step * step;
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  using V = StreamVec;
  typename V::F acc[R][NW];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NW; ++c) acc[r][c] = V::zero();
  if constexpr (kPaired) {
    for (std::int64_t j = 0; j < body; j += kPairChunk) {
      typename V::F even[NW], odd[NW];
      for (int c = 0; c < NW; ++c) prefetch_ahead(w[c] + j);
      for (int c = 0; c < NW; ++c) V::widen_pairs(w[c] + j, even[c], odd[c]);
      for (int r = 0; r < R; ++r) {
        const typename V::F xe = V::load(x[r] + j), xo = V::load(x[r] + j + kL);
        for (int c = 0; c < NW; ++c) {
          acc[r][c] = V::fma(xe, even[c], acc[r][c]);
          acc[r][c] = V::fma(xo, odd[c], acc[r][c]);
        }
      }
    }
  } else {
    for (std::int64_t j = 0; j < body; j += kL) {
      typename V::F wv[NW];
      for (int c = 0; c < NW; ++c) prefetch_ahead(w[c] + j);
      for (int c = 0; c < NW; ++c) wv[c] = V::load(reinterpret_cast<const float*>(w[c]) + j);
      for (int r = 0; r < R; ++r) {
        const typename V::F xv = V::load(x[r] + j);
        for (int c = 0; c < NW; ++c) acc[r][c] = V::fma(xv, wv[c], acc[r][c]);
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

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
/// How far ahead of its loads a one-row kernel prefetches its weight row: the hardware
/// prefetcher alone left that loop at ~70 % of the read bandwidth on a Zen 1 machine, 1–4 KiB
/// ahead brought it to the rate of the fp32 loop (docs/PERFORMANCE.md, Llama decoding).
inline constexpr int kRowPrefetchBytes = 2048;

/// x·w over k elements for one row of x (paired layout) and one bf16 weight row: the decoding case
/// at batch 1, read as one sequential stream (tiles of several weight rows read several streams
/// and reached ~60 % of the bandwidth on that machine), with four accumulators over two
/// consecutive chunks to hide the FMA latency; then the four in a fixed order, the lanes, the tail.
inline float bf16_row_dot(const float* x, const bf16* w, std::int64_t k) {
  using V = StreamVec;
  constexpr std::int64_t kL = kStreamingLanes;
  typename V::F a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
  constexpr std::int64_t kStep = 2 * kPairChunk;
  const std::int64_t body2 = k / kStep * kStep, body = k / kPairChunk * kPairChunk;
  for (std::int64_t j = 0; j < body2; j += kStep) {
    _mm_prefetch(reinterpret_cast<const char*>(w + j) + kRowPrefetchBytes, _MM_HINT_T0);
    if constexpr (kStep * 2 > 64)  // more than one cache line of weights per iteration
      _mm_prefetch(reinterpret_cast<const char*>(w + j) + kRowPrefetchBytes + 64, _MM_HINT_T0);
    typename V::F e0, o0, e1, o1;
    V::widen_pairs(w + j, e0, o0);
    V::widen_pairs(w + j + kPairChunk, e1, o1);
    a0 = V::fma(V::load(x + j), e0, a0);
    a1 = V::fma(V::load(x + j + kL), o0, a1);
    a2 = V::fma(V::load(x + j + 2 * kL), e1, a2);
    a3 = V::fma(V::load(x + j + 3 * kL), o1, a3);
  }
  if (body2 < body) {
    typename V::F e0, o0;
    V::widen_pairs(w + body2, e0, o0);
    a0 = V::fma(V::load(x + body2), e0, a0);
    a1 = V::fma(V::load(x + body2 + kL), o0, a1);
  }
  float s = sum_lanes(V::add(V::add(a0, a1), V::add(a2, a3)));
  for (std::int64_t j = body; j < k; ++j) s += x[j] * widen(w[j]);
  return s;
}
#endif

#if defined(__AVX512F__)
/// x·w over k elements for one row of x and one fp32 weight row, as one sequential stream: the
/// fp32 counterpart of bf16_row_dot (four accumulators over consecutive 16-element chunks, the
/// four in a fixed order, the lanes, the tail). On a Zen 5 machine at batch 1 it read 40–45 GB/s
/// where the 4-weight-row tile read 30–34.
inline float f32_row_dot(const float* x, const float* w, std::int64_t k) {
  using V = StreamVec;
  constexpr std::int64_t kL = kStreamingLanes, kStep = 4 * kL;
  typename V::F a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
  const std::int64_t body4 = k / kStep * kStep, body = k / kL * kL;
  for (std::int64_t j = 0; j < body4; j += kStep) {
    for (int line = 0; line < 4; ++line)
      _mm_prefetch(reinterpret_cast<const char*>(w + j + line * kL) + kRowPrefetchBytes, _MM_HINT_T0);
    a0 = V::fma(V::load(x + j), V::load(w + j), a0);
    a1 = V::fma(V::load(x + j + kL), V::load(w + j + kL), a1);
    a2 = V::fma(V::load(x + j + 2 * kL), V::load(w + j + 2 * kL), a2);
    a3 = V::fma(V::load(x + j + 3 * kL), V::load(w + j + 3 * kL), a3);
  }
  for (std::int64_t j = body4; j < body; j += kL) a0 = V::fma(V::load(x + j), V::load(w + j), a0);
  float s = sum_lanes(V::add(V::add(a0, a1), V::add(a2, a3)));
  for (std::int64_t j = body; j < k; ++j) s += x[j] * w[j];
  return s;
}
#endif

/// Whether one row of x streams each weight row alone (row_dot) rather than in a tile: bf16 with
/// x86 SIMD, fp32 with AVX-512 (measured there; the AVX2 fp32 tile keeps its measured form).
template <class W>
inline constexpr bool kOneRowStream =
#if defined(__AVX512F__)
    true;
#elif defined(__AVX2__) && defined(__FMA__)
    std::is_same_v<W, bf16>;
#else
    false;
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

/// Rows [r0, r0 + rows) against the weight rows [o, o + NW), rows ≤ kStreamingTileRows.
template <int NW, class W, int R = kStreamingTileRows>
inline void streaming_rows(HostView<const float, 2> x, HostView<const W, 2> w, HostView<const float, 1> bias,
                           HostView<float, 2> y, std::int64_t r0, std::int64_t rows, std::int64_t o) {
  if constexpr (R > 1) {
    if (rows < R) return streaming_rows<NW, W, R - 1>(x, w, bias, y, r0, rows, o);
  }
  streaming_block<R, NW>(x, w, bias, y, r0, o);
}

/// Every row of x, in blocks of up to kStreamingTileRows, against the weight rows [o, o + NW): the
/// weight tile is read from memory once, and again from cache for each further row block.
template <int NW, class W>
inline void streaming_columns(HostView<const float, 2> x, HostView<const W, 2> w, HostView<const float, 1> bias,
                              HostView<float, 2> y, std::int64_t o) {
  const std::int64_t m = x.size(0);
  for (std::int64_t r0 = 0; r0 < m; r0 += kStreamingTileRows)
    streaming_rows<NW>(x, w, bias, y, r0, std::min<std::int64_t>(kStreamingTileRows, m - r0), o);
}

/// Weight rows per tile for m rows of x over k. AVX-512 (all m rows in one tile): 1 while the m
/// rows of x fit half of a 48 KiB L1 (one weight stream, the x loads hit L1), else 2 (each x load
/// from L2 serves two weight rows); on a Zen 5 machine at m = 8 these read 35–40 GB/s at K = 768
/// and 21–25 at K = 2048, where the 8 × 3 tile read 12–19 and 22–24. AVX2 and portable (tiles of
/// 4 rows): 4 for one row (four independent add chains hide the FMA latency), else 3 in fp32 (4 × 3
/// accumulators + 3 weights + 1 x fit 16 registers) and 2 in bf16 (each weight widens into two).
template <class W>
inline int streaming_tile_columns([[maybe_unused]] std::int64_t m, [[maybe_unused]] std::int64_t k) {
#if defined(__AVX512F__)
  constexpr std::int64_t kL1HalfBytes = 24 * 1024;
  return m * k * static_cast<std::int64_t>(sizeof(float)) <= kL1HalfBytes ? 1 : 2;
#else
  return m == 1 ? 4 : (std::is_same_v<W, bf16> ? 2 : 3);
#endif
}

/// y[m, n] = x[m, :]·w[n, :] + b[n] for M ≤ kStreamingRows rows, reading each weight row from
/// memory once while the x rows stay in cache: one row as one stream per weight row where
/// kOneRowStream, else tiles of up to kStreamingTileRows x rows by streaming_tile_columns weight
/// rows; threads over tiles of output columns. Each element is summed in one fixed order, so the
/// result is the same for any thread count. W is float or bf16 (widened in registers). x and w
/// need unit stride along K.
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
  if constexpr (kOneRowStream<W>) {
    if (x.size(0) == 1) {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
      for (std::int64_t o = 0; o < n; ++o) {
        const W* row = w.data() + o * w.stride(0);
        float dot = 0.0f;
        if constexpr (std::is_same_v<W, bf16>) dot = bf16_row_dot(x.data(), row, x.size(1));
#if defined(__AVX512F__)
        else dot = f32_row_dot(x.data(), row, x.size(1));
#endif
        y(0, o) = dot + (bias.empty() ? 0.0f : bias(o));
      }
      return;
    }
  }
  const int cols = streaming_tile_columns<W>(x.size(0), x.size(1));
  const std::int64_t tiles = n / cols;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (std::int64_t t = 0; t < tiles; ++t) {
    switch (cols) {
#if !defined(__AVX512F__)
      case 4: streaming_columns<4>(x, w, bias, y, t * cols); break;
      case 3: streaming_columns<3>(x, w, bias, y, t * cols); break;
#endif
      case 2: streaming_columns<2>(x, w, bias, y, t * cols); break;
      default: streaming_columns<1>(x, w, bias, y, t * cols); break;
    }
  }
  for (std::int64_t o = tiles * cols; o < n; ++o) streaming_columns<1>(x, w, bias, y, o);
}

}  // namespace qlip::detail::cpu
