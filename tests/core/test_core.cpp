/// @file test_core.cpp
/// @brief Host-only property tests of the core layer: views, storage, dispatch, Philox, dtypes.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>
#include <type_traits>

#include "qlip/core.hpp"

namespace qlip {
namespace {

TEST(TensorView, StridesSliceSelectTranspose) {
  Tensor<float, 3> t({2, 3, 4});
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<float>(i);
  auto v = t.view();
  EXPECT_TRUE(v.is_contiguous());
  EXPECT_EQ(v.strides(), (Extents<3>{12, 4, 1}));
  EXPECT_EQ(v(1, 2, 3), 23.0f);
  auto s = v.slice(2, 1, 3);  // [2,3,2], not contiguous
  EXPECT_FALSE(s.is_contiguous());
  EXPECT_EQ(s(1, 0, 1), v(1, 0, 2));
  auto row = v.select(0, 1);  // [3,4]
  EXPECT_EQ(row(2, 1), 21.0f);
  auto tr = v.transpose(1, 2);  // [2,4,3]
  EXPECT_EQ(tr(1, 3, 2), v(1, 2, 3));
  EXPECT_THROW(v.slice(1, 2, 5), Error);
  EXPECT_THROW(s.reshape<1>({12}), Error);
  EXPECT_EQ((v.reshape<2>({6, 4})(5, 3)), 23.0f);
  EXPECT_THROW((v.reshape<2>({5, 4})), Error);
}

TEST(TensorView, Int64OffsetsBeyondInt32) {
  // A stride above INT32_MAX must not wrap (CONVENTIONS.md §7): only index arithmetic, no memory touched.
  float dummy = 0;
  HostView<float, 2> v(&dummy, {3, 2}, {std::int64_t{1} << 32, 1});
  EXPECT_EQ(v.index_of(2, 1), (std::int64_t{2} << 32) + 1);
}

TEST(TensorView, ConstConversionAndConcepts) {
  Tensor<float, 2> t({2, 2});
  HostView<const float, 2> c = t.view();
  EXPECT_EQ(c.data(), t.data());
  static_assert(view_for<HostView<float, 2>, cpu_backend, 2>);
  static_assert(!view_for<HostView<float, 2>, cuda_backend, 2>);
  static_assert(!view_for<DeviceView<float, 2>, cpu_backend, 2>);
  static_assert(backend<cpu_backend> && backend<cuda_backend>);
  // Only to a read-only view of the same element type (the conversion's U is deduced).
  static_assert(std::is_convertible_v<HostView<float, 2>, HostView<const float, 2>>);
  static_assert(!std::is_convertible_v<HostView<float, 2>, HostView<const bf16, 2>>);
  static_assert(!std::is_convertible_v<HostView<bf16, 2>, HostView<const float, 2>>);
}

TEST(CheckShape, NamesArgumentAndShapes) {
  Tensor<float, 2> t({2, 3});
  try {
    check_shape(t.view(), {3, 2}, "weight");
    FAIL() << "no throw";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("weight has shape [2, 3], expected [3, 2]"), std::string::npos) << m;
  }
}

TEST(Arena, AlignedBumpScopeAndExhaustion) {
  Arena arena(1 << 12);
  {
    ArenaScope scope(arena);
    float* a = arena.allocate<float>(3);
    float* b = arena.allocate<float>(5);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a) % kHostAlignment, 0u);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b) % kHostAlignment, 0u);
    EXPECT_EQ(arena.used(), 128u);
  }
  EXPECT_EQ(arena.used(), 0u);
  EXPECT_EQ(arena.peak(), 128u);
  EXPECT_THROW(arena.allocate<float>(2000), Error);
}

TEST(Dispatch, HitsCompiledValueAndNamesListOnMiss) {
  int seen = 0;
  dispatch_int<32, 64, 128>(64, "head_dim", [&](auto hd) { seen = decltype(hd)::value; });
  EXPECT_EQ(seen, 64);
  try {
    dispatch_int<32, 64, 128>(80, "head_dim", [](auto) {});
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported head_dim 80 (compiled: 32, 64, 128)"), std::string::npos)
        << e.what();
  }
}

struct CfgA { static constexpr const char* name = "cfg-a"; static constexpr int width = 8; };
struct CfgB { static constexpr const char* name = "cfg-b"; static constexpr int width = 16; };

TEST(Dispatch, TypeListPicksConfigOrNamesThem) {
  int width = 0;
  auto pick = [&](int w) {
    dispatch_type(TypeList<CfgA, CfgB>{}, "config", [&](auto t) { return decltype(t)::type::width == w; },
                  [&](auto t) { width = decltype(t)::type::width; });
  };
  pick(16);
  EXPECT_EQ(width, 16);
  try {
    pick(4);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("compiled: cfg-a, cfg-b"), std::string::npos) << e.what();
  }
}

TEST(Philox, KnownAnswers) {
  // Random123 kat_vectors: philox4x32_10, counter 0 / key 0 and counter all-ones / key all-ones.
  auto zero = Philox(0).draw(0, 0);
  EXPECT_EQ(zero, (Philox::Block{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  auto ones = Philox(~0ull).draw(~0ull, ~0ull);
  EXPECT_EQ(ones, (Philox::Block{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
}

TEST(Philox, UniformAndNormalMoments) {
  Philox rng(42);
  double su = 0, sn = 0, sn2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    float u = rng.uniform(i);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    su += u;
    float z = rng.normal(i);
    sn += z;
    sn2 += double(z) * z;
  }
  EXPECT_NEAR(su / n, 0.5, 0.005);
  EXPECT_NEAR(sn / n, 0.0, 0.01);
  EXPECT_NEAR(sn2 / n, 1.0, 0.02);
  EXPECT_EQ(rng.uniform(7), Philox(42).uniform(7));  // stateless: same index, same number
}

TEST(DType, Bf16AndF16RoundTrips) {
  EXPECT_EQ(float(bf16(1.0f)), 1.0f);
  EXPECT_EQ(bf16(1.0f).bits, 0x3f80);
  EXPECT_EQ(float(bf16(3.14159f)), 3.140625f);  // round to nearest
  EXPECT_TRUE(std::isnan(float(bf16(std::numeric_limits<float>::quiet_NaN()))));
  // round_to_bf16: ties to even (1 + 2^-8 is halfway between 1 and 1 + 2^-7), above half rounds up.
  const float src[3] = {1.0f + 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f, 1.0f + 3 * 0x1p-8f};
  bf16 dst[3];
  round_to_bf16(src, dst, 3);
  EXPECT_EQ(float(dst[0]), 1.0f);
  EXPECT_EQ(float(dst[1]), 1.0f + 0x1p-7f);
  EXPECT_EQ(float(dst[2]), 1.0f + 0x1p-6f);
  // Every finite f16 value survives f16 → f32 → f16 exactly.
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    if (((h >> 10) & 0x1f) == 0x1f) continue;  // inf / NaN
    std::uint16_t bits = static_cast<std::uint16_t>(h);
    ASSERT_EQ(f16::from_float(f16::to_float(bits)), bits) << std::hex << h;
  }
  EXPECT_EQ(float(f16(65504.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(float(f16(70000.0f))));
  EXPECT_EQ(float(f16(1.0f + 1.0f / 4096)), 1.0f);  // tie → even
  EXPECT_EQ(float(f16(5.96e-8f)), 5.9604644775390625e-8f);  // smallest subnormal
  EXPECT_EQ(dtype_size(DType::bf16), 2u);
  EXPECT_EQ(dtype_name(dtype_v<std::int64_t>), "I64");
}

TEST(Math, ActivationValues) {
  EXPECT_NEAR(math::gelu(1.0f), 0.8413447460685429f, 1e-7f);
  EXPECT_NEAR(math::quick_gelu(1.0f), 1.0f / (1.0f + std::exp(-1.702f)), 1e-7f);
  EXPECT_NEAR(math::silu(-2.0f), -2.0f / (1.0f + std::exp(2.0f)), 1e-7f);
  EXPECT_EQ(math::sigmoid(-1000.0f), 0.0f);
  EXPECT_FALSE(math::bsq_bit(0.0f));
  EXPECT_EQ(math::bsq_code(false, 0.5f), -0.5f);
}

}  // namespace
}  // namespace qlip

#include "qlip/version.hpp"
TEST(Version, HeaderMatchesCMakeProject) { EXPECT_STREQ(QLIP_VERSION_STRING, QLIP_PROJECT_VERSION); }
