/// @file bsq.hpp
/// @brief Reference Binary Spherical Quantization pieces (MODEL.md §2.6, §3.1, §3.4): sign quantisation,
///        and the exact integer conversions between bits, full indices and group indices.
///
/// Bit order (MODEL.md §3.4): dimension 0 is the most significant bit, index = Σ_i bit_i·2^(L−1−i);
/// group j covers dims [j·g, (j+1)·g) and group 0 is the most significant chunk. Everything is
/// integer shifts — never the float32 sum of the official Python, which rounds indices ≥ 2^24.
/// Bits are bytes; any non-zero byte reads as a 1 bit, and the ops write 0 or 1.
#pragma once

#include <cstdint>

#include "qlip/core/error.hpp"
#include "qlip/core/math.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::detail {
inline void bsq_check_code_width(std::int64_t l, const char* what) {
  QLIP_CHECK(l >= 1 && l <= 32, what, ": bits per code must be in [1, 32] to fit a uint32 index, got ", l);
}
inline void bsq_check_index_fits(std::uint32_t index, std::int64_t l, std::int64_t row, const char* what) {
  QLIP_CHECK(l >= 32 || (index >> l) == 0u, what, ": index ", index, " of row ", row, " does not fit in ",
             l, " bits");
}
/// Checks bits_per_code / group_size and returns the group count G = L/g.
inline std::int64_t bsq_check_groups(std::int64_t l, std::int64_t g, const char* what) {
  bsq_check_code_width(l, what);
  QLIP_CHECK(g >= 1 && l % g == 0, what, ": group size ", g, " does not divide bits per code ", l);
  return l / g;
}
inline void bsq_check_group_index_fits(std::uint32_t sub, int group_size, std::int64_t row, std::int64_t col) {
  QLIP_CHECK(group_size >= 32 || (sub >> group_size) == 0u, "group_indices_to_index: group index ", sub, " at [",
             row, ", ", col, "] does not fit in ", group_size, " bits");
}

// Argument checks of each BSQ op, shared by every backend. They look at shapes and scalars only
// (never at element values), so device views pass too; the per-index range checks above need the
// values and run where they are readable.

/// u[M, L] → bits[M, L], codes[M, L].
template <class M>
void check_bsq_quantize_args(const TensorView<const float, 2, M>& u, const TensorView<std::uint8_t, 2, M>& bits,
                             const TensorView<float, 2, M>& codes) {
  check_shape(bits, {u.size(0), u.size(1)}, "bsq_quantize bits");
  check_shape(codes, {u.size(0), u.size(1)}, "bsq_quantize codes");
}

/// bits[M, L] → idx[M], L in [1, 32].
template <class M>
void check_bits_to_index_args(const TensorView<const std::uint8_t, 2, M>& bits,
                              const TensorView<std::uint32_t, 1, M>& idx) {
  bsq_check_code_width(bits.size(1), "bits_to_index");
  check_shape(idx, {bits.size(0)}, "bits_to_index output idx");
}

/// idx[M] → bits[M, L], L in [1, 32].
template <class M>
void check_index_to_bits_args(const TensorView<const std::uint32_t, 1, M>& idx,
                              const TensorView<std::uint8_t, 2, M>& bits) {
  bsq_check_code_width(bits.size(1), "index_to_bits");
  check_shape(bits, {idx.size(0), bits.size(1)}, "index_to_bits output bits");
}

/// idx[M] → groups[M, L/g]; returns the group count G = L/g.
template <class M>
std::int64_t check_index_to_group_indices_args(const TensorView<const std::uint32_t, 1, M>& idx, int bits_per_code,
                                               int group_size, const TensorView<std::uint32_t, 2, M>& groups) {
  const std::int64_t g_n = bsq_check_groups(bits_per_code, group_size, "index_to_group_indices");
  check_shape(groups, {idx.size(0), g_n}, "index_to_group_indices output groups");
  return g_n;
}

/// groups[M, G] → idx[M], g ≥ 1 and G·g in [1, 32].
template <class M>
void check_group_indices_to_index_args(const TensorView<const std::uint32_t, 2, M>& groups, int group_size,
                                       const TensorView<std::uint32_t, 1, M>& idx) {
  QLIP_CHECK(group_size >= 1, "group_indices_to_index: group size must be positive, got ", group_size);
  bsq_check_code_width(groups.size(1) * group_size, "group_indices_to_index");
  check_shape(idx, {groups.size(0)}, "group_indices_to_index output idx");
}

/// bits[M, L] → codes[M, L].
template <class M>
void check_bits_to_codes_args(const TensorView<const std::uint8_t, 2, M>& bits, const TensorView<float, 2, M>& codes) {
  check_shape(codes, {bits.size(0), bits.size(1)}, "bits_to_codes output codes");
}
}  // namespace qlip::detail

namespace qlip::reference {

/// Sign quantisation: bits = (u > 0) (u == 0 gives bit 0), codes = ±scale (scale = 1/√L for QLIP).
inline void bsq_quantize(HostView<const float, 2> u,           // [M, L]
                         HostView<std::uint8_t, 2> bits,       // [M, L]
                         HostView<float, 2> codes,             // [M, L]
                         float scale) {
  detail::check_bsq_quantize_args(u, bits, codes);
  for (std::int64_t i = 0; i < u.size(0); ++i)
    for (std::int64_t j = 0; j < u.size(1); ++j) {
      const bool bit = math::bsq_bit(u(i, j));
      bits(i, j) = bit ? 1 : 0;
      codes(i, j) = math::bsq_code(bit, scale);
    }
}

/// index[m] = Σ_i bit[m, i]·2^(L−1−i), L ≤ 32.
inline void bits_to_index(HostView<const std::uint8_t, 2> bits,  // [M, L]
                          HostView<std::uint32_t, 1> idx) {      // [M]
  detail::check_bits_to_index_args(bits, idx);
  const std::int64_t m = bits.size(0), l = bits.size(1);
  for (std::int64_t r = 0; r < m; ++r) {
    std::uint32_t v = 0;
    for (std::int64_t i = 0; i < l; ++i) v = (v << 1) | (bits(r, i) != 0 ? 1u : 0u);
    idx(r) = v;
  }
}

/// bit[m, i] = (index[m] >> (L−1−i)) & 1. Throws if an index has bits at or above L.
inline void index_to_bits(HostView<const std::uint32_t, 1> idx,  // [M]
                          HostView<std::uint8_t, 2> bits) {      // [M, L]
  detail::check_index_to_bits_args(idx, bits);
  const std::int64_t m = idx.size(0), l = bits.size(1);
  for (std::int64_t r = 0; r < m; ++r) {
    detail::bsq_check_index_fits(idx(r), l, r, "index_to_bits");
    for (std::int64_t i = 0; i < l; ++i) bits(r, i) = static_cast<std::uint8_t>((idx(r) >> (l - 1 - i)) & 1u);
  }
}

/// groups[m, j] = (index[m] >> (g·(G−1−j))) & (2^g − 1), G = L/g. Throws unless g divides L and
/// every index fits in L bits.
inline void index_to_group_indices(HostView<const std::uint32_t, 1> idx,  // [M]
                                   int bits_per_code, int group_size,
                                   HostView<std::uint32_t, 2> groups) {    // [M, L/g]
  const std::int64_t g_n = detail::check_index_to_group_indices_args(idx, bits_per_code, group_size, groups);
  const std::int64_t m = idx.size(0);
  for (std::int64_t r = 0; r < m; ++r) {
    detail::bsq_check_index_fits(idx(r), bits_per_code, r, "index_to_group_indices");
    for (std::int64_t j = 0; j < g_n; ++j)
      groups(r, j) = math::bsq_group_index(idx(r), static_cast<int>(j), group_size, static_cast<int>(g_n));
  }
}

/// index[m] = Σ_j groups[m, j]·2^(g·(G−1−j)). Throws unless G·g ≤ 32 and every group index < 2^g.
inline void group_indices_to_index(HostView<const std::uint32_t, 2> groups,  // [M, G]
                                   int group_size,
                                   HostView<std::uint32_t, 1> idx) {         // [M]
  detail::check_group_indices_to_index_args(groups, group_size, idx);
  const std::int64_t m = groups.size(0), g_n = groups.size(1);
  for (std::int64_t r = 0; r < m; ++r) {
    std::uint64_t v = 0;  // 64-bit so a shift by g = 32 (one group) stays defined
    for (std::int64_t j = 0; j < g_n; ++j) {
      const std::uint32_t sub = groups(r, j);
      detail::bsq_check_group_index_fits(sub, group_size, r, j);
      v = (v << group_size) | sub;
    }
    idx(r) = static_cast<std::uint32_t>(v);
  }
}

/// codes = (2·bit − 1)·scale (MODEL.md §3.4 indexes_to_codes, times the BSQ scale).
inline void bits_to_codes(HostView<const std::uint8_t, 2> bits,  // [M, L]
                          float scale,
                          HostView<float, 2> codes) {            // [M, L]
  detail::check_bits_to_codes_args(bits, codes);
  for (std::int64_t i = 0; i < bits.size(0); ++i)
    for (std::int64_t j = 0; j < bits.size(1); ++j) codes(i, j) = math::bsq_code(bits(i, j) != 0, scale);
}

}  // namespace qlip::reference
