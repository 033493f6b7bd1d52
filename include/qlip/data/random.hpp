/// @file random.hpp
/// @brief The data pipeline's random choices (epoch shuffle, caption template, substitute for an
///        unreadable sample), all drawn from core/philox.hpp keyed by the seed, so they are the same
///        with every standard library, compiler, thread count and resume point.
///
/// std::shuffle and std::uniform_int_distribution are not used: their algorithms are unspecified
/// and differ between libstdc++, libc++ and MSVC, so the same seed would give other batches.
///
/// Counter layout of Philox(seed).draw(offset, stream): stream = purpose << 56 | epoch << 8 | retry
/// (epoch < 2^48); the offset is the element index the draw is for (sample, position).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/core/philox.hpp"

namespace qlip::data {

/// What a draw is for; each purpose has its own Philox stream, so e.g. the caption templates do not
/// change when the shuffle does.
enum class RandomPurpose : std::uint8_t { shuffle = 1, caption = 2, substitute = 3 };

/// Largest epoch number the stream layout holds (2^48 - 1).
inline constexpr std::uint64_t kMaxEpoch = (std::uint64_t{1} << 48) - 1;

namespace detail {

inline std::uint64_t random_stream(RandomPurpose purpose, std::uint64_t epoch, std::uint64_t retry) {
  QLIP_CHECK(epoch <= kMaxEpoch, "epoch ", epoch, " exceeds the largest supported epoch ", kMaxEpoch);
  return (static_cast<std::uint64_t>(purpose) << 56) | (epoch << 8) | (retry & 0xFF);
}

}  // namespace detail

/// An exactly uniform integer in [0, n) for (seed, purpose, epoch, offset): a 64-bit Philox word
/// pair r is accepted when r ≥ 2^64 mod n (Lemire's rejection; the accepted range is a multiple of
/// n), and r mod n returned. A rejection (probability < n / 2^64) moves to the block's other pair,
/// then to the next retry stream.
inline std::uint64_t uniform_below(std::uint64_t n, std::uint64_t seed, RandomPurpose purpose, std::uint64_t epoch,
                                   std::uint64_t offset) {
  QLIP_CHECK(n > 0, "uniform_below: empty range");
  const Philox rng(seed);
  const std::uint64_t threshold = (std::uint64_t{0} - n) % n;  // 2^64 mod n
  std::uint64_t r = 0;
  for (std::uint64_t retry = 0; retry < 256; ++retry) {
    const Philox::Block b = rng.draw(offset, detail::random_stream(purpose, epoch, retry));
    for (int pair = 0; pair < 2; ++pair) {
      r = (static_cast<std::uint64_t>(b[2 * pair]) << 32) | b[2 * pair + 1];
      if (r >= threshold) return r % n;
    }
  }
  return r % n;  // 512 rejections in a row: never happens in practice (n / 2^64 each)
}

/// The epoch's order of `n` samples: a Fisher–Yates shuffle whose swap partner for position i
/// (n-1 down to 1) is uniform_below(i + 1, seed, shuffle, epoch, i).
inline std::vector<std::int64_t> shuffled_order(std::int64_t n, std::uint64_t seed, std::uint64_t epoch) {
  QLIP_CHECK(n >= 0, "shuffled_order: negative sample count ", n);
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  for (std::int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<std::int64_t>(
        uniform_below(static_cast<std::uint64_t>(i) + 1, seed, RandomPurpose::shuffle, epoch, static_cast<std::uint64_t>(i)));
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
  }
  return order;
}

}  // namespace qlip::data
