/// @file test_attention_grad.cpp
/// @brief Attention training forward and backward: the double reference against finite differences
///        (none and causal masks, GQA, T < S, size-1 dims) and against a direct log-sum-exp; the CPU
///        backward against the float reference (Eigen and strided paths, views into fused buffers,
///        skipped gradients, T = 0); the CPU training forward against inference attention (bit for
///        bit); thread-count determinism, workspace sizing and argument errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/cpu/attention.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/reference/attention.hpp"

namespace qlip {
namespace {

using test::fill_normal;
using test::span_of;

struct AttnCase {
  std::int64_t batch, t, s, hq, hkv, dh;
  AttentionMask mask;
};

std::string describe(const AttnCase& c) {
  return "B" + std::to_string(c.batch) + " T" + std::to_string(c.t) + " S" + std::to_string(c.s) + " Hq" +
         std::to_string(c.hq) + " Hkv" + std::to_string(c.hkv) + " Dh" + std::to_string(c.dh) +
         (c.mask == AttentionMask::causal ? " causal" : " none");
}

constexpr AttnCase kFdCases[] = {
    {1, 1, 1, 1, 1, 1, AttentionMask::none},    // every dimension 1
    {1, 1, 1, 1, 1, 1, AttentionMask::causal},  // one query, one key: P = 1, so dq = dk = 0
    {2, 3, 3, 2, 2, 4, AttentionMask::none},   {1, 4, 4, 2, 2, 3, AttentionMask::causal},
    {2, 3, 5, 4, 2, 3, AttentionMask::causal},  // GQA group 2, T < S (queries are the last 3 of 5)
    {1, 2, 5, 2, 1, 2, AttentionMask::none},    // multi-query, T < S
    {1, 5, 5, 4, 2, 3, AttentionMask::causal},  // GQA group 2, square causal
    {1, 1, 4, 2, 1, 5, AttentionMask::causal},  // one-token decode against 4 keys
};

constexpr float kScale = 0.37f;

TEST(AttentionGrad, ReferenceMatchesFiniteDifferences) {
  std::uint64_t seed = 300;
  for (const AttnCase& c : kFdCases) {
    SCOPED_TRACE(describe(c));
    Tensor<double, 4> q({c.batch, c.t, c.hq, c.dh}), k({c.batch, c.s, c.hkv, c.dh}), v({c.batch, c.s, c.hkv, c.dh});
    Tensor<double, 4> dout({c.batch, c.t, c.hq, c.dh}), out({c.batch, c.t, c.hq, c.dh}), y({c.batch, c.t, c.hq, c.dh});
    Tensor<double, 3> lse({c.batch, c.hq, c.t});
    fill_normal(q, ++seed);
    fill_normal(k, ++seed);
    fill_normal(v, ++seed);
    fill_normal(dout, ++seed);
    reference::attention_train<double>(q.view(), k.view(), v.view(), out.view(), lse.view(), kScale, c.mask);
    Tensor<double, 4> dq({c.batch, c.t, c.hq, c.dh}), dk({c.batch, c.s, c.hkv, c.dh}), dv({c.batch, c.s, c.hkv, c.dh});
    reference::attention_backward<double>(q.view(), k.view(), v.view(), out.view(), lse.view(), dout.view(), dq.view(),
                                          dk.view(), dv.view(), kScale, c.mask);
    auto loss = [&] {
      reference::attention<double>(q.view(), k.view(), v.view(), y.view(), kScale, c.mask);
      return test::weighted_sum(dout, y);
    };
    EXPECT_TRUE(test::check_gradients(
        loss, {{"q", span_of(q), span_of(dq)}, {"k", span_of(k), span_of(dk)}, {"v", span_of(v), span_of(dv)}}));
  }
}

TEST(AttentionGrad, ReferenceLseIsTheLogSumExpOfVisibleLogits) {
  // Direct definition, no max subtraction (the logits are small here), against attention_train.
  for (const AttnCase& c : {kFdCases[4], kFdCases[5]}) {
    SCOPED_TRACE(describe(c));
    Tensor<double, 4> q({c.batch, c.t, c.hq, c.dh}), k({c.batch, c.s, c.hkv, c.dh}), v({c.batch, c.s, c.hkv, c.dh});
    Tensor<double, 4> out({c.batch, c.t, c.hq, c.dh}), out_inf({c.batch, c.t, c.hq, c.dh});
    Tensor<double, 3> lse({c.batch, c.hq, c.t});
    fill_normal(q, 1);
    fill_normal(k, 2);
    fill_normal(v, 3);
    reference::attention_train<double>(q.view(), k.view(), v.view(), out.view(), lse.view(), kScale, c.mask);
    reference::attention<double>(q.view(), k.view(), v.view(), out_inf.view(), kScale, c.mask);
    EXPECT_TRUE(test::all_close(out.view(), out_inf.view(), test::kExact));
    const std::int64_t group = c.hq / c.hkv;
    for (std::int64_t b = 0; b < c.batch; ++b)
      for (std::int64_t h = 0; h < c.hq; ++h)
        for (std::int64_t i = 0; i < c.t; ++i) {
          const std::int64_t limit = c.mask == AttentionMask::causal ? i + c.s - c.t + 1 : c.s;
          double sum = 0.0;
          for (std::int64_t j = 0; j < limit; ++j) {
            double dot = 0.0;
            for (std::int64_t d = 0; d < c.dh; ++d) dot += q(b, i, h, d) * k(b, j, h / group, d);
            sum += std::exp(static_cast<double>(kScale) * dot);
          }
          EXPECT_NEAR(lse(b, h, i), std::log(sum), 1e-12) << "b " << b << " h " << h << " i " << i;
        }
  }
}

/// Float inputs and the float reference's training outputs for one case.
struct FloatAttn {
  Tensor<float, 4> q, k, v, out, dout;
  Tensor<float, 3> lse;
  explicit FloatAttn(const AttnCase& c, std::uint64_t seed, float scale)
      : q({c.batch, c.t, c.hq, c.dh}),
        k({c.batch, c.s, c.hkv, c.dh}),
        v({c.batch, c.s, c.hkv, c.dh}),
        out({c.batch, c.t, c.hq, c.dh}),
        dout({c.batch, c.t, c.hq, c.dh}),
        lse({c.batch, c.hq, c.t}) {
    Tensor<double, 4> qd(q.shape()), kd(k.shape()), vd(v.shape()), dd(dout.shape());
    fill_normal(qd, seed);
    fill_normal(kd, seed + 1);
    fill_normal(vd, seed + 2);
    fill_normal(dd, seed + 3);
    q = test::to_float(qd);
    k = test::to_float(kd);
    v = test::to_float(vd);
    dout = test::to_float(dd);
    reference::attention_train(q.view(), k.view(), v.view(), out.view(), lse.view(), scale, c.mask);
  }
};

/// A float tensor full of NaN: a gradient written with = must overwrite every element.
Tensor<float, 4> nan_tensor(const Extents<4>& shape) {
  Tensor<float, 4> t(shape);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data()[i] = std::numeric_limits<float>::quiet_NaN();
  return t;
}

Arena backward_arena(const Extents<4>& q_shape, const Extents<4>& k_shape) {
  return Arena(ops::attention_backward_workspace_bytes(q_shape[0], q_shape[1], k_shape[1], q_shape[2], k_shape[2],
                                                       num_threads()));
}

TEST(AttentionGrad, CpuMatchesReference) {
  std::uint64_t seed = 400;
  const AttnCase cases[] = {
      {2, 7, 7, 3, 3, 16, AttentionMask::causal},     {2, 7, 7, 3, 3, 16, AttentionMask::none},
      {1, 65, 65, 4, 2, 32, AttentionMask::none},     {1, 65, 65, 4, 2, 32, AttentionMask::causal},
      {2, 5, 17, 4, 2, 16, AttentionMask::causal},    {2, 5, 17, 4, 2, 16, AttentionMask::none},
      {1, 1, 40, 3, 3, 64, AttentionMask::causal},    {1, 1, 1, 1, 1, 1, AttentionMask::causal},
      {1, 300, 300, 2, 1, 16, AttentionMask::causal},  // two query blocks of 150
      {1, 300, 310, 2, 2, 8, AttentionMask::none},
  };
  for (const AttnCase& c : cases) {
    SCOPED_TRACE(describe(c));
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.dh));
    FloatAttn a(c, seed += 10, scale);
    Tensor<float, 4> dq_ref(a.q.shape()), dk_ref(a.k.shape()), dv_ref(a.k.shape());
    reference::attention_backward(a.q.view(), a.k.view(), a.v.view(), a.out.view(), a.lse.view(), a.dout.view(),
                                  dq_ref.view(), dk_ref.view(), dv_ref.view(), scale, c.mask);
    Tensor<float, 4> dq = nan_tensor(a.q.shape()), dk = nan_tensor(a.k.shape()), dv = nan_tensor(a.k.shape());
    Arena ws = backward_arena(a.q.shape(), a.k.shape());
    ops::attention_backward(cpu_backend{}, ws, a.q.view(), a.k.view(), a.v.view(), a.out.view(), a.lse.view(),
                            a.dout.view(), dq.view(), dk.view(), dv.view(), scale, c.mask);
    EXPECT_TRUE(test::all_close(dq.view(), dq_ref.view(), test::kF32Reduction));
    EXPECT_TRUE(test::all_close(dk.view(), dk_ref.view(), test::kF32Reduction));
    EXPECT_TRUE(test::all_close(dv.view(), dv_ref.view(), test::kF32Reduction));
    EXPECT_EQ(ws.used(), 0u) << "attention_backward did not rewind the arena";
  }
}

TEST(AttentionGrad, CpuTakesViewsIntoFusedBuffersAndStridedHeadDims) {
  // (1) q/k/v and dq/dk/dv as select(2, i) views of [B, T, 3, H, Dh] buffers (row stride 3·H·Dh,
  //     the Eigen path); (2) q, dq stored [B, T, Dh, H] and viewed transposed (the loop path).
  const std::int64_t batch = 2, t = 19, heads = 4, dh = 8;
  const float scale = 0.3f;
  for (AttentionMask mask : {AttentionMask::none, AttentionMask::causal}) {
    SCOPED_TRACE(mask == AttentionMask::causal ? "causal" : "none");
    Tensor<double, 5> qkv_d({batch, t, 3, heads, dh});
    Tensor<double, 4> dout_d({batch, t, heads, dh});
    fill_normal(qkv_d, 11);
    fill_normal(dout_d, 12);
    const Tensor<float, 5> qkv = test::to_float(qkv_d);
    const Tensor<float, 4> dout = test::to_float(dout_d);
    HostView<const float, 5> fused = qkv.view();
    const HostView<const float, 4> q = fused.select(2, 0), k = fused.select(2, 1), v = fused.select(2, 2);
    Tensor<float, 4> out({batch, t, heads, dh});
    Tensor<float, 3> lse({batch, heads, t});
    reference::attention_train(q, k, v, out.view(), lse.view(), scale, mask);
    Tensor<float, 4> dq_ref({batch, t, heads, dh}), dk_ref({batch, t, heads, dh}), dv_ref({batch, t, heads, dh});
    reference::attention_backward(q, k, v, out.view(), lse.view(), dout.view(), dq_ref.view(), dk_ref.view(),
                                  dv_ref.view(), scale, mask);

    Tensor<float, 5> dqkv({batch, t, 3, heads, dh});
    for (std::int64_t i = 0; i < dqkv.numel(); ++i) dqkv.data()[i] = std::numeric_limits<float>::quiet_NaN();
    HostView<float, 5> dfused = dqkv.view();
    Arena ws = backward_arena(q.shape(), k.shape());
    ops::attention_backward(cpu_backend{}, ws, q, k, v, out.view(), lse.view(), dout.view(), dfused.select(2, 0),
                            dfused.select(2, 1), dfused.select(2, 2), scale, mask);
    EXPECT_TRUE(test::all_close(dfused.select(2, 0), dq_ref.view(), test::kF32Reduction));
    EXPECT_TRUE(test::all_close(dfused.select(2, 1), dk_ref.view(), test::kF32Reduction));
    EXPECT_TRUE(test::all_close(dfused.select(2, 2), dv_ref.view(), test::kF32Reduction));

    // Strided head dim: copy q into [B, T, Dh, H] storage, view it as [B, T, H, Dh].
    Tensor<float, 4> q_store({batch, t, dh, heads}), dq_store({batch, t, dh, heads});
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t i = 0; i < t; ++i)
        for (std::int64_t h = 0; h < heads; ++h)
          for (std::int64_t d = 0; d < dh; ++d) q_store(b, i, d, h) = q(b, i, h, d);
    const HostView<const float, 4> q_strided = q_store.view().transpose(2, 3);
    Tensor<float, 4> dk({batch, t, heads, dh}), dv({batch, t, heads, dh});
    ops::attention_backward(cpu_backend{}, ws, q_strided, k, v, out.view(), lse.view(), dout.view(),
                            dq_store.view().transpose(2, 3), dk.view(), dv.view(), scale, mask);
    EXPECT_TRUE(test::all_close(dq_store.view().transpose(2, 3), dq_ref.view(), test::kF32Reduction));
    EXPECT_TRUE(test::all_close(dk.view(), dk_ref.view(), test::kF32Reduction));
    EXPECT_TRUE(test::all_close(dv.view(), dv_ref.view(), test::kF32Reduction));
  }
}

TEST(AttentionGrad, EmptyGradientsAreSkipped) {
  const AttnCase c{2, 9, 12, 4, 2, 16, AttentionMask::causal};
  const float scale = 0.25f;
  FloatAttn a(c, 500, scale);
  Tensor<float, 4> dq_ref(a.q.shape()), dk_ref(a.k.shape()), dv_ref(a.k.shape());
  reference::attention_backward(a.q.view(), a.k.view(), a.v.view(), a.out.view(), a.lse.view(), a.dout.view(),
                                dq_ref.view(), dk_ref.view(), dv_ref.view(), scale, c.mask);
  Arena ws = backward_arena(a.q.shape(), a.k.shape());
  const HostView<float, 4> none;
  Tensor<float, 4> dv = nan_tensor(a.k.shape());  // only dv wanted (frozen q and k)
  ops::attention_backward(cpu_backend{}, ws, a.q.view(), a.k.view(), a.v.view(), a.out.view(), a.lse.view(),
                          a.dout.view(), none, none, dv.view(), scale, c.mask);
  EXPECT_TRUE(test::all_close(dv.view(), dv_ref.view(), test::kF32Reduction));
  Tensor<float, 4> dq = nan_tensor(a.q.shape());  // only dq wanted
  ops::attention_backward(cpu_backend{}, ws, a.q.view(), a.k.view(), a.v.view(), a.out.view(), a.lse.view(),
                          a.dout.view(), dq.view(), none, none, scale, c.mask);
  EXPECT_TRUE(test::all_close(dq.view(), dq_ref.view(), test::kF32Reduction));
  Tensor<float, 4> dk = nan_tensor(a.k.shape());  // only dk wanted, in the reference too
  reference::attention_backward(a.q.view(), a.k.view(), a.v.view(), a.out.view(), a.lse.view(), a.dout.view(), none,
                                dk.view(), none, scale, c.mask);
  EXPECT_TRUE(test::all_close(dk.view(), dk_ref.view(), test::kExact));
}

TEST(AttentionGrad, NoQueriesGiveZeroKeyGradients) {
  // T = 0: out, lse and dout are empty; dk and dv are written (=), so they must become zero.
  const AttnCase c{2, 0, 3, 2, 1, 4, AttentionMask::none};
  FloatAttn a(c, 600, 1.0f);
  Tensor<float, 4> dq(a.q.shape()), dk = nan_tensor(a.k.shape()), dv = nan_tensor(a.k.shape());
  Tensor<float, 4> dk_ref = nan_tensor(a.k.shape()), dv_ref = nan_tensor(a.k.shape()), zeros(a.k.shape());
  for (std::int64_t i = 0; i < zeros.numel(); ++i) zeros.data()[i] = 0.0f;
  Arena ws = backward_arena(a.q.shape(), a.k.shape());
  ops::attention_backward(cpu_backend{}, ws, a.q.view(), a.k.view(), a.v.view(), a.out.view(), a.lse.view(),
                          a.dout.view(), dq.view(), dk.view(), dv.view(), 1.0f, c.mask);
  reference::attention_backward(a.q.view(), a.k.view(), a.v.view(), a.out.view(), a.lse.view(), a.dout.view(),
                                dq.view(), dk_ref.view(), dv_ref.view(), 1.0f, c.mask);
  for (const Tensor<float, 4>* g : {&dk, &dv, &dk_ref, &dv_ref})
    EXPECT_TRUE(test::all_close(g->view(), zeros.view(), test::kExact));
}

TEST(AttentionGrad, CpuTrainForwardEqualsInferenceBitForBit) {
  // attention_train runs the inference code with one extra store per row, so out is identical;
  // lse (fp32 rowmax + log of an fp32 sum) is compared with the double reference.
  std::uint64_t seed = 700;
  const AttnCase cases[] = {{2, 65, 65, 4, 2, 32, AttentionMask::causal},
                            {2, 65, 65, 4, 4, 32, AttentionMask::none},
                            {1, 5, 17, 4, 2, 16, AttentionMask::causal},
                            {1, 300, 300, 1, 1, 8, AttentionMask::causal}};
  for (const AttnCase& c : cases) {
    SCOPED_TRACE(describe(c));
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.dh));
    FloatAttn a(c, seed += 10, scale);  // a.lse: the float reference's lse (double sums, rounded once)
    Arena ws(ops::attention_workspace_bytes(c.batch, c.t, c.s, c.hq, num_threads()));
    Tensor<float, 4> out_inf(a.q.shape()), out_train(a.q.shape());
    Tensor<float, 3> lse({c.batch, c.hq, c.t});
    ops::attention(cpu_backend{}, ws, a.q.view(), a.k.view(), a.v.view(), out_inf.view(), scale, c.mask);
    ops::attention_train(cpu_backend{}, ws, a.q.view(), a.k.view(), a.v.view(), out_train.view(), lse.view(), scale,
                         c.mask);
    EXPECT_TRUE(test::all_close(out_train.view(), out_inf.view(), test::kExact));
    EXPECT_TRUE(test::all_close(lse.view(), a.lse.view(), test::kF32Reduction));
    EXPECT_TRUE(test::all_close(out_train.view(), a.out.view(), test::kF32Reduction));
  }
  // The strided loop path too: k stored [B, S, Dh, H], lse written through a transposed view.
  const std::int64_t batch = 1, t = 9, heads = 2, dh = 8;
  Tensor<double, 4> qd({batch, t, heads, dh}), kd({batch, t, dh, heads}), vd({batch, t, heads, dh});
  fill_normal(qd, 1);
  fill_normal(kd, 2);
  fill_normal(vd, 3);
  const Tensor<float, 4> q = test::to_float(qd), k_store = test::to_float(kd), v = test::to_float(vd);
  const HostView<const float, 4> k = k_store.view().transpose(2, 3);
  Arena ws(ops::attention_workspace_bytes(batch, t, t, heads, num_threads()));
  Tensor<float, 4> out_inf({batch, t, heads, dh}), out_train({batch, t, heads, dh});
  Tensor<float, 3> lse_store({batch, t, heads}), lse_ref({batch, heads, t});
  Tensor<float, 4> out_ref({batch, t, heads, dh});
  ops::attention(cpu_backend{}, ws, q.view(), k, v.view(), out_inf.view(), 0.5f, AttentionMask::causal);
  ops::attention_train(cpu_backend{}, ws, q.view(), k, v.view(), out_train.view(), lse_store.view().transpose(1, 2),
                       0.5f, AttentionMask::causal);
  reference::attention_train(q.view(), k, v.view(), out_ref.view(), lse_ref.view(), 0.5f, AttentionMask::causal);
  EXPECT_TRUE(test::all_close(out_train.view(), out_inf.view(), test::kExact));
  EXPECT_TRUE(test::all_close(lse_store.view().transpose(1, 2), lse_ref.view(), test::kF32Reduction));
}

TEST(AttentionGrad, CpuBackwardIsIndependentOfThreadCount) {
  // Each (batch, kv head) task owns its dk/dv rows and walks its blocks in a fixed order, so one
  // and two threads give identical bits (B·Hkv = 4 tasks, so Eigen runs single-threaded in each).
  const AttnCase c{2, 33, 40, 4, 2, 16, AttentionMask::causal};
  FloatAttn a(c, 800, 0.25f);
  const int before = num_threads();
  Tensor<float, 4> dq1(a.q.shape()), dk1(a.k.shape()), dv1(a.k.shape());
  Tensor<float, 4> dq2(a.q.shape()), dk2(a.k.shape()), dv2(a.k.shape());
  Arena ws(ops::attention_backward_workspace_bytes(c.batch, c.t, c.s, c.hq, c.hkv, 2));
  set_num_threads(1);
  ops::attention_backward(cpu_backend{}, ws, a.q.view(), a.k.view(), a.v.view(), a.out.view(), a.lse.view(),
                          a.dout.view(), dq1.view(), dk1.view(), dv1.view(), 0.25f, c.mask);
  set_num_threads(2);
  ops::attention_backward(cpu_backend{}, ws, a.q.view(), a.k.view(), a.v.view(), a.out.view(), a.lse.view(),
                          a.dout.view(), dq2.view(), dk2.view(), dv2.view(), 0.25f, c.mask);
  set_num_threads(before);
  EXPECT_TRUE(test::all_close(dq2.view(), dq1.view(), test::kExact));
  EXPECT_TRUE(test::all_close(dk2.view(), dk1.view(), test::kExact));
  EXPECT_TRUE(test::all_close(dv2.view(), dv1.view(), test::kExact));
}

TEST(AttentionGrad, BackwardWorkspaceSizing) {
  EXPECT_EQ(ops::attention_backward_workspace_bytes(0, 7, 7, 3, 3, 2), 0u);
  // One task, one block of 7 rows against 9 keys: P and dS 2·7·9 + D 7 = 133 floats, padded to 144.
  EXPECT_EQ(ops::attention_backward_workspace_bytes(1, 7, 9, 2, 1, 1), 144u * sizeof(float));
  // Never more slots than (batch, kv head) tasks.
  EXPECT_EQ(ops::attention_backward_workspace_bytes(1, 7, 9, 2, 1, 8), 144u * sizeof(float));
  EXPECT_EQ(ops::attention_backward_workspace_bytes(2, 7, 9, 2, 2, 8), 4u * 144u * sizeof(float));
  // T = 300 is two blocks of 150: 2·150·300 + 150 = 90150 floats, padded to 90160.
  EXPECT_EQ(ops::attention_backward_workspace_bytes(1, 300, 300, 1, 1, 1), 90160u * sizeof(float));
  FloatAttn a({1, 7, 9, 2, 1, 4, AttentionMask::none}, 1, 1.0f);
  Tensor<float, 4> dq(a.q.shape()), dk(a.k.shape()), dv(a.k.shape());
  Arena too_small(64);
  EXPECT_THROW(
      ops::attention_backward(cpu_backend{}, too_small, a.q.view(), a.k.view(), a.v.view(), a.out.view(), a.lse.view(),
                              a.dout.view(), dq.view(), dk.view(), dv.view(), 1.0f, AttentionMask::none),
      Error);
}

TEST(AttentionGrad, BadArgumentsNameTheArgument) {
  FloatAttn a({2, 5, 6, 4, 2, 8, AttentionMask::none}, 1, 1.0f);
  Tensor<float, 4> dq(a.q.shape()), dk(a.k.shape()), dv(a.k.shape());
  Tensor<float, 4> bad_q_like({2, 5, 4, 7}), bad_k_like({2, 6, 2, 7});
  Tensor<float, 3> bad_lse({2, 5, 4});  // [B, T, Hq] instead of [B, Hq, T]
  Arena ws(1 << 20);
  auto backward = [&](HostView<const float, 3> lse, HostView<const float, 4> dout, HostView<float, 4> gq,
                      HostView<float, 4> gk, HostView<float, 4> gv) {
    ops::attention_backward(cpu_backend{}, ws, a.q.view(), a.k.view(), a.v.view(), a.out.view(), lse, dout, gq, gk, gv,
                            1.0f, AttentionMask::none);
  };
  using test::expect_error_naming;
  expect_error_naming([&] { backward(bad_lse.view(), a.dout.view(), dq.view(), dk.view(), dv.view()); },
                      "attention_backward: lse has shape [2, 5, 4]");
  expect_error_naming([&] { backward(a.lse.view(), bad_q_like.view(), dq.view(), dk.view(), dv.view()); },
                      "attention_backward: dout");
  expect_error_naming([&] { backward(a.lse.view(), a.dout.view(), bad_q_like.view(), dk.view(), dv.view()); },
                      "attention_backward: dq");
  expect_error_naming([&] { backward(a.lse.view(), a.dout.view(), dq.view(), bad_k_like.view(), dv.view()); },
                      "attention_backward: dk");
  expect_error_naming([&] { backward(a.lse.view(), a.dout.view(), dq.view(), dk.view(), bad_k_like.view()); },
                      "attention_backward: dv");
  expect_error_naming(
      [&] {
        reference::attention_backward(a.q.view(), a.k.view(), a.v.view(), a.out.view(), a.lse.view(), a.dout.view(),
                                      dq.view(), bad_k_like.view(), dv.view(), 1.0f, AttentionMask::none);
      },
      "attention_backward: dk");
  Tensor<float, 4> out(a.q.shape());
  expect_error_naming(
      [&] {
        ops::attention_train(cpu_backend{}, ws, a.q.view(), a.k.view(), a.v.view(), out.view(), bad_lse.view(), 1.0f,
                             AttentionMask::none);
      },
      "attention_train: lse");
  Tensor<float, 4> k_short({2, 3, 2, 8});
  Tensor<float, 3> lse_ok({2, 4, 5});
  expect_error_naming(
      [&] {
        ops::attention_train(cpu_backend{}, ws, a.q.view(), k_short.view(), k_short.view(), out.view(), lse_ok.view(),
                             1.0f, AttentionMask::causal);
      },
      "attention_train: causal mask needs T ≤ S");
}

}  // namespace
}  // namespace qlip
