/// @file test_rope.cpp
/// @brief RoPE: the 2-D EVA-02 table (structure and PyTorch golden values), the llama3-scaled 1-D
///        table (frequency bands and HF golden values), and both in-place rotations — CPU vs
///        reference on odd shapes and strided views, untouched tokens and guards, norm preservation.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "common/compare.hpp"
#include "cpu/guarded.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/core/math.hpp"
#include "qlip/cpu/rope.hpp"
#include "qlip/reference/rope.hpp"

namespace qlip {
namespace {

using test::Guarded;

constexpr float kSentinel = 999.0f;
constexpr double kPi = 3.14159265358979323846;

// PyTorch 2.x float32 values of the EVA-02 VisionRotaryEmbeddingFast(dim=32, pt_seq_len=16,
// ft_seq_len=S) buffers freqs_cos / freqs_sin: {S, row, column, cos, sin}.
struct RopeGolden {
  int grid;
  std::int64_t row, col;
  float cos, sin;
};
constexpr RopeGolden kRope2dGolden[] = {
    {16, 255, 0, -0.759687901f, 0.650287867f},   {16, 255, 1, -0.759687901f, 0.650287867f},
    {16, 255, 2, -0.548975468f, 0.835838437f},   {16, 255, 14, 0.964634836f, 0.263589978f},
    {16, 255, 30, 0.999996424f, 0.00266741589f}, {16, 255, 31, 0.999996424f, 0.00266741589f},
    {16, 255, 32, -0.759687901f, 0.650287867f},  {16, 255, 33, -0.759687901f, 0.650287867f},
    {16, 255, 46, 0.964634836f, 0.263589978f},   {16, 255, 63, 0.999996424f, 0.00266741589f},
    {16, 83, 0, 0.2836622f, -0.958924294f},      {16, 83, 1, 0.2836622f, -0.958924294f},
    {16, 83, 2, -0.946079254f, 0.32393527f},     {16, 83, 14, 0.996049762f, 0.0887968615f},
    {16, 83, 30, 0.999999583f, 0.000889139599f}, {16, 83, 31, 0.999999583f, 0.000889139599f},
    {16, 83, 32, -0.989992499f, 0.141120002f},   {16, 83, 33, -0.989992499f, 0.141120002f},
    {16, 83, 46, 0.998577297f, 0.0533230826f},   {16, 83, 63, 0.999999881f, 0.000533483806f},
    {28, 783, 0, -0.961223423f, 0.275770873f},   {28, 783, 1, -0.961223423f, 0.275770873f},
    {28, 783, 2, -0.732605457f, 0.680653512f},   {28, 783, 14, 0.962597966f, 0.270933956f},
    {28, 783, 30, 0.999996245f, 0.00274362764f}, {28, 783, 31, 0.999996245f, 0.00274362764f},
    {28, 783, 32, -0.961223423f, 0.275770873f},  {28, 783, 33, -0.961223423f, 0.275770873f},
    {28, 783, 46, 0.962597966f, 0.270933956f},   {28, 783, 63, 0.999996245f, 0.00274362764f},
    {28, 143, 0, -0.959816217f, 0.280629337f},   {28, 143, 1, -0.959816217f, 0.280629337f},
    {28, 143, 2, -0.0358855389f, 0.999355912f},  {28, 143, 14, 0.998709559f, 0.0507861301f},
    {28, 143, 30, 0.999999881f, 0.000508079829f}, {28, 143, 31, 0.999999881f, 0.000508079829f},
    {28, 143, 32, -0.142997518f, 0.989723027f},  {28, 143, 33, -0.142997518f, 0.989723027f},
    {28, 143, 46, 0.999535382f, 0.0304800682f},  {28, 143, 63, 0.99999994f, 0.000304847897f},
};

TEST(Rope, Rope2dTableMatchesPyTorchGolden) {
  for (int grid : {16, 28}) {
    RopeTable t = reference::rope2d_table(grid, 64);
    ASSERT_EQ(t.cos.shape(), (Extents<2>{grid * grid, 64}));
    ASSERT_EQ(t.sin.shape(), (Extents<2>{grid * grid, 64}));
    for (const RopeGolden& g : kRope2dGolden) {
      if (g.grid != grid) continue;
      // Same float32 angle; PyTorch's vectorised cos/sin and our double-then-round differ by ≤ 1 ulp.
      EXPECT_NEAR(t.cos(g.row, g.col), g.cos, 1.2e-7) << "grid " << grid << " [" << g.row << ", " << g.col << "]";
      EXPECT_NEAR(t.sin(g.row, g.col), g.sin, 1.2e-7) << "grid " << grid << " [" << g.row << ", " << g.col << "]";
    }
  }
}

TEST(Rope, Rope2dTableIsConcatOfRowAndColumnAngles) {
  for (int grid : {1, 7, 16, 28}) {
    for (int head_dim : {4, 32, 64}) {
      SCOPED_TRACE(::testing::Message() << "grid " << grid << " head_dim " << head_dim);
      RopeTable t = reference::rope2d_table(grid, head_dim);
      const int axis = head_dim / 2;
      // A[n, 2k] = A[n, 2k+1] = t_n·freq_k, t_n = n·16/S, freq_k = 10000^(−2k/axis), in double.
      auto angle = [&](std::int64_t n, int j) {
        const int k = j / 2;
        return (static_cast<double>(n) * 16.0 / grid) * std::pow(10000.0, -2.0 * k / axis);
      };
      for (std::int64_t r = 0; r < grid; ++r)
        for (std::int64_t c = 0; c < grid; ++c)
          for (int j = 0; j < head_dim; ++j) {
            const std::int64_t row = r * grid + c;
            const double a = j < axis ? angle(r, j) : angle(c, j - axis);
            // float32 angles (as PyTorch) vs double ones: |Δangle| ≲ ulp(15 rad) ≈ 1e-6 (MODEL.md §2.4).
            ASSERT_NEAR(t.cos(row, j), std::cos(a), 2e-6) << "row " << row << " col " << j;
            ASSERT_NEAR(t.sin(row, j), std::sin(a), 2e-6) << "row " << row << " col " << j;
            if (j % 2 == 1) {  // interleaved: each angle stored twice, bit-identical
              ASSERT_EQ(t.cos(row, j), t.cos(row, j - 1));
              ASSERT_EQ(t.sin(row, j), t.sin(row, j - 1));
            }
          }
    }
  }
}

// HF transformers ROPE_INIT_FUNCTIONS["llama3"] for Llama-3.2-1B (θ = 500000, head_dim 64, factor 32,
// low 1, high 4, original 8192), float32.
constexpr float kLlama32InvFreq[32] = {
    1.0f,           0.663601279f,    0.440366626f,    0.292227834f,    0.193922758f,    0.128687382f,
    0.0853971019f,  0.0566696189f,   0.0376060307f,   0.0249554086f,   0.0165604409f,   0.0109895291f,
    0.00729266508f, 0.00483942125f,  0.00321144611f,  0.00129054801f,  0.000429556705f, 9.70828623e-05f,
    1.94616387e-05f, 1.29147675e-05f, 8.57025589e-06f, 5.68723226e-06f, 3.77405445e-06f, 2.50446715e-06f,
    1.66196742e-06f, 1.10288363e-06f, 7.31874934e-07f, 4.85673127e-07f, 3.22293289e-07f, 2.1387423e-07f,
    1.41927202e-07f, 9.41830649e-08f};

float llama32_inv_freq(int k) {
  const Llama3Scaling s;  // defaults are Llama-3.2's
  return math::llama3_scale_inv_freq(math::rope_inv_freq(k, 64, 500000.0f), s.factor, s.low_freq_factor,
                                     s.high_freq_factor, static_cast<float>(s.original_max_position));
}

TEST(Rope, Llama3ScalingMatchesHuggingFace) {
  for (int k = 0; k < 32; ++k) {
    // std::pow vs PyTorch's float pow may differ by an ulp; 4e-7 relative covers a couple.
    EXPECT_NEAR(llama32_inv_freq(k), kLlama32InvFreq[k], 4e-7 * kLlama32InvFreq[k]) << "k = " << k;
  }
}

TEST(Rope, Llama3ScalingBands) {
  int high = 0, low = 0, medium = 0;
  for (int k = 0; k < 32; ++k) {
    const float f = math::rope_inv_freq(k, 64, 500000.0f);
    const float scaled = llama32_inv_freq(k);
    const double wavelen = 2.0 * kPi / f;
    if (wavelen < 8192.0 / 4.0) {
      EXPECT_EQ(scaled, f) << "k = " << k << ": short wavelengths keep their frequency";
      ++high;
    } else if (wavelen > 8192.0 / 1.0) {
      EXPECT_EQ(scaled, f / 32.0f) << "k = " << k << ": long wavelengths are divided by the factor";
      ++low;
    } else {
      EXPECT_GE(scaled, f / 32.0f) << "k = " << k;
      EXPECT_LE(scaled, f) << "k = " << k;
      // Linear interpolation in 1/wavelength: s = (8192/λ − 1)/3, f' = (1 − s)·f/32 + s·f.
      const double s = (8192.0 / wavelen - 1.0) / 3.0;
      EXPECT_NEAR(scaled, (1.0 - s) * f / 32.0 + s * f, 1e-6 * f) << "k = " << k;
      ++medium;
    }
  }
  EXPECT_EQ(high + low + medium, 32);
  EXPECT_GT(high, 0);
  EXPECT_GT(low, 0);
  EXPECT_GT(medium, 0);
}

TEST(Rope, Rope1dTableMatchesHuggingFace) {
  // HF LlamaRotaryEmbedding: cos/sin of float32 (inv_freq · position).
  struct G {
    std::int64_t pos;
    int k;
    float cos, sin;
  };
  const G golden[] = {{0, 0, 1.0f, 0.0f},
                      {0, 31, 1.0f, 0.0f},
                      {1, 0, 0.540302336f, 0.841470957f},
                      {1, 9, 0.999688625f, 0.0249528177f},
                      {1, 17, 1.0f, 9.70828623e-05f},
                      {1, 31, 1.0f, 9.41830649e-08f},
                      {7, 0, 0.753902256f, 0.656986594f},
                      {7, 9, 0.984780848f, 0.173800766f},
                      {7, 17, 0.999999762f, 0.000679579971f},
                      {4095, 0, -0.0659759939f, -0.997821212f},
                      {4095, 9, -0.0905127823f, 0.995895267f},
                      {4095, 17, 0.92201066f, 0.387164563f},
                      {4095, 25, 0.999989808f, 0.00451629329f},
                      {4095, 31, 0.99999994f, 0.000385679654f}};
  RopeTable t = reference::rope1d_table(4096, 64, 500000.0f, Llama3Scaling{});
  ASSERT_EQ(t.cos.shape(), (Extents<2>{4096, 32}));
  for (const G& g : golden) {
    // A 1-ulp difference in inv_freq moves a 4095-rad angle by ~2e-7·4095·f; allow 5e-6 there.
    const double tol = g.pos > 100 ? 5e-6 : 2e-7;
    EXPECT_NEAR(t.cos(g.pos, g.k), g.cos, tol) << "pos " << g.pos << " k " << g.k;
    EXPECT_NEAR(t.sin(g.pos, g.k), g.sin, tol) << "pos " << g.pos << " k " << g.k;
  }
  // Unscaled: column k at position 1 is the plain θ^(−2k/d) angle.
  RopeTable plain = reference::rope1d_table(2, 8, 10000.0f, Llama3Scaling{.enabled = false});
  for (int k = 0; k < 4; ++k) EXPECT_NEAR(plain.sin(1, k), std::sin(std::pow(10000.0, -2.0 * k / 8)), 1e-7);
}

/// Random unit-circle tables: interleaved ones repeat each angle twice along the row.
RopeTable random_table(std::int64_t p, std::int64_t width, bool interleaved, std::uint64_t seed) {
  RopeTable t{Tensor<float, 2>({p, width}), Tensor<float, 2>({p, width})};
  Philox rng(seed);
  for (std::int64_t i = 0; i < p; ++i)
    for (std::int64_t j = 0; j < width; ++j) {
      const std::int64_t k = interleaved ? j / 2 : j;
      const double a = 6.0 * rng.normal(static_cast<std::uint64_t>(i * width + k));
      t.cos(i, j) = static_cast<float>(std::cos(a));
      t.sin(i, j) = static_cast<float>(std::sin(a));
    }
  return t;
}

struct RopeShape {
  std::int64_t b, t, h, dh;
};
constexpr RopeShape kRopeShapes[] = {{1, 1, 1, 2}, {2, 7, 3, 8}, {1, 65, 2, 64}, {3, 17, 1, 6}, {1, 257, 4, 64}};

/// Views of x[B, T, H, Dh]: the three generic layouts plus the attention layout, a [B, H, T, Dh+2]
/// buffer seen through a transpose.
struct RopeBuffer {
  RopeBuffer(const RopeShape& s, int layout) {
    if (layout < 3) {
      guarded = std::make_unique<Guarded<float, 4>>(Extents<4>{s.b, s.t, s.h, s.dh}, test::kAllLayouts[layout], kSentinel);
      view = guarded->view();
    } else {
      storage.assign(static_cast<std::size_t>(s.b * s.h * s.t * (s.dh + 2)), kSentinel);
      const std::int64_t ld = s.dh + 2;
      view = HostView<float, 4>(storage.data(), {s.b, s.t, s.h, s.dh}, {s.h * s.t * ld, ld, s.t * ld, 1}, 1);
    }
    Philox rng(77);
    for (std::int64_t b = 0; b < s.b; ++b)
      for (std::int64_t t = 0; t < s.t; ++t)
        for (std::int64_t h = 0; h < s.h; ++h)
          for (std::int64_t d = 0; d < s.dh; ++d)
            view(b, t, h, d) = rng.normal(static_cast<std::uint64_t>(((b * s.t + t) * s.h + h) * s.dh + d));
  }
  ::testing::AssertionResult guards_intact() const {
    if (guarded) return guarded->guards_intact();
    for (std::size_t k = 0; k < storage.size(); ++k) {
      const std::int64_t d = static_cast<std::int64_t>(k) % view.stride(1);
      if ((d == 0 || d > view.size(3)) && storage[k] != kSentinel)
        return ::testing::AssertionFailure() << "padding element " << k << " overwritten";
    }
    return ::testing::AssertionSuccess();
  }
  std::unique_ptr<Guarded<float, 4>> guarded;
  std::vector<float> storage;
  HostView<float, 4> view;
};

TEST(Rope, InterleavedCpuMatchesReferenceAndLeavesOtherTokens) {
  for (const RopeShape& s : kRopeShapes) {
    for (int layout = 0; layout < 4; ++layout) {
      for (std::int64_t first : {std::int64_t{0}, std::int64_t{1}}) {
        if (first >= s.t) continue;
        const std::int64_t p = s.t - first - (s.t > 3 ? 1 : 0);  // leave the last token out when possible
        SCOPED_TRACE(::testing::Message() << "B" << s.b << " T" << s.t << " H" << s.h << " Dh" << s.dh << " layout "
                                           << layout << " first " << first);
        RopeTable table = random_table(p, s.dh, true, 5);
        RopeBuffer cpu(s, layout), ref(s, layout);
        const std::vector<float> before = test::to_vector<float, 4>(cpu.view);
        ops::apply_rope_interleaved(cpu_backend{}, cpu.view, table.cos.view(), table.sin.view(), first);
        reference::apply_rope_interleaved(ref.view, table.cos.view(), table.sin.view(), first);
        EXPECT_TRUE(test::all_close(HostView<const float, 4>(cpu.view), HostView<const float, 4>(ref.view), test::kF32Op));
        EXPECT_TRUE(cpu.guards_intact());
        const std::vector<float> after = test::to_vector<float, 4>(cpu.view);
        for (std::int64_t b = 0; b < s.b; ++b)
          for (std::int64_t t = 0; t < s.t; ++t)
            for (std::int64_t hd = 0; hd < s.h * s.dh; hd += 2) {
              const std::size_t i = static_cast<std::size_t>((b * s.t + t) * s.h * s.dh + hd);
              if (t < first || t >= first + p) {
                ASSERT_EQ(after[i], before[i]) << "token " << t << " is outside the rotated range";
                ASSERT_EQ(after[i + 1], before[i + 1]);
              } else {  // a rotation keeps each (2m, 2m+1) pair's norm
                const double n0 = std::hypot(before[i], before[i + 1]), n1 = std::hypot(after[i], after[i + 1]);
                ASSERT_NEAR(n1, n0, 1e-5 * (1 + n0));
              }
            }
      }
    }
  }
}

TEST(Rope, InterleavedReferenceFormula) {
  // One vector, the MODEL.md §2.4 formula written out: y[2m] = x[2m]c − x[2m+1]s, y[2m+1] = x[2m+1]c + x[2m]s.
  Tensor<float, 4> x({1, 1, 1, 4});
  const float xs[4] = {1.0f, 2.0f, -3.0f, 0.5f};
  for (int d = 0; d < 4; ++d) x(0, 0, 0, d) = xs[d];
  Tensor<float, 2> c({1, 4}), s({1, 4});
  const double a0 = 0.3, a1 = -1.1;
  for (int d = 0; d < 4; ++d) {
    c(0, d) = static_cast<float>(std::cos(d < 2 ? a0 : a1));
    s(0, d) = static_cast<float>(std::sin(d < 2 ? a0 : a1));
  }
  reference::apply_rope_interleaved(x.view(), c.view(), s.view(), 0);
  EXPECT_NEAR(x(0, 0, 0, 0), 1.0 * std::cos(a0) - 2.0 * std::sin(a0), 1e-6);
  EXPECT_NEAR(x(0, 0, 0, 1), 2.0 * std::cos(a0) + 1.0 * std::sin(a0), 1e-6);
  EXPECT_NEAR(x(0, 0, 0, 2), -3.0 * std::cos(a1) - 0.5 * std::sin(a1), 1e-6);
  EXPECT_NEAR(x(0, 0, 0, 3), 0.5 * std::cos(a1) + -3.0 * std::sin(a1), 1e-6);
}

TEST(Rope, HalfCpuMatchesReferenceAndPreservesPairNorms) {
  for (const RopeShape& s : kRopeShapes) {
    for (int layout = 0; layout < 4; ++layout) {
      SCOPED_TRACE(::testing::Message() << "B" << s.b << " T" << s.t << " H" << s.h << " Dh" << s.dh << " layout "
                                         << layout);
      const std::int64_t p_n = 2 * s.t + 3;
      RopeTable table = random_table(p_n, s.dh / 2, false, 6);
      std::vector<std::int64_t> pos(static_cast<std::size_t>(s.t));
      for (std::int64_t t = 0; t < s.t; ++t) pos[static_cast<std::size_t>(t)] = (p_n - 1 - 2 * t) % p_n;  // arbitrary order
      RopeBuffer cpu(s, layout), ref(s, layout);
      const std::vector<float> before = test::to_vector<float, 4>(cpu.view);
      ops::apply_rope_half(cpu_backend{}, cpu.view, table.cos.view(), table.sin.view(), pos.data());
      reference::apply_rope_half(ref.view, table.cos.view(), table.sin.view(), pos.data());
      EXPECT_TRUE(test::all_close(HostView<const float, 4>(cpu.view), HostView<const float, 4>(ref.view), test::kF32Op));
      EXPECT_TRUE(cpu.guards_intact());
      const std::vector<float> after = test::to_vector<float, 4>(ref.view);
      const std::int64_t half = s.dh / 2;
      for (std::int64_t row = 0; row < s.b * s.t * s.h; ++row)
        for (std::int64_t i = 0; i < half; ++i) {
          const std::size_t a = static_cast<std::size_t>(row * s.dh + i), b = a + static_cast<std::size_t>(half);
          ASSERT_NEAR(std::hypot(after[a], after[b]), std::hypot(before[a], before[b]), 1e-5 * (1 + std::hypot(before[a], before[b])));
        }
    }
  }
  // The half-split formula on one vector, with the table row picked by position.
  Tensor<float, 4> x({1, 1, 1, 4});
  const float xs[4] = {1.0f, 2.0f, -3.0f, 0.5f};
  for (int d = 0; d < 4; ++d) x(0, 0, 0, d) = xs[d];
  RopeTable t = reference::rope1d_table(5, 4, 10.0f, Llama3Scaling{.enabled = false});
  const std::int64_t pos = 3;
  reference::apply_rope_half(x.view(), t.cos.view(), t.sin.view(), &pos);
  const double f1 = std::pow(10.0, -0.5);
  EXPECT_NEAR(x(0, 0, 0, 0), 1.0 * std::cos(3.0) - (-3.0) * std::sin(3.0), 1e-6);
  EXPECT_NEAR(x(0, 0, 0, 2), -3.0 * std::cos(3.0) + 1.0 * std::sin(3.0), 1e-6);
  EXPECT_NEAR(x(0, 0, 0, 1), 2.0 * std::cos(3 * f1) - 0.5 * std::sin(3 * f1), 1e-6);
  EXPECT_NEAR(x(0, 0, 0, 3), 0.5 * std::cos(3 * f1) + 2.0 * std::sin(3 * f1), 1e-6);
}

TEST(Rope, BadArgumentsThrowNamingTheProblem) {
  Tensor<float, 4> x({1, 5, 2, 8});
  RopeTable t4 = random_table(5, 8, true, 1);
  EXPECT_TRUE(test::throws_with([&] { ops::apply_rope_interleaved(cpu_backend{}, x.view(), t4.cos.view(), t4.sin.view(), 1); },
                                "do not fit in a sequence of 5"));
  EXPECT_TRUE(test::throws_with([&] { reference::apply_rope_interleaved(x.view(), t4.cos.view(), t4.sin.view(), 1); },
                                "do not fit in a sequence of 5"));
  RopeTable wrong = random_table(4, 6, true, 1);
  EXPECT_TRUE(test::throws_with([&] { ops::apply_rope_interleaved(cpu_backend{}, x.view(), wrong.cos.view(), wrong.sin.view(), 0); },
                                "apply_rope_interleaved cos"));
  RopeTable half = random_table(3, 4, false, 1);
  const std::int64_t pos[5] = {0, 1, 2, 3, 1};
  EXPECT_TRUE(test::throws_with([&] { ops::apply_rope_half(cpu_backend{}, x.view(), half.cos.view(), half.sin.view(), pos); },
                                "position 3 of token 3 is outside the table of 3 positions"));
  EXPECT_TRUE(test::throws_with([&] { reference::rope2d_table(16, 30); }, "multiple of 4"));
  EXPECT_TRUE(test::throws_with([&] { reference::rope1d_table(8, 7, 10000.0f, Llama3Scaling{}); }, "head_dim must be even"));
  EXPECT_TRUE(test::throws_with(
      [&] { reference::rope1d_table(8, 8, 10000.0f, Llama3Scaling{.low_freq_factor = 4.0f, .high_freq_factor = 1.0f}); },
      "low_freq_factor < high_freq_factor"));
}

}  // namespace
}  // namespace qlip
