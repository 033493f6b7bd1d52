/// @file code_usage.hpp
/// @brief How a tokenizer uses its 2^L codebook over a data set (MODEL.md §3.4 bit order): distinct
///        codes, the fraction of ones per bit, and the empirical entropy of each group of g bits.
///
/// A healthy BSQ bottleneck uses many distinct codes, keeps every bit near 50 % ones, and has group
/// entropies near g·ln 2 (the maximum); a collapsed one shows constant bits and few codes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::eval {

struct CodeUsage {
  std::int64_t tokens = 0;
  std::int64_t distinct_codes = 0;
  std::vector<double> ones_fraction;   ///< [L], per bit (bit 0 = the most significant)
  std::vector<double> group_entropy;   ///< [L/g], nats, of the empirical distribution of each group
  double mean_group_entropy_ratio = 0; ///< mean of group_entropy / (g·ln 2)
};

/// bits [M, L] (0/1 bytes, one row per token) → usage statistics with groups of g bits.
inline CodeUsage code_usage(HostView<const std::uint8_t, 2> bits, int group_size) {
  const std::int64_t m = bits.size(0), l = bits.size(1);
  QLIP_CHECK(l >= 1 && l <= 32, "code_usage: codes must have 1..32 bits, got ", l);
  QLIP_CHECK(group_size >= 1 && group_size <= 16 && l % group_size == 0, "code_usage: group size ", group_size,
             " must be in [1, 16] and divide the ", l, " bits");
  CodeUsage u;
  u.tokens = m;
  u.ones_fraction.assign(static_cast<std::size_t>(l), 0.0);
  const std::int64_t groups = l / group_size;
  std::vector<std::vector<std::int64_t>> hist(static_cast<std::size_t>(groups),
                                              std::vector<std::int64_t>(std::size_t{1} << group_size, 0));
  std::vector<std::uint32_t> codes(static_cast<std::size_t>(m));
  for (std::int64_t i = 0; i < m; ++i) {
    std::uint32_t code = 0;
    for (std::int64_t b = 0; b < l; ++b) {
      const std::uint32_t bit = bits(i, b) != 0 ? 1u : 0u;
      code = (code << 1) | bit;
      u.ones_fraction[b] += bit;
    }
    codes[i] = code;
    for (std::int64_t g = 0; g < groups; ++g) {
      const std::uint32_t sub = (code >> (group_size * (groups - 1 - g))) & ((1u << group_size) - 1u);
      ++hist[g][sub];
    }
  }
  for (auto& f : u.ones_fraction) f = m > 0 ? f / static_cast<double>(m) : 0.0;
  std::sort(codes.begin(), codes.end());
  u.distinct_codes = static_cast<std::int64_t>(std::unique(codes.begin(), codes.end()) - codes.begin());
  double ratio = 0;
  for (const auto& h : hist) {
    double e = 0;
    for (std::int64_t c : h)
      if (c > 0) {
        const double p = static_cast<double>(c) / static_cast<double>(m);
        e -= p * std::log(p);
      }
    u.group_entropy.push_back(e);
    ratio += e / (group_size * std::log(2.0));
  }
  u.mean_group_entropy_ratio = groups > 0 ? ratio / static_cast<double>(groups) : 0.0;
  return u;
}

}  // namespace qlip::eval
