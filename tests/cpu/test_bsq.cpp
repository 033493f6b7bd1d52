/// @file test_bsq.cpp
/// @brief BSQ quantisation and the integer code conversions (MODEL.md §3.4): CPU vs reference (exact) on
///        odd sizes and strided views with guards; independent formulas; bits ⇄ index ⇄ group-index
///        round trips for every g dividing 28 on random and edge indices; errors naming the problem.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "common/compare.hpp"
#include "cpu/guarded.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/cpu/bsq.hpp"
#include "qlip/reference/bsq.hpp"

namespace qlip {
namespace {

using test::Guarded;
using test::kAllLayouts;

constexpr float kFloatSentinel = 77.0f;
constexpr std::uint8_t kByteSentinel = 0xAB;
constexpr std::uint32_t kIndexSentinel = 0xDEADBEEFu;

TEST(Bsq, QuantizeCpuMatchesReferenceAndSignRule) {
  std::uint64_t seed = 500;
  for (const auto& mn : test::kOddShapes) {
    const std::int64_t m = mn[0], l = mn[1];
    const float scale = 1.0f / std::sqrt(static_cast<float>(l));
    for (test::Layout lin : kAllLayouts) {
      for (test::Layout lout : kAllLayouts) {
        SCOPED_TRACE(test::case_name(m, l, lin, lout));
        Guarded<float, 2> u({m, l}, lin, kFloatSentinel);
        Philox rng(++seed);
        // Every fifth entry an exact ±0: u == 0 must give bit 0 / code −scale (MODEL.md §2.6).
        u.fill([&](std::int64_t i) {
          return i % 5 == 0 ? (i % 10 == 0 ? 0.0f : -0.0f) : rng.normal(static_cast<std::uint64_t>(i));
        });
        Guarded<std::uint8_t, 2> bits({m, l}, lout, kByteSentinel);
        Guarded<float, 2> codes({m, l}, lin, kFloatSentinel);
        Tensor<std::uint8_t, 2> want_bits({m, l});
        Tensor<float, 2> want_codes({m, l});
        reference::bsq_quantize(u.cview(), want_bits.view(), want_codes.view(), scale);
        ops::bsq_quantize(cpu_backend{}, u.cview(), bits.view(), codes.view(), scale);
        EXPECT_TRUE(test::all_close(bits.cview(), want_bits.view(), test::kExact));
        EXPECT_TRUE(test::all_close(codes.cview(), want_codes.view(), test::kExact));
        EXPECT_TRUE(bits.guards_intact());
        EXPECT_TRUE(codes.guards_intact());
        for (std::int64_t i = 0; i < m; ++i)
          for (std::int64_t j = 0; j < l; ++j) {
            const bool positive = u.cview()(i, j) > 0.0f;
            ASSERT_EQ(want_bits(i, j), positive ? 1 : 0);
            ASSERT_EQ(want_codes(i, j), positive ? scale : -scale);
          }
        // bits_to_codes reproduces the quantiser's codes.
        Guarded<float, 2> codes2({m, l}, lout, kFloatSentinel);
        ops::bits_to_codes(cpu_backend{}, bits.cview(), scale, codes2.view());
        EXPECT_TRUE(test::all_close(codes2.cview(), want_codes.view(), test::kExact));
        EXPECT_TRUE(codes2.guards_intact());
        Tensor<float, 2> codes3({m, l});
        reference::bits_to_codes(want_bits.view(), scale, codes3.view());
        EXPECT_TRUE(test::all_close(codes3.view(), want_codes.view(), test::kExact));
      }
    }
  }
}

/// Random 28-bit indices plus the edges: 0, 2^28 − 1, every single bit, alternating patterns.
std::vector<std::uint32_t> test_indices(int l) {
  const std::uint32_t mask = math::low_bits_mask(l);
  std::vector<std::uint32_t> v = {0u, mask, 0xAAAAAAAAu & mask, 0x55555555u & mask, mask >> 1, mask ^ 1u};
  for (int i = 0; i < l; ++i) v.push_back(std::uint32_t{1} << i);
  Philox rng(28);
  for (int i = 0; i < 301; ++i) v.push_back(rng.draw(static_cast<std::uint64_t>(i))[0] & mask);
  return v;
}

TEST(Bits, IndexBitsRoundTripAndMsbFirst) {
  for (int l : {1, 7, 16, 28, 31, 32}) {
    SCOPED_TRACE(::testing::Message() << "L = " << l);
    const std::vector<std::uint32_t> values = test_indices(l);
    const std::int64_t m = static_cast<std::int64_t>(values.size());
    for (test::Layout layout : kAllLayouts) {
      Guarded<std::uint32_t, 1> idx({m}, layout, kIndexSentinel);
      idx.fill([&](std::int64_t i) { return values[static_cast<std::size_t>(i)]; });
      Guarded<std::uint8_t, 2> bits({m, l}, layout, kByteSentinel);
      Tensor<std::uint8_t, 2> ref_bits({m, l});
      ops::index_to_bits(cpu_backend{}, idx.cview(), bits.view());
      reference::index_to_bits(idx.cview(), ref_bits.view());
      EXPECT_TRUE(test::all_close(bits.cview(), ref_bits.view(), test::kExact));
      EXPECT_TRUE(bits.guards_intact());
      // Independent: bit i is the coefficient of 2^(L−1−i) — dimension 0 is the MSB (MODEL.md §3.4).
      for (std::int64_t r = 0; r < m; ++r) {
        std::uint64_t sum = 0;
        for (int i = 0; i < l; ++i) sum += static_cast<std::uint64_t>(ref_bits(r, i)) << (l - 1 - i);
        ASSERT_EQ(sum, values[static_cast<std::size_t>(r)]) << "row " << r;
      }
      Guarded<std::uint32_t, 1> back({m}, layout == test::Layout::padded ? test::Layout::transposed : test::Layout::padded,
                                     kIndexSentinel);
      Tensor<std::uint32_t, 1> ref_back({m});
      ops::bits_to_index(cpu_backend{}, bits.cview(), back.view());
      reference::bits_to_index(ref_bits.view(), ref_back.view());
      EXPECT_TRUE(test::all_close(back.cview(), idx.cview(), test::kExact));
      EXPECT_TRUE(test::all_close(ref_back.view(), idx.cview(), test::kExact));
      EXPECT_TRUE(back.guards_intact());
    }
  }
  // Spot values, L = 28: dimension 0 alone is 2^27, the last dimension alone is 1.
  Tensor<std::uint8_t, 2> b({3, 28});
  for (int i = 0; i < 28; ++i) b(0, i) = (i == 0), b(1, i) = (i == 27), b(2, i) = 1;
  b(2, 5) = 7;  // any non-zero byte reads as a 1 bit
  Tensor<std::uint32_t, 1> idx({3});
  ops::bits_to_index(cpu_backend{}, b.view(), idx.view());
  EXPECT_EQ(idx(0), 1u << 27);
  EXPECT_EQ(idx(1), 1u);
  EXPECT_EQ(idx(2), (1u << 28) - 1u);  // the value the float32 Python path rounds to 2^28 (MODEL.md §3.4)
}

TEST(Bits, GroupIndicesRoundTripForEveryGroupSize) {
  const int l = 28;
  const std::vector<std::uint32_t> values = test_indices(l);
  const std::int64_t m = static_cast<std::int64_t>(values.size());
  Tensor<std::uint32_t, 1> idx({m});
  for (std::int64_t i = 0; i < m; ++i) idx(i) = values[static_cast<std::size_t>(i)];
  Tensor<std::uint8_t, 2> bits({m, l});
  reference::index_to_bits(idx.view(), bits.view());
  for (int g : {1, 2, 4, 7, 14, 28}) {
    const std::int64_t groups_n = l / g;
    for (test::Layout layout : kAllLayouts) {
      SCOPED_TRACE(::testing::Message() << "g = " << g << " layout " << test::layout_name(layout));
      Guarded<std::uint32_t, 2> groups({m, groups_n}, layout, kIndexSentinel);
      Tensor<std::uint32_t, 2> ref_groups({m, groups_n});
      ops::index_to_group_indices(cpu_backend{}, idx.view(), l, g, groups.view());
      reference::index_to_group_indices(idx.view(), l, g, ref_groups.view());
      EXPECT_TRUE(test::all_close(groups.cview(), ref_groups.view(), test::kExact));
      EXPECT_TRUE(groups.guards_intact());
      // Independent: group j = Σ_k bit_{j·g+k}·2^(g−1−k); group 0 is the most significant chunk.
      for (std::int64_t r = 0; r < m; ++r)
        for (std::int64_t j = 0; j < groups_n; ++j) {
          std::uint32_t sub = 0;
          for (int k = 0; k < g; ++k) sub = (sub << 1) | bits(r, j * g + k);
          ASSERT_EQ(ref_groups(r, j), sub) << "row " << r << " group " << j;
        }
      Guarded<std::uint32_t, 1> back({m}, layout, kIndexSentinel);
      Tensor<std::uint32_t, 1> ref_back({m});
      ops::group_indices_to_index(cpu_backend{}, groups.cview(), g, back.view());
      reference::group_indices_to_index(ref_groups.view(), g, ref_back.view());
      EXPECT_TRUE(test::all_close(back.cview(), idx.view(), test::kExact));
      EXPECT_TRUE(test::all_close(ref_back.view(), idx.view(), test::kExact));
      EXPECT_TRUE(back.guards_intact());
    }
  }
  // Two 14-bit groups of the all-ones index, and of 2^27 (MSB only).
  Tensor<std::uint32_t, 1> two({2});
  two(0) = (1u << 28) - 1u, two(1) = 1u << 27;
  Tensor<std::uint32_t, 2> halves({2, 2});
  ops::index_to_group_indices(cpu_backend{}, two.view(), 28, 14, halves.view());
  EXPECT_EQ(halves(0, 0), (1u << 14) - 1u);
  EXPECT_EQ(halves(0, 1), (1u << 14) - 1u);
  EXPECT_EQ(halves(1, 0), 1u << 13);
  EXPECT_EQ(halves(1, 1), 0u);
}

TEST(Bits, ThirtyTwoBitCodesAndWholeWordGroups) {
  // L = 32 with g = 32 (one group: a shift by the word width must not happen) and g = 16.
  Tensor<std::uint32_t, 1> idx({3});
  idx(0) = 0xFFFFFFFFu, idx(1) = 0x80000001u, idx(2) = 0x12345678u;
  for (int g : {32, 16, 8}) {
    Tensor<std::uint32_t, 2> groups({3, 32 / g});
    Tensor<std::uint32_t, 1> back({3});
    ops::index_to_group_indices(cpu_backend{}, idx.view(), 32, g, groups.view());
    ops::group_indices_to_index(cpu_backend{}, groups.view(), g, back.view());
    EXPECT_TRUE(test::all_close(back.view(), idx.view(), test::kExact)) << "g = " << g;
    Tensor<std::uint32_t, 2> ref_groups({3, 32 / g});
    reference::index_to_group_indices(idx.view(), 32, g, ref_groups.view());
    EXPECT_TRUE(test::all_close(groups.view(), ref_groups.view(), test::kExact)) << "g = " << g;
  }
  Tensor<std::uint32_t, 2> g16({1, 2});
  ops::index_to_group_indices(cpu_backend{}, HostView<const std::uint32_t, 1>(idx.data() + 2, {1}), 32, 16, g16.view());
  EXPECT_EQ(g16(0, 0), 0x1234u);
  EXPECT_EQ(g16(0, 1), 0x5678u);
}

TEST(Bits, BadArgumentsThrowNamingTheProblem) {
  Tensor<std::uint32_t, 1> idx({2});
  idx(0) = 5, idx(1) = 1u << 28;  // the second does not fit in 28 bits
  Tensor<std::uint32_t, 2> groups({2, 4});
  EXPECT_TRUE(test::throws_with([&] { ops::index_to_group_indices(cpu_backend{}, idx.view(), 28, 8, groups.view()); },
                                "group size 8 does not divide bits per code 28"));
  EXPECT_TRUE(test::throws_with([&] { reference::index_to_group_indices(idx.view(), 28, 0, groups.view()); },
                                "does not divide"));
  EXPECT_TRUE(test::throws_with([&] { ops::index_to_group_indices(cpu_backend{}, idx.view(), 28, 7, groups.view()); },
                                "index 268435456 of row 1 does not fit in 28 bits"));
  EXPECT_TRUE(test::throws_with([&] { reference::index_to_group_indices(idx.view(), 36, 9, groups.view()); },
                                "bits per code must be in [1, 32]"));
  Tensor<std::uint8_t, 2> bits33({2, 33}), bits28({2, 28}), bits27({3, 28});
  EXPECT_TRUE(test::throws_with([&] { ops::bits_to_index(cpu_backend{}, bits33.view(), idx.view()); },
                                "bits per code must be in [1, 32] to fit a uint32 index, got 33"));
  EXPECT_TRUE(test::throws_with([&] { ops::index_to_bits(cpu_backend{}, idx.view(), bits28.view()); },
                                "does not fit in 28 bits"));
  EXPECT_TRUE(test::throws_with([&] { ops::bits_to_index(cpu_backend{}, bits27.view(), idx.view()); },
                                "bits_to_index output idx"));
  Tensor<std::uint32_t, 2> bad_groups({1, 2});
  bad_groups(0, 0) = 3, bad_groups(0, 1) = 1u << 14;
  Tensor<std::uint32_t, 1> out({1});
  EXPECT_TRUE(test::throws_with([&] { ops::group_indices_to_index(cpu_backend{}, bad_groups.view(), 14, out.view()); },
                                "group index 16384 at [0, 1] does not fit in 14 bits"));
  EXPECT_TRUE(test::throws_with([&] { reference::group_indices_to_index(bad_groups.view(), 17, out.view()); },
                                "bits per code must be in [1, 32] to fit a uint32 index, got 34"));
  Tensor<float, 2> u({2, 28}), codes({2, 27});
  EXPECT_TRUE(test::throws_with([&] { ops::bsq_quantize(cpu_backend{}, u.view(), bits28.view(), codes.view(), 1.0f); },
                                "bsq_quantize codes"));
}

}  // namespace
}  // namespace qlip
