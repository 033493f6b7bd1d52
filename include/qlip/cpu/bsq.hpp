/// @file bsq.hpp
/// @brief CPU Binary Spherical Quantization pieces (MODEL.md §2.6, §3.1, §3.4): sign quantisation and the
///        exact integer conversions bits ⇄ index ⇄ group indices. OpenMP over rows.
///
/// Same semantics and bit order as reference/bsq.hpp (dimension 0 = most significant bit, group 0 =
/// most significant chunk, integer shifts only). Validation runs serially before the parallel loop
/// so that no exception escapes an OpenMP region.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <cstdint>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/math.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/bsq.hpp"

namespace qlip::ops {

/// Sign quantisation: bits = (u > 0) (u == 0 gives bit 0), codes = ±scale.
inline void bsq_quantize(cpu_backend,
                         HostView<const float, 2> u,      // [M, L]
                         HostView<std::uint8_t, 2> bits,  // [M, L]
                         HostView<float, 2> codes,        // [M, L]
                         float scale) {
  detail::check_bsq_quantize_args(u, bits, codes);
  const std::int64_t m = u.size(0), l = u.size(1);
#pragma omp parallel for schedule(static) if (m * l >= 65536)
  for (std::int64_t i = 0; i < m; ++i) {
    const float* ur = u.data() + i * u.stride(0);
    std::uint8_t* br = bits.data() + i * bits.stride(0);
    float* cr = codes.data() + i * codes.stride(0);
    for (std::int64_t j = 0; j < l; ++j) {
      const bool bit = math::bsq_bit(ur[j * u.stride(1)]);
      br[j * bits.stride(1)] = bit ? 1 : 0;
      cr[j * codes.stride(1)] = math::bsq_code(bit, scale);
    }
  }
}

/// index[m] = Σ_i bit[m, i]·2^(L−1−i), L ≤ 32 (non-zero bytes read as 1).
inline void bits_to_index(cpu_backend,
                          HostView<const std::uint8_t, 2> bits,  // [M, L]
                          HostView<std::uint32_t, 1> idx) {      // [M]
  detail::check_bits_to_index_args(bits, idx);
  const std::int64_t m = bits.size(0), l = bits.size(1);
#pragma omp parallel for schedule(static) if (m * l >= 65536)
  for (std::int64_t r = 0; r < m; ++r) {
    const std::uint8_t* br = bits.data() + r * bits.stride(0);
    std::uint32_t v = 0;
    for (std::int64_t i = 0; i < l; ++i) v = (v << 1) | (br[i * bits.stride(1)] != 0 ? 1u : 0u);
    idx(r) = v;
  }
}

/// bit[m, i] = (index[m] >> (L−1−i)) & 1. Throws if an index has bits at or above L.
inline void index_to_bits(cpu_backend,
                          HostView<const std::uint32_t, 1> idx,  // [M]
                          HostView<std::uint8_t, 2> bits) {      // [M, L]
  detail::check_index_to_bits_args(idx, bits);
  const std::int64_t m = idx.size(0), l = bits.size(1);
  for (std::int64_t r = 0; r < m; ++r) detail::bsq_check_index_fits(idx(r), l, r, "index_to_bits");
#pragma omp parallel for schedule(static) if (m * l >= 65536)
  for (std::int64_t r = 0; r < m; ++r) {
    const std::uint32_t v = idx(r);
    std::uint8_t* br = bits.data() + r * bits.stride(0);
    for (std::int64_t i = 0; i < l; ++i) br[i * bits.stride(1)] = static_cast<std::uint8_t>((v >> (l - 1 - i)) & 1u);
  }
}

/// groups[m, j] = (index[m] >> (g·(G−1−j))) & (2^g − 1), G = L/g. Throws unless g divides L and
/// every index fits in L bits.
inline void index_to_group_indices(cpu_backend,
                                   HostView<const std::uint32_t, 1> idx,  // [M]
                                   int bits_per_code, int group_size,
                                   HostView<std::uint32_t, 2> groups) {    // [M, L/g]
  const std::int64_t g_n = detail::check_index_to_group_indices_args(idx, bits_per_code, group_size, groups);
  const std::int64_t m = idx.size(0);
  for (std::int64_t r = 0; r < m; ++r)
    detail::bsq_check_index_fits(idx(r), bits_per_code, r, "index_to_group_indices");
#pragma omp parallel for schedule(static) if (m * g_n >= 65536)
  for (std::int64_t r = 0; r < m; ++r)
    for (std::int64_t j = 0; j < g_n; ++j)
      groups(r, j) = math::bsq_group_index(idx(r), static_cast<int>(j), group_size, static_cast<int>(g_n));
}

/// index[m] = Σ_j groups[m, j]·2^(g·(G−1−j)). Throws unless G·g ≤ 32 and every group index < 2^g.
inline void group_indices_to_index(cpu_backend,
                                   HostView<const std::uint32_t, 2> groups,  // [M, G]
                                   int group_size,
                                   HostView<std::uint32_t, 1> idx) {         // [M]
  detail::check_group_indices_to_index_args(groups, group_size, idx);
  const std::int64_t m = groups.size(0), g_n = groups.size(1);
  for (std::int64_t r = 0; r < m; ++r)
    for (std::int64_t j = 0; j < g_n; ++j) detail::bsq_check_group_index_fits(groups(r, j), group_size, r, j);
#pragma omp parallel for schedule(static) if (m * g_n >= 65536)
  for (std::int64_t r = 0; r < m; ++r) {
    std::uint64_t v = 0;  // 64-bit so a shift by g = 32 (one group) stays defined
    for (std::int64_t j = 0; j < g_n; ++j) v = (v << group_size) | groups(r, j);
    idx(r) = static_cast<std::uint32_t>(v);
  }
}

/// codes = (2·bit − 1)·scale.
inline void bits_to_codes(cpu_backend,
                          HostView<const std::uint8_t, 2> bits,  // [M, L]
                          float scale,
                          HostView<float, 2> codes) {            // [M, L]
  detail::check_bits_to_codes_args(bits, codes);
  const std::int64_t m = bits.size(0), l = bits.size(1);
#pragma omp parallel for schedule(static) if (m * l >= 65536)
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < l; ++j) codes(i, j) = math::bsq_code(bits(i, j) != 0, scale);
}

}  // namespace qlip::ops
