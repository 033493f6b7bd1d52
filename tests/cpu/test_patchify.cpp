/// @file test_patchify.cpp
/// @brief patchify / unpatchify: CPU vs reference (exact: pure data movement) on odd sizes and
///        strided views with guards; the element order against an explicit stride-p convolution;
///        the round trip; shape errors.
#include <gtest/gtest.h>

#include <cstdint>

#include "common/compare.hpp"
#include "cpu/guarded.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/cpu/patchify.hpp"
#include "qlip/reference/patchify.hpp"

namespace qlip {
namespace {

using test::Guarded;
using test::kAllLayouts;

constexpr float kSentinel = -31.0f;

struct PatchCase {
  std::int64_t b, c, h, w;
  int p;
};
constexpr PatchCase kPatchCases[] = {{1, 1, 1, 1, 1}, {2, 3, 14, 21, 7}, {1, 3, 32, 16, 16},
                                     {3, 2, 6, 10, 2}, {1, 5, 65, 65, 13}, {2, 3, 32, 32, 8}};

TEST(Patch, PatchifyAndUnpatchifyCpuMatchReferenceExactly) {
  std::uint64_t seed = 40;
  for (const PatchCase& pc : kPatchCases) {
    const std::int64_t n = (pc.h / pc.p) * (pc.w / pc.p), k = pc.c * pc.p * pc.p;
    for (test::Layout lin : kAllLayouts) {
      for (test::Layout lout : kAllLayouts) {
        SCOPED_TRACE(::testing::Message() << "B" << pc.b << " C" << pc.c << " " << pc.h << "x" << pc.w << " p" << pc.p
                                             << " in " << test::layout_name(lin) << " out " << test::layout_name(lout));
        Guarded<float, 4> img({pc.b, pc.c, pc.h, pc.w}, lin, kSentinel);
        img.fill_normal(++seed);
        Guarded<float, 3> tokens({pc.b, n, k}, lout, kSentinel);
        Tensor<float, 3> want({pc.b, n, k});
        reference::patchify(img.cview(), pc.p, want.view());
        ops::patchify(cpu_backend{}, img.cview(), pc.p, tokens.view());
        EXPECT_TRUE(test::all_close(tokens.cview(), want.view(), test::kExact));
        EXPECT_TRUE(tokens.guards_intact());
        EXPECT_TRUE(img.guards_intact());
        // Back again into a third layout: the exact inverse.
        Guarded<float, 4> back({pc.b, pc.c, pc.h, pc.w}, lout, kSentinel);
        Tensor<float, 4> ref_back({pc.b, pc.c, pc.h, pc.w});
        ops::unpatchify(cpu_backend{}, tokens.cview(), pc.p, back.view());
        reference::unpatchify(want.view(), pc.p, ref_back.view());
        EXPECT_TRUE(test::all_close(back.cview(), ref_back.view(), test::kExact));
        EXPECT_TRUE(test::all_close(back.cview(), img.cview(), test::kExact));
        EXPECT_TRUE(back.guards_intact());
      }
    }
  }
}

TEST(Patch, PatchifyThenDotIsTheStridePConvolution) {
  // Conv2d(C→D, kernel p, stride p) written out directly, vs patchify + tokens·Wᵀ with the weight
  // [D, C, p, p] flattened row-major — the patch-embedding identity the vision encoder relies on.
  const std::int64_t b_n = 2, c_n = 3, h = 12, w = 8, d_n = 5;
  const int p = 4;
  const std::int64_t gh = h / p, gw = w / p, k = c_n * p * p;
  Tensor<float, 4> img({b_n, c_n, h, w}), weight({d_n, c_n, p, p});
  Philox rng(3);
  for (std::int64_t i = 0; i < img.numel(); ++i) img.data()[i] = static_cast<float>(static_cast<int>(8 * rng.normal(i)));
  for (std::int64_t i = 0; i < weight.numel(); ++i) weight.data()[i] = static_cast<float>(static_cast<int>(4 * rng.normal(i, 1)));
  Tensor<float, 3> tokens({b_n, gh * gw, k});
  ops::patchify(cpu_backend{}, img.view(), p, tokens.view());
  const float* wflat = weight.data();  // [D, C·p·p]
  for (std::int64_t b = 0; b < b_n; ++b)
    for (std::int64_t row = 0; row < gh; ++row)
      for (std::int64_t col = 0; col < gw; ++col)
        for (std::int64_t d = 0; d < d_n; ++d) {
          double conv = 0.0, dot = 0.0;  // integer-valued inputs: both sums are exact
          for (std::int64_t c = 0; c < c_n; ++c)
            for (std::int64_t kh = 0; kh < p; ++kh)
              for (std::int64_t kw = 0; kw < p; ++kw) conv += img(b, c, row * p + kh, col * p + kw) * weight(d, c, kh, kw);
          for (std::int64_t j = 0; j < k; ++j) dot += tokens(b, row * gw + col, j) * wflat[d * k + j];
          ASSERT_EQ(dot, conv) << "b " << b << " token (" << row << ", " << col << ") channel " << d;
        }
}

TEST(Patch, ElementOrderMatchesSpec) {
  // Token n = row·S + col; element j = c·p² + sh·p + sw holds pixel (c, row·p + sh, col·p + sw).
  const std::int64_t c_n = 3, h = 6, w = 9;
  const int p = 3;
  Tensor<float, 4> img({1, c_n, h, w});
  for (std::int64_t c = 0; c < c_n; ++c)
    for (std::int64_t y = 0; y < h; ++y)
      for (std::int64_t x = 0; x < w; ++x) img(0, c, y, x) = static_cast<float>(c * 10000 + y * 100 + x);
  Tensor<float, 3> tokens({1, 6, 27});
  ops::patchify(cpu_backend{}, img.view(), p, tokens.view());
  EXPECT_EQ(tokens(0, 0, 0), 0.0f);
  EXPECT_EQ(tokens(0, 1, 0), 3.0f);                   // token 1 = row 0, col 1
  EXPECT_EQ(tokens(0, 4, 0), 303.0f);                 // token 4 = row 1, col 1 → pixel (3, 3)
  EXPECT_EQ(tokens(0, 5, 2 * 9 + 1 * 3 + 2), 20408.0f);  // c 2, sh 1, sw 2 of token (1, 2) → (4, 8)
}

TEST(Patch, BadShapesThrowNamingTheProblem) {
  Tensor<float, 4> img({1, 3, 10, 12});
  Tensor<float, 3> tokens({1, 6, 48});
  EXPECT_TRUE(test::throws_with([&] { ops::patchify(cpu_backend{}, img.view(), 4, tokens.view()); },
                                "is not divisible into 4x4 patches"));
  Tensor<float, 4> img2({1, 3, 8, 12});
  Tensor<float, 3> wrong({1, 6, 47});
  EXPECT_TRUE(test::throws_with([&] { ops::patchify(cpu_backend{}, img2.view(), 4, wrong.view()); },
                                "expected [1, 6, 48]"));
  EXPECT_TRUE(test::throws_with([&] { reference::unpatchify(wrong.view(), 4, img2.view()); }, "unpatchify"));
  EXPECT_TRUE(test::throws_with([&] { ops::patchify(cpu_backend{}, img2.view(), 0, tokens.view()); },
                                "patch size must be positive"));
}

}  // namespace
}  // namespace qlip
