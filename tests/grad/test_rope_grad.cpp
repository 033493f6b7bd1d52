/// @file test_rope_grad.cpp
/// @brief RoPE backward (interleaved and half split): the double reference against finite
///        differences (random tables whose paired columns differ, so the exact transpose is
///        checked, and first_token / position offsets), the "sin negated" identity on a real table,
///        the round trip through an orthogonal rotation, the CPU backward against the float
///        reference on strided views, and argument errors naming the backward.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/cpu/rope.hpp"
#include "qlip/reference/rope.hpp"

namespace qlip {
namespace {

using test::fill_normal;
using test::span_of;

/// A [P, W] cos/sin pair of independent normals (not a rotation: every column pair differs).
RopeTable random_table(std::int64_t positions, std::int64_t width, std::uint64_t seed) {
  RopeTable t{Tensor<float, 2>({positions, width}), Tensor<float, 2>({positions, width})};
  Philox rng(seed);
  for (std::int64_t i = 0; i < t.cos.numel(); ++i) {
    t.cos.data()[i] = rng.normal(static_cast<std::uint64_t>(2 * i));
    t.sin.data()[i] = rng.normal(static_cast<std::uint64_t>(2 * i + 1));
  }
  return t;
}

template <int R>
Tensor<double, R> copy_of(const Tensor<double, R>& t) {
  Tensor<double, R> c(t.shape());
  for (std::int64_t i = 0; i < t.numel(); ++i) c.data()[i] = t.data()[i];
  return c;
}

struct InterleavedCase {
  std::int64_t batch, t, heads, dh, positions, first_token;
};

TEST(RopeGrad, InterleavedReferenceMatchesFiniteDifferences) {
  const InterleavedCase cases[] = {
      {1, 1, 1, 2, 1, 0},  // size-1 dims, one pair
      {2, 5, 3, 6, 4, 1},  // first_token = 1 (the vision encoder's CLS is not rotated)
      {1, 4, 2, 4, 3, 0},  // the last token is past the table: passes through
      {2, 3, 1, 8, 1, 2},  // only the last token rotated
  };
  std::uint64_t seed = 10;
  for (const InterleavedCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << "B" << c.batch << " T" << c.t << " H" << c.heads << " Dh" << c.dh << " P"
                                      << c.positions << " first " << c.first_token);
    const RopeTable table = random_table(c.positions, c.dh, ++seed);
    Tensor<double, 4> x({c.batch, c.t, c.heads, c.dh}), dy({c.batch, c.t, c.heads, c.dh});
    fill_normal(x, ++seed);
    fill_normal(dy, ++seed);
    Tensor<double, 4> dx = copy_of(dy);
    reference::apply_rope_interleaved_backward<double>(dx.view(), table.cos.view(), table.sin.view(), c.first_token);
    Tensor<double, 4> y(x.shape());
    auto loss = [&] {
      for (std::int64_t i = 0; i < x.numel(); ++i) y.data()[i] = x.data()[i];
      reference::apply_rope_interleaved<double>(y.view(), table.cos.view(), table.sin.view(), c.first_token);
      return test::weighted_sum(dy, y);
    };
    EXPECT_TRUE(test::check_gradients(loss, {{"x", span_of(x), span_of(dx)}}));
  }
}

TEST(RopeGrad, HalfReferenceMatchesFiniteDifferences) {
  struct HalfCase {
    std::int64_t batch, heads, dh, positions;
    std::vector<std::int64_t> pos;  // one table row per token (T = pos.size())
  };
  const HalfCase cases[] = {
      {1, 1, 2, 1, {0}},
      {2, 3, 6, 5, {4, 0, 2, 2, 1}},  // repeated and out-of-order positions (a KV cache's offsets)
      {1, 2, 8, 9, {6, 7, 8}},        // decode: positions offset into the table
  };
  std::uint64_t seed = 20;
  for (const HalfCase& c : cases) {
    const std::int64_t t = static_cast<std::int64_t>(c.pos.size());
    SCOPED_TRACE(::testing::Message() << "B" << c.batch << " T" << t << " H" << c.heads << " Dh" << c.dh);
    const RopeTable table = random_table(c.positions, c.dh / 2, ++seed);
    Tensor<double, 4> x({c.batch, t, c.heads, c.dh}), dy({c.batch, t, c.heads, c.dh});
    fill_normal(x, ++seed);
    fill_normal(dy, ++seed);
    Tensor<double, 4> dx = copy_of(dy);
    reference::apply_rope_half_backward<double>(dx.view(), table.cos.view(), table.sin.view(), c.pos.data());
    Tensor<double, 4> y(x.shape());
    auto loss = [&] {
      for (std::int64_t i = 0; i < x.numel(); ++i) y.data()[i] = x.data()[i];
      reference::apply_rope_half<double>(y.view(), table.cos.view(), table.sin.view(), c.pos.data());
      return test::weighted_sum(dy, y);
    };
    EXPECT_TRUE(test::check_gradients(loss, {{"x", span_of(x), span_of(dx)}}));
  }
}

TEST(RopeGrad, BackwardIsTheForwardWithSinNegatedOnARealTable) {
  // rope2d_table stores each angle twice (MODEL.md §2.4), so the transpose is the rotation by −θ.
  // In double, a·c − b·(−s) and a·c + b·s round identically: the reference results are equal bit for bit.
  const RopeTable table = reference::rope2d_table(4, 16);
  Tensor<float, 2> neg_sin(table.sin.shape());
  for (std::int64_t i = 0; i < neg_sin.numel(); ++i) neg_sin.data()[i] = -table.sin.data()[i];
  Tensor<double, 4> gd({2, 17, 3, 16});
  fill_normal(gd, 5);
  Tensor<float, 4> back = test::to_float(gd), fwd = test::to_float(gd);
  reference::apply_rope_interleaved_backward(back.view(), table.cos.view(), table.sin.view(), 1);
  reference::apply_rope_interleaved(fwd.view(), table.cos.view(), neg_sin.view(), 1);
  EXPECT_TRUE(test::all_close(back.view(), fwd.view(), test::kExact));
}

TEST(RopeGrad, BackwardUndoesTheForwardRotation) {
  // A rotation is orthogonal: backward(forward(x)) = x up to fp32 rounding.
  const RopeTable t2 = reference::rope2d_table(5, 32);
  Tensor<double, 4> xd({2, 26, 2, 32});
  fill_normal(xd, 6);
  const Tensor<float, 4> x = test::to_float(xd);
  Tensor<float, 4> y = test::to_float(xd);
  ops::apply_rope_interleaved(cpu_backend{}, y.view(), t2.cos.view(), t2.sin.view(), 1);
  ops::apply_rope_interleaved_backward(cpu_backend{}, y.view(), t2.cos.view(), t2.sin.view(), 1);
  EXPECT_TRUE(test::all_close(y.view(), x.view(), test::kF32Op));

  const RopeTable t1 = reference::rope1d_table(40, 16, 10000.0f, Llama3Scaling{.enabled = false});
  std::vector<std::int64_t> pos(26);
  for (std::int64_t i = 0; i < 26; ++i) pos[i] = 39 - i;
  Tensor<double, 4> zd({2, 26, 2, 16});
  fill_normal(zd, 7);
  const Tensor<float, 4> z = test::to_float(zd);
  Tensor<float, 4> w = test::to_float(zd);
  ops::apply_rope_half(cpu_backend{}, w.view(), t1.cos.view(), t1.sin.view(), pos.data());
  ops::apply_rope_half_backward(cpu_backend{}, w.view(), t1.cos.view(), t1.sin.view(), pos.data());
  EXPECT_TRUE(test::all_close(w.view(), z.view(), test::kF32Op));
}

TEST(RopeGrad, CpuMatchesReferenceOnStridedViews) {
  // The gradient stored [B, H, T, Dh] and viewed as [B, T, H, Dh] (transposed), with and without
  // the OpenMP threshold (B·P·H·Dh ≥ 16384); tables with differing column pairs.
  struct Shape {
    std::int64_t batch, t, heads, dh;
  };
  std::uint64_t seed = 30;
  for (const Shape& s : {Shape{2, 7, 3, 6}, Shape{2, 257, 12, 64}}) {
    SCOPED_TRACE(::testing::Message() << "B" << s.batch << " T" << s.t << " H" << s.heads << " Dh" << s.dh);
    Tensor<double, 4> gd({s.batch, s.heads, s.t, s.dh});
    fill_normal(gd, ++seed);
    {
      const RopeTable table = random_table(s.t - 1, s.dh, ++seed);
      Tensor<float, 4> got = test::to_float(gd), ref = test::to_float(gd);
      ops::apply_rope_interleaved_backward(cpu_backend{}, got.view().transpose(1, 2), table.cos.view(),
                                           table.sin.view(), 1);
      reference::apply_rope_interleaved_backward(ref.view().transpose(1, 2), table.cos.view(), table.sin.view(), 1);
      EXPECT_TRUE(test::all_close(got.view(), ref.view(), test::kF32Op));
    }
    {
      const std::int64_t positions = s.t + 3;
      const RopeTable table = random_table(positions, s.dh / 2, ++seed);
      std::vector<std::int64_t> pos(static_cast<std::size_t>(s.t));
      for (std::int64_t i = 0; i < s.t; ++i) pos[i] = (7 * i + 3) % positions;
      Tensor<float, 4> got = test::to_float(gd), ref = test::to_float(gd);
      ops::apply_rope_half_backward(cpu_backend{}, got.view().transpose(1, 2), table.cos.view(), table.sin.view(),
                                    pos.data());
      reference::apply_rope_half_backward(ref.view().transpose(1, 2), table.cos.view(), table.sin.view(), pos.data());
      EXPECT_TRUE(test::all_close(got.view(), ref.view(), test::kF32Op));
    }
  }
}

TEST(RopeGrad, BadArgumentsNameTheBackward) {
  Tensor<float, 4> dx({1, 5, 2, 8});
  const RopeTable t5 = random_table(5, 8, 1);
  using test::expect_error_naming;
  expect_error_naming(
      [&] { ops::apply_rope_interleaved_backward(cpu_backend{}, dx.view(), t5.cos.view(), t5.sin.view(), 1); },
      "apply_rope_interleaved_backward: tokens [1, 6) do not fit in a sequence of 5");
  expect_error_naming([&] { reference::apply_rope_interleaved_backward(dx.view(), t5.cos.view(), t5.sin.view(), 1); },
                      "apply_rope_interleaved_backward: tokens [1, 6)");
  const RopeTable wrong = random_table(4, 6, 1);
  expect_error_naming(
      [&] { ops::apply_rope_interleaved_backward(cpu_backend{}, dx.view(), wrong.cos.view(), wrong.sin.view(), 0); },
      "apply_rope_interleaved_backward cos has shape [4, 6]");
  const RopeTable half = random_table(3, 4, 1);
  const std::int64_t pos[5] = {0, 1, 2, 3, 1};
  expect_error_naming(
      [&] { ops::apply_rope_half_backward(cpu_backend{}, dx.view(), half.cos.view(), half.sin.view(), pos); },
      "apply_rope_half_backward: position 3 of token 3 is outside the table of 3 positions");
  const RopeTable half_wrong = random_table(3, 8, 1);
  const std::int64_t pos_ok[5] = {0, 1, 2, 0, 1};
  expect_error_naming(
      [&] { reference::apply_rope_half_backward(dx.view(), half_wrong.cos.view(), half_wrong.sin.view(), pos_ok); },
      "apply_rope_half_backward cos has shape [3, 8]");
}

}  // namespace
}  // namespace qlip
