/// @file sgemm_kernel.hpp
/// @brief The register-tiled SGEMM micro-kernel of the CPU backend, one per instruction set, picked
///        at compile time from the target flags: AVX-512 (12 × 32 tile), AVX2 + FMA (6 × 16), or
///        portable C++ (4 × 8) for anything else.
///
/// A micro-kernel computes one tile C[rows, NR] (rows ≤ MR) from a packed A micro-panel (kc steps
/// of MR values: A[i, p] at a[p·MR + i]) and a packed B micro-panel (kc steps of NR values: B[p, j]
/// at b[p·NR + j]). The tile lives in registers for the whole depth: AVX-512 holds 12 × 2
/// accumulators + 2 B vectors of its 32 zmm registers, and each A value is broadcast straight from
/// memory into the FMA, so one depth step is 2 loads of B, 12 broadcasts and 24 FMAs. The sum over
/// the depth runs in the same order for every tile, whatever the blocking around it or the thread
/// count, so results do not depend on how the output was split between threads.
///
/// Epilogue (per element, n_valid columns written, the rest untouched):
///   c = alpha·acc + (beta ≠ 0 ? beta·c : 0) + (bias ? bias[j] : 0)
/// beta == 0 never reads c, so c may hold garbage (NaN) on entry.
#pragma once

#include "qlip/cpu/build_check.hpp"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace qlip::detail::cpu::sgemm {

/// Arguments of the epilogue shared by every kernel.
struct TileEpilogue {
  float alpha = 1.0f;
  float beta = 0.0f;            ///< 0: c is written, never read
  const float* bias = nullptr;  ///< NR contiguous values for this tile's columns, or null
};

/// Runs step() kc times, four per loop trip: the loop's own instructions then stop competing with
/// the FMAs (measured on the AVX-512 12 × 32 kernel: ~0.80 of the FMA peak with one step per trip,
/// ~0.88–0.98 with four).
template <class Step>
[[gnu::always_inline]] inline void depth_loop(std::int64_t kc, Step& step) {
  std::int64_t p = 0;
  for (; p + 4 <= kc; p += 4) {
    step();
    step();
    step();
    step();
  }
  for (; p < kc; ++p) step();
}

#if defined(__AVX512F__)

inline constexpr int kMR = 12;  ///< rows of a register tile
inline constexpr int kNR = 32;  ///< columns of a register tile (2 zmm)
inline constexpr const char* kIsaName = "avx512";

/// Mask of the first n lanes (0 ≤ n ≤ 16 after clamping) of a 16-lane vector.
inline __mmask16 lane_mask(int n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : n <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << n) - 1u);
}

template <int Rows>
inline void micro_kernel(std::int64_t kc, const float* __restrict a, const float* __restrict b, float* __restrict c,
                         std::int64_t ldc, int n_valid, const TileEpilogue& ep) {
  static_assert(Rows >= 1 && Rows <= kMR);
  // The tile of c is touched only after the depth loop; fetching its lines now hides their miss
  // latency behind the FMAs (rows of a large c are 4 KB multiples apart and rarely cached).
#pragma GCC unroll 12
  for (int r = 0; r < Rows; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 16), _MM_HINT_T0);
  }
  __m512 acc0[Rows], acc1[Rows];
#pragma GCC unroll 12
  for (int r = 0; r < Rows; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  auto step = [&] {
    const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 12
    for (int r = 0; r < Rows; ++r) {
      const __m512 ar = _mm512_set1_ps(a[r]);
      acc0[r] = _mm512_fmadd_ps(ar, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(ar, b1, acc1[r]);
    }
    a += kMR;
    b += kNR;
  };
  depth_loop(kc, step);
  const __mmask16 m0 = lane_mask(n_valid), m1 = lane_mask(n_valid - 16);
  const __m512 alpha = _mm512_set1_ps(ep.alpha), beta = _mm512_set1_ps(ep.beta);
  __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
  if (ep.bias != nullptr) {
    bias0 = _mm512_maskz_loadu_ps(m0, ep.bias);
    bias1 = _mm512_maskz_loadu_ps(m1, ep.bias + 16);
  }
#pragma GCC unroll 12
  for (int r = 0; r < Rows; ++r) {
    float* row = c + r * ldc;
    __m512 v0 = _mm512_fmadd_ps(alpha, acc0[r], bias0), v1 = _mm512_fmadd_ps(alpha, acc1[r], bias1);
    if (ep.beta != 0.0f) {
      v0 = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(m0, row), v0);
      v1 = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(m1, row + 16), v1);
    }
    _mm512_mask_storeu_ps(row, m0, v0);
    _mm512_mask_storeu_ps(row + 16, m1, v1);
  }
}

#elif defined(__AVX2__) && defined(__FMA__)

inline constexpr int kMR = 6;
inline constexpr int kNR = 16;  ///< 2 ymm
inline constexpr const char* kIsaName = "avx2";

/// Lane mask (all-ones int lanes) of the first n of 8 lanes.
inline __m256i lane_mask(int n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

template <int Rows>
inline void micro_kernel(std::int64_t kc, const float* __restrict a, const float* __restrict b, float* __restrict c,
                         std::int64_t ldc, int n_valid, const TileEpilogue& ep) {
  static_assert(Rows >= 1 && Rows <= kMR);
  __m256 acc0[Rows], acc1[Rows];
#pragma GCC unroll 6
  for (int r = 0; r < Rows; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
  auto step = [&] {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
    for (int r = 0; r < Rows; ++r) {
      const __m256 ar = _mm256_broadcast_ss(a + r);
      acc0[r] = _mm256_fmadd_ps(ar, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(ar, b1, acc1[r]);
    }
    a += kMR;
    b += kNR;
  };
  depth_loop(kc, step);
  const __m256i m0 = lane_mask(n_valid), m1 = lane_mask(n_valid - 8);
  const __m256 alpha = _mm256_set1_ps(ep.alpha), beta = _mm256_set1_ps(ep.beta);
  __m256 bias0 = _mm256_setzero_ps(), bias1 = _mm256_setzero_ps();
  if (ep.bias != nullptr) {
    bias0 = _mm256_maskload_ps(ep.bias, m0);
    bias1 = _mm256_maskload_ps(ep.bias + 8, m1);
  }
#pragma GCC unroll 6
  for (int r = 0; r < Rows; ++r) {
    float* row = c + r * ldc;
    __m256 v0 = _mm256_fmadd_ps(alpha, acc0[r], bias0), v1 = _mm256_fmadd_ps(alpha, acc1[r], bias1);
    if (ep.beta != 0.0f) {
      v0 = _mm256_fmadd_ps(beta, _mm256_maskload_ps(row, m0), v0);
      v1 = _mm256_fmadd_ps(beta, _mm256_maskload_ps(row + 8, m1), v1);
    }
    _mm256_maskstore_ps(row, m0, v0);
    _mm256_maskstore_ps(row + 8, m1, v1);
  }
}

#else

inline constexpr int kMR = 4;
inline constexpr int kNR = 8;
inline constexpr const char* kIsaName = "portable";

/// Plain loops over a small tile; the compiler vectorises the column loop for whatever the target
/// has (SSE2 on a baseline x86-64, NEON on AArch64).
template <int Rows>
inline void micro_kernel(std::int64_t kc, const float* __restrict a, const float* __restrict b, float* __restrict c,
                         std::int64_t ldc, int n_valid, const TileEpilogue& ep) {
  static_assert(Rows >= 1 && Rows <= kMR);
  float acc[Rows][kNR] = {};
  for (std::int64_t p = 0; p < kc; ++p) {
    for (int r = 0; r < Rows; ++r)
      for (int j = 0; j < kNR; ++j) acc[r][j] += a[r] * b[j];
    a += kMR;
    b += kNR;
  }
  for (int r = 0; r < Rows; ++r) {
    float* row = c + r * ldc;
    for (int j = 0; j < n_valid; ++j) {
      float v = ep.alpha * acc[r][j] + (ep.bias != nullptr ? ep.bias[j] : 0.0f);
      if (ep.beta != 0.0f) v += ep.beta * row[j];
      row[j] = v;
    }
  }
}

#endif

/// micro_kernel<1> … micro_kernel<kMR>: the row count is a template argument, so a tail tile keeps its
/// accumulators in registers too.
template <int... R>
constexpr auto make_tile_kernels(std::integer_sequence<int, R...>) {
  return std::array{&micro_kernel<R + 1>...};
}
inline constexpr auto kTileKernels = make_tile_kernels(std::make_integer_sequence<int, kMR>{});

/// Runs the kernel for a tile of `rows` (1 … kMR) rows.
inline void run_tile(int rows, std::int64_t kc, const float* a, const float* b, float* c, std::int64_t ldc,
                     int n_valid, const TileEpilogue& ep) {
  kTileKernels[static_cast<std::size_t>(rows - 1)](kc, a, b, c, ldc, n_valid, ep);
}

}  // namespace qlip::detail::cpu::sgemm
