/// @file philox.hpp
/// @brief Philox4x32-10 counter-based RNG (Salmon et al., SC'11). Stateless per (key, counter), so
///        the CPU and a CUDA kernel draw identical numbers for the same element index.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "qlip/core/platform.hpp"

namespace qlip {

/// Philox4x32 with 10 rounds. draw(counter) returns 4 independent 32-bit words.
class Philox {
 public:
  using Block = std::array<std::uint32_t, 4>;

  QLIP_HOST_DEVICE explicit Philox(std::uint64_t seed)
      : key0_(static_cast<std::uint32_t>(seed)), key1_(static_cast<std::uint32_t>(seed >> 32)) {}

  /// The 4 words for a 128-bit counter given as (offset, stream).
  QLIP_HOST_DEVICE Block draw(std::uint64_t offset, std::uint64_t stream = 0) const {
    std::uint32_t c0 = static_cast<std::uint32_t>(offset), c1 = static_cast<std::uint32_t>(offset >> 32);
    std::uint32_t c2 = static_cast<std::uint32_t>(stream), c3 = static_cast<std::uint32_t>(stream >> 32);
    std::uint32_t k0 = key0_, k1 = key1_;
    for (int round = 0; round < 10; ++round) {
      std::uint64_t p0 = static_cast<std::uint64_t>(kMul0) * c0;
      std::uint64_t p1 = static_cast<std::uint64_t>(kMul1) * c2;
      std::uint32_t hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
      std::uint32_t hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
      std::uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
      c0 = n0;
      c1 = lo1;
      c2 = n2;
      c3 = lo0;
      k0 += kWeyl0;
      k1 += kWeyl1;
    }
    return {c0, c1, c2, c3};
  }

  /// Uniform float in [0, 1) from 24 random bits of word `i % 4` of block i / 4.
  QLIP_HOST_DEVICE float uniform(std::uint64_t i, std::uint64_t stream = 0) const {
    Block b = draw(i / 4, stream);
    return static_cast<float>(b[i % 4] >> 8) * (1.0f / 16777216.0f);
  }

  /// Standard normal via Box–Muller on the block's words 0,1 (i even) or 2,3 (i odd).
  QLIP_HOST_DEVICE float normal(std::uint64_t i, std::uint64_t stream = 0) const {
    Block b = draw(i / 2, stream);
    int w = static_cast<int>(i % 2) * 2;
    float u1 = (static_cast<float>(b[w] >> 8) + 1.0f) * (1.0f / 16777216.0f);  // (0, 1]
    float u2 = static_cast<float>(b[w + 1] >> 8) * (1.0f / 16777216.0f);
    return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.28318530717958647692f * u2);
  }

 private:
  static constexpr std::uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  static constexpr std::uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  std::uint32_t key0_, key1_;
};

}  // namespace qlip
