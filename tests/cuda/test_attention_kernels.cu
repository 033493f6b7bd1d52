/// @file test_attention_kernels.cu
/// @brief The flash-style attention of the CUDA backend (kernels/attention.cuh) vs the plain-loop
///        reference: forward, training forward (lse) and backward, bidirectional and causal (also
///        T < S, the KV-cache alignment), GQA, head dims 32 and 64, odd lengths around the tiles.
///        GPU tests skip without a device; the argument checks run everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "common/compare.hpp"
#include "cuda_test_util.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/reference/attention.hpp"

#include "attention.cuh"
#include "common.cuh"

namespace qlip {
namespace {

using test::download;
using test::random_tensor;
using test::upload;

struct Case {
  std::int64_t batch, t, s, hq, hkv, dh;
  AttentionMask mask;
  std::string name() const {
    return "B" + std::to_string(batch) + "_T" + std::to_string(t) + "_S" + std::to_string(s) + "_Hq" +
           std::to_string(hq) + "_Hkv" + std::to_string(hkv) + "_Dh" + std::to_string(dh) +
           (mask == AttentionMask::causal ? "_causal" : "_full");
  }
};

class CudaAttention : public ::testing::TestWithParam<Case> {};

TEST_P(CudaAttention, ForwardTrainAndBackwardMatchReference) {
  QLIP_REQUIRE_GPU();
  const Case c = GetParam();
  const Extents<4> qs{c.batch, c.t, c.hq, c.dh}, ks{c.batch, c.s, c.hkv, c.dh};
  const Extents<3> ls{c.batch, c.hq, c.t};
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.dh));
  const Tensor<float, 4> q = random_tensor<4>(qs, 1), k = random_tensor<4>(ks, 2), v = random_tensor<4>(ks, 3),
                         dout = random_tensor<4>(qs, 4);
  auto dq_in = upload(q), dk_in = upload(k), dv_in = upload(v), ddout = upload(dout);
  cuda::DeviceBuffer<float> d_out(q.numel()), d_out_train(q.numel()), d_lse(c.batch * c.hq * c.t),
      d_rowdot(c.batch * c.hq * c.t), d_dq(q.numel()), d_dk(k.numel()), d_dv(k.numel());
  const DeviceView<const float, 4> qd = dq_in.view<4>(qs), kd = dk_in.view<4>(ks), vd = dv_in.view<4>(ks);
  ops::attention(cuda_backend{}, qd, kd, vd, d_out.view<4>(qs), scale, c.mask);
  ops::attention_train(cuda_backend{}, qd, kd, vd, d_out_train.view<4>(qs), d_lse.view<3>(ls), scale, c.mask);
  ops::attention_backward(cuda_backend{}, qd, kd, vd, d_out_train.view<4>(qs), d_lse.view<3>(ls), ddout.view<4>(qs),
                          d_dq.view<4>(qs), d_dk.view<4>(ks), d_dv.view<4>(ks), scale, c.mask, d_rowdot.view<3>(ls));
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());

  Tensor<float, 4> out(qs), dq(qs), dk(ks), dv(ks);
  Tensor<float, 3> lse(ls);
  reference::attention_train(q.view(), k.view(), v.view(), out.view(), lse.view(), scale, c.mask);
  reference::attention_backward(q.view(), k.view(), v.view(), out.view(), lse.view(), dout.view(), dq.view(), dk.view(),
                                dv.view(), scale, c.mask);
  // Sums over up to S keys (and T·group queries for dk/dv) in float: kF32Reduction.
  EXPECT_TRUE(test::all_close(download<float, 4>(d_out, qs).view(), out.view(), test::kF32Reduction)) << "out";
  EXPECT_TRUE(test::all_close(download<float, 4>(d_out_train, qs).view(), out.view(), test::kF32Reduction))
      << "out (train)";
  EXPECT_TRUE(test::all_close(download<float, 3>(d_lse, ls).view(), lse.view(), test::kF32Reduction)) << "lse";
  EXPECT_TRUE(test::all_close(download<float, 4>(d_dq, qs).view(), dq.view(), test::kF32Reduction)) << "dq";
  EXPECT_TRUE(test::all_close(download<float, 4>(d_dk, ks).view(), dk.view(), test::kF32Reduction)) << "dk";
  EXPECT_TRUE(test::all_close(download<float, 4>(d_dv, ks).view(), dv.view(), test::kF32Reduction)) << "dv";
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaAttention,
    ::testing::Values(Case{2, 65, 65, 4, 4, 64, AttentionMask::none},    // vision tower: bidirectional MHA
                      Case{1, 257, 257, 2, 2, 64, AttentionMask::none},  // ViT-B/16 at 256 px: 256 + CLS
                      Case{2, 70, 70, 4, 2, 64, AttentionMask::causal},  // GQA, causal, odd length
                      Case{3, 1, 97, 8, 2, 64, AttentionMask::causal},   // one decoding step on a KV cache
                      Case{1, 33, 80, 6, 3, 32, AttentionMask::causal},  // T < S, head dim 32
                      Case{1, 1, 1, 1, 1, 32, AttentionMask::none}),     // the smallest
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name(); });

TEST(CudaAttentionErrors, BadArgumentsThrowBeforeAnyLaunch) {
  DeviceView<const float, 4> q(nullptr, {1, 4, 3, 64}, {768, 192, 64, 1}), k(nullptr, {1, 4, 2, 64}, {512, 128, 64, 1});
  DeviceView<float, 4> out(nullptr, {1, 4, 3, 64}, {768, 192, 64, 1});
  EXPECT_THROW(ops::attention(cuda_backend{}, q, k, k, out, 1.0f, AttentionMask::none), Error);  // 3 % 2 ≠ 0
  DeviceView<const float, 4> q48(nullptr, {1, 4, 2, 48}, {384, 96, 48, 1}),
      k48(nullptr, {1, 4, 2, 48}, {384, 96, 48, 1});
  DeviceView<float, 4> out48(nullptr, {1, 4, 2, 48}, {384, 96, 48, 1});
  EXPECT_THROW(ops::attention(cuda_backend{}, q48, k48, k48, out48, 1.0f, AttentionMask::none), Error);  // head dim
  DeviceView<const float, 4> k_short(nullptr, {1, 2, 3, 64}, {384, 192, 64, 1});
  EXPECT_THROW(ops::attention(cuda_backend{}, q, k_short, k_short, out, 1.0f, AttentionMask::causal), Error);  // T > S
}

}  // namespace
}  // namespace qlip
