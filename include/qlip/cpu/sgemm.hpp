/// @file sgemm.hpp
/// @brief The CPU backend's packed SGEMM: c = alpha·a·b + beta·c (+ bias per column) over strided
///        views, with B packed into column panels, cache blocking for L1/L2, and threads over the
///        rows or the column panels of c. The micro-kernels are in sgemm_kernel.hpp.
///
/// Blocking (loops outer to inner): column blocks of kNCPanels panels → depth blocks of kKC → row
/// tiles of kMR (A micro-panel packed to kMR × kKC, 12 KB on AVX-512: stays in L1) → panels of the
/// column block (B block kKC × kNCPanels·kNR, 1 MB: stays in L2, streamed into the kernel).
///
/// B is packed once per call into column panels (PackedPanels; any strides, so the three transposes
/// of training, a·b, a·bᵀ and aᵀ·b, are views, never copies of the caller's data). A weight used for
/// many calls can be packed once (pack_b) and passed as PackedPanels: no per-call packing at all.
///
/// Threads: with enough rows, each thread takes a row range (whole tiles) and all threads pack
/// disjoint panels of B into one shared buffer, meeting once at a barrier; with few rows (decoding,
/// narrow products) each thread takes a range of panels, packs only those and never waits. Every
/// output element is summed over the depth in the same order either way, so the result does not
/// depend on the thread count.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "qlip/core/allocator.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/cpu/sgemm_kernel.hpp"
#include "qlip/cpu/threading.hpp"

namespace qlip::detail::cpu::sgemm {

inline constexpr std::int64_t kKC = 256;        ///< depth block
inline constexpr std::int64_t kNCPanels = 32;   ///< panels per column block (kKC × 1024 floats on AVX-512)
inline constexpr std::int64_t kRowsPerThread = 4 * kMR;  ///< fewer rows per thread: split the panels instead

/// Number of kNR-wide column panels covering n columns.
inline std::int64_t panel_count(std::int64_t n) { return (n + kNR - 1) / kNR; }

/// Floats a packed [k, n] matrix occupies.
inline std::int64_t packed_size(std::int64_t k, std::int64_t n) { return panel_count(n) * k * kNR; }

/// A [k, n] matrix packed as column panels: panel q holds columns [q·kNR, q·kNR + kNR) for every
/// depth p at data[(q·k + p)·kNR + j], zero past column n. Does not own data.
struct PackedPanels {
  const float* data = nullptr;
  std::int64_t k = 0, n = 0;
  /// The kc × kNR micro-panel of panel q starting at depth p.
  const float* panel(std::int64_t q, std::int64_t p) const { return data + (q * k + p) * kNR; }
};

#if defined(__AVX512F__)
/// dst[i·ld_dst + j] = src[j·ld_src + i] for a 16 × 16 block: 16 loads, three rounds of shuffles,
/// 16 stores (scalar transposing stores run at ~2.5 GB/s, a weight read from DRAM ~4× faster).
inline void transpose_16x16(const float* src, std::int64_t ld_src, float* dst, std::int64_t ld_dst) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ld_src);
  for (int i = 0; i < 8; ++i) {  // per 128-bit lane: pairs of rows interleaved
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // r[4i + c], lane L: rows 4i..4i+3 of column 4L + c
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {  // 128-bit lanes regrouped: columns c, 4+c, 8+c, 12+c
    t[c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
    t[4 + c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xDD);
    t[8 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
    t[12 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xDD);
  }
  for (int c = 0; c < 4; ++c) {
    _mm512_storeu_ps(dst + c * ld_dst, _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88));
    _mm512_storeu_ps(dst + (8 + c) * ld_dst, _mm512_shuffle_f32x4(t[c], t[8 + c], 0xDD));
    _mm512_storeu_ps(dst + (4 + c) * ld_dst, _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0x88));
    _mm512_storeu_ps(dst + (12 + c) * ld_dst, _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0xDD));
  }
}
#endif

/// Packs panels [q0, q1) of b [k, n] (any strides) into dst, which holds all panel_count(n) panels.
inline void pack_b_panels(const HostView<const float, 2>& b, float* dst, std::int64_t q0, std::int64_t q1) {
  const std::int64_t k = b.size(0), n = b.size(1), rs = b.stride(0), cs = b.stride(1);
  const float* src = b.data();
  constexpr std::int64_t kDepthChunk = 64;  // chunk of a transposed panel written at a time (8 KB)
  for (std::int64_t q = q0; q < q1; ++q) {
    float* out = dst + q * k * kNR;
    const std::int64_t j0 = q * kNR, nv = std::min<std::int64_t>(kNR, n - j0);
    if (nv < kNR) std::memset(out, 0, static_cast<std::size_t>(k * kNR) * sizeof(float));
    if (cs == 1 || nv == 1) {
      // Rows of b are contiguous: each depth step is one copy of nv values.
      for (std::int64_t p = 0; p < k; ++p) std::memcpy(out + p * kNR, src + p * rs + j0 * cs, static_cast<std::size_t>(nv) * sizeof(float));
      continue;
    }
    // Columns are the unit-stride direction (a transposed view, e.g. a weight wᵀ).
    std::int64_t p_done = 0;
#if defined(__AVX512F__)
    if (rs == 1 && nv == kNR) {
      // Whole 16 × 16 blocks transposed in registers; the depth tail below.
      p_done = k / 16 * 16;
      for (std::int64_t p = 0; p < p_done; p += 16)
        for (std::int64_t h = 0; h < kNR; h += 16) transpose_16x16(src + (j0 + h) * cs + p, cs, out + p * kNR + h, kNR);
    }
#endif
    // Read each column along the depth, in chunks so the written part of the panel stays in L1.
    for (std::int64_t p0 = p_done; p0 < k; p0 += kDepthChunk) {
      const std::int64_t p1 = std::min(k, p0 + kDepthChunk);
      for (std::int64_t j = 0; j < nv; ++j) {
        const float* col = src + (j0 + j) * cs;
        for (std::int64_t p = p0; p < p1; ++p) out[p * kNR + j] = col[p * rs];
      }
    }
  }
}

/// Packs the calling thread's share (thread t of nt) of b's panels into dst: for a caller that
/// packs one B together inside its own parallel region and meets at a barrier before using it.
inline void pack_b_share(const HostView<const float, 2>& b, float* dst, int t, int nt) {
  const auto [q0, q1] = split_range(panel_count(b.size(1)), t, nt);
  pack_b_panels(b, dst, q0, q1);
}

/// Packs rows [i0, i0 + rows) and depths [p0, p0 + kc) of a (any strides) as dst[p·kMR + r].
inline void pack_a_panel(const HostView<const float, 2>& a, std::int64_t i0, int rows, std::int64_t p0,
                         std::int64_t kc, float* dst) {
  const std::int64_t rs = a.stride(0), cs = a.stride(1);
  const float* src = a.data() + i0 * rs + p0 * cs;
  if (cs == 1 && rows > 1) {
    for (int r = 0; r < rows; ++r) {
      const float* row = src + r * rs;
      for (std::int64_t p = 0; p < kc; ++p) dst[p * kMR + r] = row[p];
    }
  } else {
    for (std::int64_t p = 0; p < kc; ++p) {
      const float* col = src + p * cs;
      for (int r = 0; r < rows; ++r) dst[p * kMR + r] = col[r * rs];
    }
  }
}

/// The product for rows [i0, i1) and panels [q0, q1) of c, on the calling thread, from packed b.
/// c has unit column stride (leading dimension ldc); bias is contiguous or null.
struct Problem {
  HostView<const float, 2> a;
  PackedPanels b;
  float* c;
  std::int64_t ldc;
  float alpha, beta;
  const float* bias;
};

inline void compute_block(const Problem& pr, std::int64_t i0, std::int64_t i1, std::int64_t q0, std::int64_t q1) {
  alignas(64) float a_pack[kMR * kKC];
  const std::int64_t depth = pr.b.k, n = pr.b.n;
  for (std::int64_t qc = q0; qc < q1; qc += kNCPanels) {
    const std::int64_t qe = std::min(q1, qc + kNCPanels);
    for (std::int64_t pc = 0; pc < depth; pc += kKC) {
      const std::int64_t kc = std::min(kKC, depth - pc);
      // The first depth block applies beta and the bias; later ones accumulate onto it.
      TileEpilogue ep{pr.alpha, pc == 0 ? pr.beta : 1.0f, nullptr};
      for (std::int64_t i = i0; i < i1; i += kMR) {
        const int rows = static_cast<int>(std::min<std::int64_t>(kMR, i1 - i));
        pack_a_panel(pr.a, i, rows, pc, kc, a_pack);
        for (std::int64_t q = qc; q < qe; ++q) {
          const std::int64_t j0 = q * kNR;
          ep.bias = pc == 0 && pr.bias != nullptr ? pr.bias + j0 : nullptr;
          run_tile(rows, kc, a_pack, pr.b.panel(q, pc), pr.c + i * pr.ldc + j0, pr.ldc,
                   static_cast<int>(std::min<std::int64_t>(kNR, n - j0)), ep);
        }
      }
    }
  }
}

/// Growable per-thread scratch for packing B: allocated once per thread and size, not per call
/// (a fresh multi-megabyte buffer per GEMM costs page faults that measured more than the packing).
inline float* b_scratch(std::int64_t floats) {
  thread_local AlignedBuffer<float> buffer;
  if (buffer.size() < floats) buffer = AlignedBuffer<float>(floats, false);
  return buffer.data();
}

/// Threads worth using for an [m, k]·[k, n] product: one per ~0.5 MFLOP (as before), at most
/// num_threads(), one inside a parallel region.
inline int threads_for(std::int64_t m, std::int64_t k, std::int64_t n) {
  if (omp_in_parallel()) return 1;
  const double work = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const auto by_work = static_cast<std::int64_t>(work / 5.0e5);
  return static_cast<int>(std::clamp<std::int64_t>(by_work, 1, std::max(num_threads(), 1)));
}

/// Runs pr over all of c with `threads` threads; when pack_from is given, B is packed from it into
/// pr.b (whose data must then be writable scratch of packed_size floats) inside the same region.
inline void run(Problem pr, const HostView<const float, 2>* pack_from, int threads) {
  const std::int64_t m = pr.a.size(0), panels = panel_count(pr.b.n);
  float* pack_dst = const_cast<float*>(pr.b.data);
  if (threads <= 1) {
    if (pack_from != nullptr) pack_b_panels(*pack_from, pack_dst, 0, panels);
    compute_block(pr, 0, m, 0, panels);
    return;
  }
  const bool by_rows = m >= kRowsPerThread * threads;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const auto [q0, q1] = split_range(panels, t, nt);
    if (by_rows) {
      if (pack_from != nullptr) {
        pack_b_panels(*pack_from, pack_dst, q0, q1);
#pragma omp barrier
      }
      const auto [i0, i1] = split_range(m, t, nt, kMR);
      if (i1 > i0) compute_block(pr, i0, i1, 0, panels);
    } else if (q1 > q0) {
      if (pack_from != nullptr) pack_b_panels(*pack_from, pack_dst, q0, q1);
      compute_block(pr, 0, m, q0, q1);
    }
  }
}

/// c = alpha·a·b + beta·c + bias (bias per column, or null; stride bias_stride). Shapes checked by
/// the caller, M, N, K ≥ 1. b is packed into per-thread scratch unless `packed` is given (then b is
/// ignored). A c without unit column stride is computed in a temporary and copied back.
inline void gemm(HostView<const float, 2> a, HostView<const float, 2> b, const PackedPanels* packed,
                 HostView<float, 2> c, float alpha, float beta, HostView<const float, 1> bias, int threads) {
  const std::int64_t m = c.size(0), n = c.size(1), k = a.size(1);
  AlignedBuffer<float> bias_tmp, c_tmp;
  const float* bias_ptr = nullptr;
  if (!bias.empty()) {
    if (bias.stride(0) == 1 || n == 1) {
      bias_ptr = bias.data();
    } else {
      bias_tmp = AlignedBuffer<float>(n, false);
      for (std::int64_t j = 0; j < n; ++j) bias_tmp.data()[j] = bias(j);
      bias_ptr = bias_tmp.data();
    }
  }
  HostView<float, 2> c_work = c;
  const bool c_unit_cols = n == 1 || c.stride(1) == 1;
  if (!c_unit_cols) {
    c_tmp = AlignedBuffer<float>(m * n, false);
    c_work = HostView<float, 2>(c_tmp.data(), {m, n});
    if (beta != 0.0f)
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < n; ++j) c_work(i, j) = c(i, j);
  }
  const std::int64_t ldc = m == 1 ? n : c_work.stride(0);
  Problem pr{a, {}, c_work.data(), ldc, alpha, beta, bias_ptr};
  if (packed != nullptr) {
    pr.b = *packed;
    run(pr, nullptr, threads);
  } else {
    pr.b = PackedPanels{b_scratch(packed_size(k, n)), k, n};
    run(pr, &b, threads);
  }
  if (!c_unit_cols)
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) c(i, j) = c_work(i, j);
}

}  // namespace qlip::detail::cpu::sgemm
