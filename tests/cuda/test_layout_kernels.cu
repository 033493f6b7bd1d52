/// @file test_layout_kernels.cu
/// @brief RoPE (interleaved and half-split, forward and backward) and patchify / unpatchify (with
///        their backwards) on the CUDA backend vs the plain-loop reference on the same inputs.
///        GPU tests skip without a device; the argument checks run everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "common/compare.hpp"
#include "cuda_test_util.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/reference/patchify.hpp"
#include "qlip/reference/rope.hpp"

#include "common.cuh"
#include "patchify.cuh"
#include "rope.cuh"

namespace qlip {
namespace {

using test::download;
using test::random_tensor;
using test::upload;

/// cos/sin of random angles, [P, W] (any table exercises the rotation).
struct Table {
  Tensor<float, 2> cos, sin;
  Table(std::int64_t p, std::int64_t w, std::uint64_t seed) : cos({p, w}), sin({p, w}) {
    Philox rng(seed);
    for (std::int64_t i = 0; i < cos.numel(); ++i) {
      const float a = 3.0f * rng.normal(i);
      cos.data()[i] = std::cos(a);
      sin.data()[i] = std::sin(a);
    }
  }
};

constexpr std::int64_t kB = 3, kT = 17, kH = 5, kDh = 64;

TEST(CudaRope, InterleavedForwardAndBackwardMatchReference) {
  QLIP_REQUIRE_GPU();
  constexpr std::int64_t kFirst = 1, kP = kT - kFirst;  // the vision towers skip CLS
  const Table table(kP, kDh, 1);
  for (const bool backward : {false, true}) {
    SCOPED_TRACE(backward ? "backward" : "forward");
    Tensor<float, 4> x = random_tensor<4>({kB, kT, kH, kDh}, 2);
    auto dx = upload(x);
    auto dcos = upload(table.cos), dsin = upload(table.sin);
    const DeviceView<const float, 2> c = dcos.view<2>({kP, kDh}), s = dsin.view<2>({kP, kDh});
    if (backward) {
      ops::apply_rope_interleaved_backward(cuda_backend{}, dx.view<4>({kB, kT, kH, kDh}), c, s, kFirst);
      reference::apply_rope_interleaved_backward(x.view(), table.cos.view(), table.sin.view(), kFirst);
    } else {
      ops::apply_rope_interleaved(cuda_backend{}, dx.view<4>({kB, kT, kH, kDh}), c, s, kFirst);
      reference::apply_rope_interleaved(x.view(), table.cos.view(), table.sin.view(), kFirst);
    }
    QLIP_CUDA_CHECK(cudaDeviceSynchronize());
    // Two products and a sum per element, float here, double there: kF32Op.
    EXPECT_TRUE(test::all_close(download<float, 4>(dx, {kB, kT, kH, kDh}).view(), x.view(), test::kF32Op));
  }
}

TEST(CudaRope, HalfSplitForwardAndBackwardMatchReference) {
  QLIP_REQUIRE_GPU();
  constexpr std::int64_t kP = 40;
  const Table table(kP, kDh / 2, 3);
  std::vector<std::int64_t> positions(kT);
  for (std::int64_t t = 0; t < kT; ++t) positions[t] = (t * 7 + 3) % kP;  // a decode step's offsets
  cuda::DeviceBuffer<std::int64_t> dpos(kT);
  cuda::copy_to_device(dpos.data(), positions.data(), kT);
  for (const bool backward : {false, true}) {
    SCOPED_TRACE(backward ? "backward" : "forward");
    Tensor<float, 4> x = random_tensor<4>({kB, kT, kH, kDh}, 4);
    auto dx = upload(x);
    auto dcos = upload(table.cos), dsin = upload(table.sin);
    const DeviceView<const float, 2> c = dcos.view<2>({kP, kDh / 2}), s = dsin.view<2>({kP, kDh / 2});
    if (backward) {
      ops::apply_rope_half_backward(cuda_backend{}, dx.view<4>({kB, kT, kH, kDh}), c, s, positions.data(),
                                    dpos.view<1>({kT}));
      reference::apply_rope_half_backward(x.view(), table.cos.view(), table.sin.view(), positions.data());
    } else {
      ops::apply_rope_half(cuda_backend{}, dx.view<4>({kB, kT, kH, kDh}), c, s, positions.data(), dpos.view<1>({kT}));
      reference::apply_rope_half(x.view(), table.cos.view(), table.sin.view(), positions.data());
    }
    QLIP_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_TRUE(test::all_close(download<float, 4>(dx, {kB, kT, kH, kDh}).view(), x.view(), test::kF32Op));
  }
}

TEST(CudaRope, BadArgumentsThrowBeforeAnyLaunch) {
  DeviceView<float, 4> x(nullptr, {1, 4, 2, 8}, {64, 16, 8, 1});
  DeviceView<const float, 2> table(nullptr, {4, 8}, {8, 1}), half(nullptr, {4, 4}, {4, 1});
  DeviceView<const std::int64_t, 1> dpos(nullptr, {4}, {1});
  EXPECT_THROW(ops::apply_rope_interleaved(cuda_backend{}, x, table, table, 1), Error);  // tokens 1..4 of 4
  const std::vector<std::int64_t> outside{0, 1, 2, 4};
  EXPECT_THROW(ops::apply_rope_half(cuda_backend{}, x, half, half, outside.data(), dpos), Error);
}

TEST(CudaPatchify, AllFourDirectionsEqualTheReference) {
  QLIP_REQUIRE_GPU();
  constexpr int kP = 4;
  constexpr std::int64_t kC = 3, kHgt = 12, kW = 20, kN = (kHgt / kP) * (kW / kP), kJ = kC * kP * kP;
  const Tensor<float, 4> img = random_tensor<4>({2, kC, kHgt, kW}, 5);
  const Tensor<float, 3> tok = random_tensor<3>({2, kN, kJ}, 6);
  auto d_img = upload(img);
  auto d_tok = upload(tok);
  cuda::DeviceBuffer<float> d_tok_out(tok.numel()), d_img_out(img.numel());
  const DeviceView<const float, 4> img_dev = d_img.view<4>(img.shape());
  const DeviceView<const float, 3> tok_dev = d_tok.view<3>(tok.shape());
  Tensor<float, 3> tok_want(tok.shape());
  Tensor<float, 4> img_want(img.shape());
  // Pure data movement: exact.
  ops::patchify(cuda_backend{}, img_dev, kP, d_tok_out.view<3>(tok.shape()));
  reference::patchify(img.view(), kP, tok_want.view());
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(test::all_close(download<float, 3>(d_tok_out, tok.shape()).view(), tok_want.view(), test::kExact));
  ops::unpatchify_backward(cuda_backend{}, img_dev, kP, d_tok_out.view<3>(tok.shape()));
  reference::unpatchify_backward(img.view(), kP, tok_want.view());
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(test::all_close(download<float, 3>(d_tok_out, tok.shape()).view(), tok_want.view(), test::kExact));
  ops::unpatchify(cuda_backend{}, tok_dev, kP, d_img_out.view<4>(img.shape()));
  reference::unpatchify(tok.view(), kP, img_want.view());
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(test::all_close(download<float, 4>(d_img_out, img.shape()).view(), img_want.view(), test::kExact));
  ops::patchify_backward(cuda_backend{}, tok_dev, kP, d_img_out.view<4>(img.shape()));
  reference::patchify_backward(tok.view(), kP, img_want.view());
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(test::all_close(download<float, 4>(d_img_out, img.shape()).view(), img_want.view(), test::kExact));
}

TEST(CudaPatchify, ImageNotDivisibleThrowsBeforeAnyLaunch) {
  DeviceView<const float, 4> img(nullptr, {1, 3, 10, 12}, {360, 120, 12, 1});
  DeviceView<float, 3> tok(nullptr, {1, 6, 48}, {288, 48, 1});
  EXPECT_THROW(ops::patchify(cuda_backend{}, img, 4, tok), Error);
}

}  // namespace
}  // namespace qlip
